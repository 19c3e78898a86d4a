//! The Cloud Run env-revert effect.

use super::*;

/// `cloud_run_env`: env vars set on the service, a new revision that takes
/// all traffic (a feature flag turned back).
pub(super) struct CloudRunEnv<'a>(pub &'a CloudRunEnvConfig);

impl Effect for CloudRunEnv<'_> {
    async fn plan(&self, runner: &ActionRunner, run: &Run) -> Result<Planned, Step> {
        let cfg = self.0;
        let service = &cfg.service;
        let svc = match runner.deps().cloud_run.get_service(service).await {
            Ok(s) => s,
            Err(e) => return Err(Step::Failed(format!("cannot read {service}: {e}"))),
        };
        let name = short_name(service);
        let vars = cfg
            .env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ");
        if svc.has_env(&cfg.env) {
            return Err(Step::AlreadyAtTarget(format!("{name} already has {vars}")));
        }
        Ok(Planned {
            kind: IntentKind::CloudRunEnv,
            detail: IntentDetail {
                env: cfg.env.clone(),
                origin: run.origin.clone(),
                planned: Some(PlannedBase::of(&svc)),
                ..IntentDetail::for_alert(run.trigger.alert.as_ref())
            },
            from: svc.serving_revision(),
            // Cloud Run names the new revision.
            to: None,
            etag: Some(svc.etag.clone()),
            dry_run: format!("would set {vars} on {name} (a new revision)"),
            audit_start: format!("setting {vars}"),
            notice_reason: "setting_env",
            summary: format!("setting {vars} on {name} because {}", run.because()),
            description: "A new revision with the variables is deployed; then verifying.".into(),
            evidence: vec![("before", traffic_json(&svc)), ("env", json!(cfg.env))],
        })
    }

    async fn apply(&self, runner: &ActionRunner, run: &mut Run, intent: &Intent) -> Applied {
        let step = runner
            .execute_env(intent, &self.0.env, run.action.operation_timeout.0)
            .await;
        let mut evidence = json!({});
        if let Step::Done { .. } = &step {
            // The revision the new one replaced is never a rollback target again.
            run.left_behind.extend(intent.from_revision.clone());
            evidence = json!({ "after": runner.service_now(&self.0.service).await });
        }
        Applied {
            step,
            done: "env set",
            evidence,
        }
    }
}

impl ActionRunner {
    pub(super) async fn execute_env(
        &self,
        intent: &Intent,
        env: &BTreeMap<String, String>,
        timeout: Duration,
    ) -> Step {
        let Some(service) = intent.service.clone() else {
            return Step::Failed("intent without service".into());
        };
        let change = CloudRunChange::Env { env: env.clone() };
        self.patch_and_wait(intent, &service, &change, timeout)
            .await
    }

    /// Waits until the new revision is Ready and serves everything.
    pub(super) async fn finish_env(
        &self,
        intent: &Intent,
        service: &str,
        env: &BTreeMap<String, String>,
        ours: Option<&[TrafficTarget]>,
        deadline: TimestampMs,
    ) -> Step {
        let changed = |s: &ServiceState| ours.is_some_and(|t| s.traffic != t);
        let ready = |s: &ServiceState| {
            changed(s)
                || s.has_env(env)
                    && s.latest_created_revision.is_some()
                    && s.latest_created_revision == s.latest_ready_revision
                    && s.latest_ready_revision
                        .as_deref()
                        .is_some_and(|r| s.serves_fully(r))
        };
        match self.wait_service(service, deadline, ready).await {
            Ok(s) if changed(&s) => {
                self.changed_after_ours(intent, service, ours.unwrap_or_default(), &s)
                    .await
            }
            Ok(s) => {
                self.set_intent(intent.id, IntentState::Verifying, None, None)
                    .await;
                Step::Done {
                    intent_id: intent.id,
                    from: intent.from_revision.clone(),
                    to: s.latest_ready_revision,
                }
            }
            Err(e) => {
                let detail = format!("the new revision did not become Ready and serving: {e}");
                self.fail_intent(intent.id, detail).await
            }
        }
    }
}
