//! Crash reconciliation: finishing what an interrupted run left.

use super::*;

impl ActionRunner {
    // ---------------------------------------------------------------- reconciliation

    /// At start: finishes what a crash interrupted. For each unfinished
    /// intent, reads the service: already at the target → done; not, and its
    /// alert still fires → tried once more with a fresh etag; otherwise
    /// abandoned. A command is never re-run (it may or may not have run): while
    /// its alert fires it counts as a failed step. Then the run goes on as the
    /// interrupted one would have, in the background: verification, and the
    /// ladder's next steps if that step did not fix it.
    /// Call after the rule manager has restored its alert states.
    pub async fn reconcile(&self) -> Result<usize, StoreError> {
        let intents = self.deps().store.unfinished_intents().await?;
        let n = intents.len();
        for intent in intents {
            let busy = self.try_busy(&intent.target);
            self.reconcile_one(intent, busy).await;
        }
        self.refresh_held_gauge().await;
        Ok(n)
    }

    pub(super) fn run_for_intent(&self, intent: &Intent) -> Option<Run> {
        let action = self.view().actions.get(&intent.target).cloned()?;
        let trigger = match intent.detail.trigger() {
            Some(a) => Trigger::alert(a),
            None => Trigger::manual(intent.to_revision.clone(), false, "reconcile"),
        };
        Some(Run {
            target: intent.target.clone(),
            service: intent.service.clone(),
            dry_run: false,
            action,
            trigger,
            run_id: intent.run_id.clone(),
            started_ms: intent.created_at_ms,
            origin: intent.detail.origin.clone(),
            left_behind: BTreeSet::new(),
            implicated: BTreeSet::new(),
            judged: None,
            window_start_ms: None,
            counted: None,
        })
    }

    /// Whether the alert that started `run` still fires (a manual run: no).
    pub(super) fn trigger_still_fires(&self, run: &Run) -> bool {
        run.trigger
            .alert
            .as_ref()
            .and_then(|a| self.deps().alert_state.is_firing(a.fingerprint()))
            == Some(true)
    }

    pub(super) async fn abandon(&self, run: &Run, intent: &Intent, why: &str) {
        let why = format!("found unfinished at start; {why}");
        self.set_intent(intent.id, IntentState::Abandoned, None, Some(why.clone()))
            .await;
        self.audit(
            run,
            Decision::Reconciled,
            &why,
            Some(intent.id),
            intent.from_revision.as_deref(),
            intent.to_revision.as_deref(),
            json!({}),
        )
        .await;
    }

    pub(super) async fn reconcile_one(&self, intent: Intent, busy: Option<BusyGuard>) {
        let Some(mut run) = self.run_for_intent(&intent) else {
            self.set_intent(
                intent.id,
                IntentState::Abandoned,
                None,
                Some("found unfinished at start; its action is no longer configured".into()),
            )
            .await;
            return;
        };
        let step = match intent.kind {
            IntentKind::CloudRunTraffic | IntentKind::CloudRunEnv => {
                match self.reconcile_cloud_run(&mut run, &intent).await {
                    Some(step) => step,
                    None => return,
                }
            }
            // The command ran to success; only its verification was cut short.
            IntentKind::Command if intent.state == IntentState::Verifying => Step::Done {
                intent_id: intent.id,
                from: None,
                to: None,
            },
            IntentKind::Command => {
                if !self.trigger_still_fires(&run) {
                    self.abandon(
                        &run,
                        &intent,
                        "a command is never re-run automatically (it may or may not have run), and its alert no longer fires",
                    )
                    .await;
                    return;
                }
                let why = "a restart interrupted the command; it is never re-run automatically \
                           (it may or may not have run), and its alert still fires";
                self.abandon(&run, &intent, why).await;
                Step::Failed(why.to_string())
            }
        };
        if let Step::Done { from, .. } = &step {
            run.left_behind.extend(from.clone());
        }
        // A kill between the intent and its `started` notice would lose the
        // notice: say it now unless it was recorded for this intent. (A
        // command is never resumed: its step fails, and that is said.)
        let resumed = match intent.kind {
            IntentKind::CloudRunTraffic => Some((
                "rolling_back",
                intent.from_revision.as_deref(),
                intent.to_revision.as_deref(),
            )),
            IntentKind::CloudRunEnv => Some(("setting_env", intent.from_revision.as_deref(), None)),
            IntentKind::Command => None,
        };
        if let Some((reason, from, to)) = resumed {
            self.event_unless_recorded_since(
                intent.created_at_ms,
                &run,
                Phase::Started,
                reason,
                from,
                to,
                format!(
                    "resuming {} after a restart because {}",
                    intent.kind,
                    run.because()
                ),
                "The action was found unfinished at start; verifying.".into(),
            )
            .await;
        }
        // Go on as the interrupted run would have: verify, then the next steps.
        let this = self.clone();
        let start = intent.step as usize;
        self.inner.running.fetch_add(1, Ordering::SeqCst);
        let guard = RunningGuard(self.inner.clone());
        let handle = tokio::spawn(async move {
            let _guard = guard;
            // Held since `reconcile` so no new run on the target slips in between.
            let _busy = busy;
            let outcome = this.run_ladder_from(&mut run, start, Some(step)).await;
            this.record_outcome(&run, &outcome);
            this.refresh_held_gauge().await;
        });
        self.inner
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(handle.abort_handle());
    }

