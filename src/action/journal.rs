//! The words of the action journal, as types. The audit stores a
//! [`Decision`] as its stable word (the `decision` column, the API's
//! `decision` field); readers parse it back instead of matching text.

/// What an audit entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    Started,
    Done,
    Verified,
    NotVerified,
    Failed,
    Skipped,
    DryRun,
    Superseded,
    Reconciled,
    Hold,
    Unhold,
    Escalated,
    VetoWindow,
}

impl Decision {
    pub const ALL: [Decision; 13] = [
        Decision::Started,
        Decision::Done,
        Decision::Verified,
        Decision::NotVerified,
        Decision::Failed,
        Decision::Skipped,
        Decision::DryRun,
        Decision::Superseded,
        Decision::Reconciled,
        Decision::Hold,
        Decision::Unhold,
        Decision::Escalated,
        Decision::VetoWindow,
    ];

    /// The stable word stored and served.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Started => "started",
            Decision::Done => "done",
            Decision::Verified => "verified",
            Decision::NotVerified => "not_verified",
            Decision::Failed => "failed",
            Decision::Skipped => "skipped",
            Decision::DryRun => "dry_run",
            Decision::Superseded => "superseded",
            Decision::Reconciled => "reconciled",
            Decision::Hold => "hold",
            Decision::Unhold => "unhold",
            Decision::Escalated => "escalated",
            Decision::VetoWindow => "veto_window",
        }
    }

    /// The decision a stored word names (`None` for a word this version
    /// does not know).
    pub fn parse(word: &str) -> Option<Decision> {
        Decision::ALL.into_iter().find(|d| d.as_str() == word)
    }

    /// Whether the entry says a run gave up without fixing the alert.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Decision::Failed | Decision::NotVerified | Decision::Escalated
        )
    }
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_decision_round_trips_through_its_word() {
        for d in Decision::ALL {
            assert_eq!(Decision::parse(d.as_str()), Some(d));
        }
        assert_eq!(Decision::parse("rolled_back"), None);
    }

    #[test]
    fn the_stored_words_stay_the_same() {
        let words: Vec<&str> = Decision::ALL.iter().map(|d| d.as_str()).collect();
        assert_eq!(
            words,
            [
                "started",
                "done",
                "verified",
                "not_verified",
                "failed",
                "skipped",
                "dry_run",
                "superseded",
                "reconciled",
                "hold",
                "unhold",
                "escalated",
                "veto_window"
            ]
        );
    }
}
