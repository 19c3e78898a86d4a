//! Pure decisions: which revision to roll back to and the hold file (whose
//! evidence an alert is: [`super::judge`]).

use std::collections::BTreeSet;
use std::path::Path;

use crate::action::cloud_run::RevisionState;
use crate::action::deps::ServingPeriod;
use crate::clock::TimestampMs;

/// Service annotations written with every change, so a second rearguard
/// watching the same service sees what the first one did.
pub const ANNOTATION_FROM: &str = "rearguard.dev/rolled-back-from";
pub const ANNOTATION_TO: &str = "rearguard.dev/rolled-back-to";
pub const ANNOTATION_AT: &str = "rearguard.dev/rolled-back-at";

/// The file whose presence holds every target.
pub const HOLD_FILE: &str = "HOLD";

/// The result of looking for a revision to roll back to.
#[derive(Clone, Debug, PartialEq)]
pub enum Candidate {
    Found(String),
    /// Earlier Ready revisions exist, but every one is quarantined.
    OnlyQuarantined(Vec<String>),
    None,
}

/// When `revision` began serving: from the serving history when it knows,
/// else when the revision was created.
pub fn serving_since(
    revision: &str,
    history: &[ServingPeriod],
    revisions: &[RevisionState],
) -> Option<TimestampMs> {
    history
        .iter()
        .rev()
        .find(|p| p.revision == revision)
        .map(|p| p.since_ms)
        .or_else(|| {
            revisions
                .iter()
                .find(|r| r.name == revision)
                .map(|r| r.create_time_ms)
        })
}

/// The revision that served before `reference` and is Ready and not excluded.
/// With a serving history, the newest earlier serving period's revision;
/// otherwise (or when the history has none) the newest Ready revision created
/// before `reference`.
pub fn previous_ready(
    reference: &str,
    history: &[ServingPeriod],
    revisions: &[RevisionState],
    excluded: &BTreeSet<String>,
) -> Candidate {
    let ready = |name: &str| revisions.iter().any(|r| r.name == name && r.ready);
    let mut quarantined = Vec::new();
    // The history: periods before the reference's latest period.
    if let Some(pos) = history.iter().rposition(|p| p.revision == reference) {
        for p in history[..pos].iter().rev() {
            if p.revision == reference || !ready(&p.revision) {
                continue;
            }
            if excluded.contains(&p.revision) {
                quarantined.push(p.revision.clone());
                continue;
            }
            return Candidate::Found(p.revision.clone());
        }
    }
    let Some(ref_time) = revisions
        .iter()
        .find(|r| r.name == reference)
        .map(|r| r.create_time_ms)
    else {
        return if quarantined.is_empty() {
            Candidate::None
        } else {
            Candidate::OnlyQuarantined(quarantined)
        };
    };
    let mut earlier: Vec<&RevisionState> = revisions
        .iter()
        // Same-second creation times: Cloud Run's revision numbers break the tie.
        .filter(|r| {
            r.name != reference
                && r.ready
                && (r.create_time_ms, r.name.as_str()) < (ref_time, reference)
        })
        .collect();
    earlier.sort_by(|a, b| (b.create_time_ms, &b.name).cmp(&(a.create_time_ms, &a.name)));
    for r in earlier {
        if excluded.contains(&r.name) {
            if !quarantined.contains(&r.name) {
                quarantined.push(r.name.clone());
            }
            continue;
        }
        return Candidate::Found(r.name.clone());
    }
    if quarantined.is_empty() {
        Candidate::None
    } else {
        Candidate::OnlyQuarantined(quarantined)
    }
}

/// The global hold from `state_dir/HOLD`: its first line is the reason.
pub async fn hold_file(state_dir: &Path) -> Option<String> {
    let path = state_dir.join(HOLD_FILE);
    match tokio::fs::read_to_string(&path).await {
        Ok(text) => {
            let reason = text.lines().next().unwrap_or("").trim().to_string();
            Some(if reason.is_empty() {
                format!("{} exists", path.display())
            } else {
                reason
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        // Unreadable but present: hold, and say why.
        Err(e) => Some(format!("{} exists but cannot be read: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(name: &str, t: i64, ready: bool) -> RevisionState {
        RevisionState {
            name: name.into(),
            create_time_ms: t,
            ready,
        }
    }

    #[test]
    fn previous_ready_skips_unready_and_quarantined() {
        let revs = vec![
            rev("s-1", 1, true),
            rev("s-2", 2, false),
            rev("s-3", 3, true),
            rev("s-4", 4, true),
        ];
        let none = BTreeSet::new();
        assert_eq!(
            previous_ready("s-4", &[], &revs, &none),
            Candidate::Found("s-3".into())
        );
        assert_eq!(
            previous_ready("s-3", &[], &revs, &none),
            Candidate::Found("s-1".into())
        );
        let q: BTreeSet<String> = ["s-3".to_string()].into();
        assert_eq!(
            previous_ready("s-4", &[], &revs, &q),
            Candidate::Found("s-1".into())
        );
        let q: BTreeSet<String> = ["s-3".to_string(), "s-1".to_string()].into();
        assert_eq!(
            previous_ready("s-4", &[], &revs, &q),
            Candidate::OnlyQuarantined(vec!["s-3".into(), "s-1".into()])
        );
        assert_eq!(previous_ready("s-1", &[], &revs, &none), Candidate::None);
    }

    #[test]
    fn history_wins_over_creation_order() {
        // s-3 was created but never served (deployed with no traffic).
        let revs = vec![
            rev("s-1", 1, true),
            rev("s-3", 3, true),
            rev("s-4", 4, true),
        ];
        let history = vec![
            ServingPeriod {
                revision: "s-1".into(),
                since_ms: 1,
            },
            ServingPeriod {
                revision: "s-4".into(),
                since_ms: 10,
            },
        ];
        assert_eq!(
            previous_ready("s-4", &history, &revs, &BTreeSet::new()),
            Candidate::Found("s-1".into())
        );
        assert_eq!(serving_since("s-4", &history, &revs), Some(10));
        assert_eq!(serving_since("s-3", &history, &revs), Some(3));
    }

    #[tokio::test]
    async fn hold_file_reason() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(hold_file(dir.path()).await, None);
        std::fs::write(dir.path().join(HOLD_FILE), "deploy freeze\nmore\n").unwrap();
        assert_eq!(
            hold_file(dir.path()).await.as_deref(),
            Some("deploy freeze")
        );
        std::fs::write(dir.path().join(HOLD_FILE), "").unwrap();
        assert!(hold_file(dir.path()).await.unwrap().contains("HOLD exists"));
    }
}
