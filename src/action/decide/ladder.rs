//! How a ladder run ends once no step verified: a pure conclusion over what
//! its steps reported.

/// Why a step of the ladder did not fix the alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepFailure {
    /// The step could not act (the effect failed).
    Failed(String),
    /// The step acted, but its verification did not pass.
    NotVerified(String),
}

impl StepFailure {
    /// The text recorded for the failure.
    pub fn detail(&self) -> &str {
        match self {
            StepFailure::Failed(d) | StepFailure::NotVerified(d) => d,
        }
    }

    /// Whether the step changed something before it failed.
    pub fn acted(&self) -> bool {
        matches!(self, StepFailure::NotVerified(_))
    }
}

/// The end of a ladder run in which no step verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conclusion<S> {
    /// A dry run that planned something: report the plan.
    DryRun,
    /// The last step that acted or tried did not help: hold the target.
    Failed(StepFailure),
    /// Every step skipped: report the first skip.
    Skipped(S),
    /// Nothing to do: every step was already at its target.
    NothingToDo,
}

/// The conclusion of a ladder run from the dry run's plan, the last failure
/// and the first skip. A dry run's plan wins, then a failure, then a skip.
pub fn conclude<S>(
    dry_run_planned: bool,
    last_failure: Option<StepFailure>,
    first_skip: Option<S>,
) -> Conclusion<S> {
    if dry_run_planned {
        return Conclusion::DryRun;
    }
    if let Some(failure) = last_failure {
        return Conclusion::Failed(failure);
    }
    match first_skip {
        Some(s) => Conclusion::Skipped(s),
        None => Conclusion::NothingToDo,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dry_run_with_a_plan_reports_the_plan() {
        let c = conclude(true, Some(StepFailure::Failed("x".into())), Some("hold"));
        assert_eq!(c, Conclusion::DryRun);
    }

    #[test]
    fn a_failure_wins_over_a_skip() {
        let c = conclude(
            false,
            Some(StepFailure::Failed("denied".into())),
            Some("hold"),
        );
        assert_eq!(c, Conclusion::Failed(StepFailure::Failed("denied".into())));
    }

    #[test]
    fn a_step_that_acted_and_did_not_verify_is_not_verified() {
        let f = StepFailure::NotVerified("traffic: not verified: still firing".into());
        assert!(f.acted());
        assert_eq!(
            conclude::<()>(false, Some(f.clone()), None),
            Conclusion::Failed(f)
        );
    }

    #[test]
    fn a_failed_step_did_not_act_whatever_its_text() {
        // The outcome comes from the type, not the message.
        let f = StepFailure::Failed("command printed: not verified".into());
        assert!(!f.acted());
        assert_eq!(f.detail(), "command printed: not verified");
    }

    #[test]
    fn only_skips_report_the_first_skip() {
        assert_eq!(
            conclude(false, None, Some("cooldown")),
            Conclusion::Skipped("cooldown")
        );
    }

    #[test]
    fn no_failure_and_no_skip_is_nothing_to_do() {
        assert_eq!(conclude::<()>(false, None, None), Conclusion::NothingToDo);
    }
}