    /// A Cloud Run traffic or env intent: the step's result, or None when the
    /// intent was abandoned or must wait for the next start.
    pub(super) async fn reconcile_cloud_run(&self, run: &mut Run, intent: &Intent) -> Option<Step> {
        let timeout = run.action.operation_timeout.0;
        let deadline = self.now() + timeout.as_millis() as i64;
        let env = intent.detail.env.clone();
        let is_traffic = intent.kind == IntentKind::CloudRunTraffic;
        let to = intent.to_revision.clone().unwrap_or_default();
        let Some(service) = intent.service.clone() else {
            self.abandon(run, intent, "it names no service").await;
            return None;
        };
        let svc = match self.deps().cloud_run.get_service(&service).await {
            Ok(s) => s,
            Err(e) => {
                // Leave it unfinished: the next start tries again.
                tracing::error!(error = %e, intent = intent.id, "cannot read the service to reconcile an intent");
                return None;
            }
        };
        let already_done = if is_traffic {
            svc.requests_fully(&to) || svc.serves_fully(&to)
        } else {
            svc.has_env(&env)
        };
        let step = if already_done {
            let step = if is_traffic {
                match self
                    .wait_service(&service, deadline, |s| s.serves_fully(&to))
                    .await
                {
                    Ok(_) => {
                        self.set_intent(
                            intent.id,
                            IntentState::Verifying,
                            None,
                            Some("completed after a restart".into()),
                        )
                        .await;
                        Step::Done {
                            intent_id: intent.id,
                            from: intent.from_revision.clone(),
                            to: Some(to.clone()),
                        }
                    }
                    Err(e) => self.fail_intent(intent.id, e).await,
                }
            } else {
                self.finish_env(intent, &service, &env, None, deadline)
                    .await
            };
            self.audit(
                run,
                Decision::Reconciled,
                "the change was already made; completed after a restart",
                Some(intent.id),
                intent.from_revision.as_deref(),
                intent.to_revision.as_deref(),
                json!({"service": traffic_json(&svc)}),
            )
            .await;
            step
        } else if intent.state == IntentState::Verifying {
            // The change had taken effect; now it is gone: someone changed
            // the service since. Theirs is the newer decision.
            let why = "the change had been made, and the service has changed since";
            self.set_intent(intent.id, IntentState::Superseded, None, Some(why.into()))
                .await;
            self.audit(
                run,
                Decision::Reconciled,
                why,
                Some(intent.id),
                intent.from_revision.as_deref(),
                intent.to_revision.as_deref(),
                json!({"service": traffic_json(&svc)}),
            )
            .await;
            return None;
        } else {
            if !self.trigger_still_fires(run) {
                self.abandon(
                    run,
                    intent,
                    "the change was not made and its alert is not known to fire",
                )
                .await;
                return None;
            }
            if let Err(e) = self
                .deps()
                .store
                .rearm_intent(intent.id, Some(svc.etag.clone()), self.now())
                .await
            {
                tracing::error!(error = %e, "cannot re-arm the intent");
                return None;
            }
            self.audit(
                run,
                Decision::Reconciled,
                "the change was not made and the alert still fires: trying once more with a fresh etag",
                Some(intent.id),
                intent.from_revision.as_deref(),
                intent.to_revision.as_deref(),
                json!({}),
            )
            .await;
            let mut fresh = intent.clone();
            fresh.etag = Some(svc.etag.clone());
            fresh.detail.planned = Some(PlannedBase::of(&svc));
            if is_traffic {
                self.execute_traffic(&fresh, timeout).await
            } else {
                self.execute_env(&fresh, &env, timeout).await
            }
        };
        match &step {
            Step::Done {
                from: Some(f),
                to: Some(t),
                ..
            } if is_traffic => {
                let mut left: BTreeSet<String> = [f.clone()].into();
                left.extend(run.origin.clone());
                self.quarantine_after(&service, &left, t).await;
            }
            Step::Done { .. } => {}
            other => {
                self.audit_step_result(
                    run,
                    other,
                    intent.id,
                    intent.from_revision.as_deref(),
                    intent.to_revision.as_deref(),
                )
                .await;
            }
        }
        Some(step)
    }
}
