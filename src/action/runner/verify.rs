//! Verification after a change: the alert stopped and the probes pass.

use super::*;

impl ActionRunner {
    // ---------------------------------------------------------------- verification

    /// Checks with backoff until the trigger alert stopped firing and every
    /// `verify.probes` passes; returns the number of checks made.
    /// Verifies the change of intent `id`, then marks the intent done (until
    /// then a restart resumes the run at this verification).
    pub(super) async fn verify_intent(&self, run: &Run, id: i64) -> Result<usize, String> {
        let result = self.verify(run).await;
        let note = result.as_ref().err().map(|e| format!("not verified: {e}"));
        self.set_intent(id, IntentState::Done, None, note).await;
        result
    }

    pub(super) async fn verify(&self, run: &Run) -> Result<usize, String> {
        let mut last = String::from("not checked");
        for (i, wait) in run.action.verify.backoff.iter().enumerate() {
            tokio::time::sleep(wait.0).await;
            match self.check_healthy(run).await {
                Ok(()) => return Ok(i + 1),
                Err(why) => last = why,
            }
        }
        let total: Duration = run.action.verify.backoff.iter().map(|d| d.0).sum();
        Err(format!("after {}: {last}", format_duration(total)))
    }

    pub(super) async fn check_healthy(&self, run: &Run) -> Result<(), String> {
        let mut problems = Vec::new();
        if let Some(a) = &run.trigger.alert {
            // Fresh evidence only: an alert held by the restore grace is unknown,
            // and then the probes decide (or, without probes, verification waits).
            match self.deps().alert_state.is_firing_fresh(a.fingerprint()) {
                Some(true) => problems.push(format!("{} still firing", a.name())),
                None if run.action.verify.probes.is_empty()
                    && self.deps().alert_state.is_firing(a.fingerprint()) == Some(true) =>
                {
                    problems.push(format!("{} not evaluated since the restart", a.name()))
                }
                _ => {}
            }
        }
        for p in &run.action.verify.probes {
            match self.deps().probes.check(p).await {
                Some(true) => {}
                Some(false) => problems.push(format!("probe {p} failing")),
                None => problems.push(format!("probe {p} unknown")),
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join(", "))
        }
    }
}
