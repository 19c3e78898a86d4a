//! The runner's journal: audit entries, events and intents in the store.

use super::*;

impl ActionRunner {
    // ---------------------------------------------------------------- audit and events

    pub(super) async fn audit_plain(
        &self,
        target: &str,
        decision: Decision,
        reason: &str,
        evidence: serde_json::Value,
    ) {
        let entry = AuditEntry {
            id: 0,
            at_ms: self.now(),
            run_id: None,
            target: target.to_string(),
            service: None,
            intent_id: None,
            alertname: None,
            fingerprint: None,
            decision,
            reason: reason.to_string(),
            from_revision: None,
            to_revision: None,
            dry_run: false,
            evidence,
        };
        if let Err(e) = self.deps().store.append_audit(entry).await {
            tracing::error!(error = %e, "cannot write the action audit");
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn audit(
        &self,
        run: &Run,
        decision: Decision,
        reason: &str,
        intent_id: Option<i64>,
        from: Option<&str>,
        to: Option<&str>,
        evidence: serde_json::Value,
    ) {
        let entry = AuditEntry {
            id: 0,
            at_ms: self.now(),
            run_id: Some(run.run_id.clone()),
            target: run.target.clone(),
            service: run.service.clone(),
            intent_id,
            alertname: Some(run.trigger.alertname()),
            fingerprint: Some(run.trigger.fingerprint()),
            decision,
            reason: reason.to_string(),
            from_revision: from.map(str::to_string),
            to_revision: to.map(str::to_string),
            dry_run: run.dry_run,
            evidence,
        };
        if let Err(e) = self.deps().store.append_audit(entry).await {
            tracing::error!(error = %e, target_name = %run.target, "cannot write the action audit");
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn event(
        &self,
        run: &Run,
        phase: Phase,
        reason: &str,
        from: Option<&str>,
        to: Option<&str>,
        summary: String,
        description: String,
    ) {
        self.inner
            .emitter
            .emit(
                &Event {
                    phase,
                    target: run.target.clone(),
                    service: run.service_label(),
                    reason: reason.to_string(),
                    trigger: run.trigger.alert.clone(),
                    from_revision: from.map(str::to_string),
                    to_revision: to.map(str::to_string),
                    summary,
                    description,
                },
                self.now(),
            )
            .await;
    }

    /// Like `event`, but nothing when the same notice was recorded at or after `since_ms`.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn event_unless_recorded_since(
        &self,
        since_ms: TimestampMs,
        run: &Run,
        phase: Phase,
        reason: &str,
        from: Option<&str>,
        to: Option<&str>,
        summary: String,
        description: String,
    ) {
        let e = Event {
            phase,
            target: run.target.clone(),
            service: run.service_label(),
            reason: reason.to_string(),
            trigger: run.trigger.alert.clone(),
            from_revision: from.map(str::to_string),
            to_revision: to.map(str::to_string),
            summary,
            description,
        };
        if !self.inner.emitter.recorded_since(&e, since_ms).await {
            self.inner.emitter.emit(&e, self.now()).await;
        }
    }

    /// Writes an intent before acting; a store that cannot take it stops the
    /// step (acting without a record could act twice after a restart).
    pub(super) async fn write_intent(&self, intent: &Intent) -> Result<i64, Step> {
        self.deps()
            .store
            .insert_intent(intent.clone())
            .await
            .map_err(|e| {
                Step::Failed(format!(
                    "cannot write the intent to the store, not acting: {e}"
                ))
            })
    }

    pub(super) async fn alert_evidence(&self, run: &Run) -> serde_json::Value {
        let mut ev = json!({ "trigger": run.trigger.alert.as_ref().map(alert_json), "actor": run.trigger.actor });
        if let Some(a) = &run.trigger.alert {
            let extra = self
                .deps()
                .evidence
                .collect(a, run.service.as_deref())
                .await;
            if !extra.is_null() {
                ev["evidence"] = extra;
            }
            if let Some(series) = self
                .deps()
                .alert_state
                .history(a.fingerprint(), self.now())
                .await
            {
                ev["series"] = series;
            }
        }
        ev
    }

    pub(super) async fn skip(
        &self,
        run: &Run,
        reason: &'static str,
        detail: String,
        notify: bool,
    ) -> Outcome {
        self.inner
            .metrics
            .skipped
            .with_label_values(&[&run.target, reason])
            .inc();
        let mut ev = self.alert_evidence(run).await;
        ev["detail"] = json!(detail);
        self.audit(run, Decision::Skipped, reason, None, None, None, ev)
            .await;
        tracing::info!(target_name = %run.target, reason, %detail, "action skipped");
        if notify {
            self.event(
                run,
                Phase::Skipped,
                reason,
                None,
                None,
                format!("not acting on {}: {}", run.service_label(), detail),
                format!("{} fired; {detail}", run.because()),
            )
            .await;
        }
        Outcome::Skipped {
            reason: reason.to_string(),
            detail,
        }
    }

    // ---------------------------------------------------------------- steps

    pub(super) fn new_intent(
        &self,
        run: &Run,
        step: usize,
        kind: IntentKind,
        detail: IntentDetail,
    ) -> Intent {
        let now = self.now();
        Intent {
            id: 0,
            run_id: run.run_id.clone(),
            target: run.target.clone(),
            kind,
            service: run.service.clone(),
            step: step as u32,
            fingerprint: run.trigger.fingerprint(),
            alertname: run.trigger.alertname(),
            from_revision: None,
            to_revision: None,
            etag: None,
            detail,
            state: IntentState::Pending,
            operation: None,
            note: None,
            manual: run.trigger.manual,
            created_at_ms: now,
            updated_at_ms: now,
        }
    }

    /// Marks the intent failed with `detail`; the step failed for the same reason.
    pub(super) async fn fail_intent(&self, id: i64, detail: String) -> Step {
        self.set_intent(id, IntentState::Failed, None, Some(detail.clone()))
            .await;
        Step::Failed(detail)
    }

    pub(super) async fn set_intent(
        &self,
        id: i64,
        state: IntentState,
        operation: Option<String>,
        note: Option<String>,
    ) {
        if let Err(e) = self
            .deps()
            .store
            .update_intent(id, state, operation, note, self.now())
            .await
        {
            tracing::error!(error = %e, intent = id, "cannot update the intent");
        }
    }
}
