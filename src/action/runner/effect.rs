//! One step of a ladder, whatever it changes. Each kind of effect
//! (`cloud_run_traffic` in `traffic.rs`, `cloud_run_env` in `env.rs`,
//! `command` in `command_step.rs`) implements [`Effect`]: it plans its change
//! and applies it. Everything around that is the same for all of them and
//! lives here, once: a dry run stops after the plan; otherwise the intent is
//! written before anything changes, the start is audited and announced, the
//! effect applies the intent, and its result is audited.

use super::*;

/// What a step will change, decided before anything changes.
pub(super) struct Planned {
    pub kind: IntentKind,
    pub detail: IntentDetail,
    /// The revision serving before the change, when there is one.
    pub from: Option<String>,
    /// The revision the change sends traffic to, when known in advance.
    pub to: Option<String>,
    /// The etag the plan was made against (a Cloud Run change).
    pub etag: Option<String>,
    /// What a dry run says the step would do.
    pub dry_run: String,
    /// The start as the audit says it ("rolling back").
    pub audit_start: String,
    /// The started notice: its reason word, summary and description.
    pub notice_reason: &'static str,
    pub summary: String,
    pub description: String,
    /// Added to the alert's evidence in the start's audit (the service before).
    pub evidence: Vec<(&'static str, serde_json::Value)>,
}

/// The result of applying a written intent, with what its audit records.
pub(super) struct Applied {
    /// `Done`, `Failed` or `Superseded`.
    pub step: Step,
    /// The audit's reason when done ("traffic moved").
    pub done: &'static str,
    /// The audit's evidence of the result (the service after, the command's output).
    pub evidence: serde_json::Value,
}

/// A kind of change a step makes.
pub(super) trait Effect {
    /// Reads what the step needs and plans it. `Err` is the step's result
    /// when nothing is to change: already at the target, a skip (with why),
    /// or a read that failed.
    async fn plan(&self, runner: &ActionRunner, run: &Run) -> Result<Planned, Step>;

    /// Makes the change of the written `intent` and waits until it is in
    /// effect, keeping the intent's state in the store up to date.
    async fn apply(&self, runner: &ActionRunner, run: &mut Run, intent: &Intent) -> Applied;
}

impl ActionRunner {
    /// Takes step `step` of the ladder with `effect`: plan, write the intent
    /// (acting without one could act twice after a restart), audit and
    /// announce the start, apply, audit the result.
    pub(super) async fn take_step<E: Effect>(
        &self,
        run: &mut Run,
        step: usize,
        effect: &E,
    ) -> Step {
        let planned = match effect.plan(self, run).await {
            Ok(p) => p,
            Err(step) => return step,
        };
        if run.dry_run {
            return Step::DryRun(planned.dry_run);
        }
        let mut intent = self.new_intent(run, step, planned.kind, planned.detail);
        intent.from_revision = planned.from;
        intent.to_revision = planned.to;
        intent.etag = planned.etag;
        intent.id = match self.write_intent(&intent).await {
            Ok(id) => id,
            Err(failed) => return failed,
        };
        let from = intent.from_revision.as_deref();
        let to = intent.to_revision.as_deref();
        let mut evidence = self.alert_evidence(run).await;
        for (key, value) in planned.evidence {
            evidence[key] = value;
        }
        self.audit(
            run,
            Decision::Started,
            &planned.audit_start,
            Some(intent.id),
            from,
            to,
            evidence,
        )
        .await;
        self.event(
            run,
            Phase::Started,
            planned.notice_reason,
            from,
            to,
            planned.summary,
            planned.description,
        )
        .await;
        let applied = effect.apply(self, run, &intent).await;
        let (decision, reason, to) = match &applied.step {
            Step::Done { to, .. } => (Decision::Done, applied.done, to.as_deref()),
            Step::Superseded(detail) => (Decision::Superseded, detail.as_str(), to),
            Step::Failed(detail) => (Decision::Failed, detail.as_str(), to),
            _ => return applied.step,
        };
        self.audit(
            run,
            decision,
            reason,
            Some(intent.id),
            from,
            to,
            applied.evidence,
        )
        .await;
        applied.step
    }

    /// The service as it is now, for the audit (null when it cannot be read).
    pub(super) async fn service_now(&self, service: &str) -> serde_json::Value {
        self.deps()
            .cloud_run
            .get_service(service)
            .await
            .ok()
            .map(|s| traffic_json(&s))
            .into()
    }
}
