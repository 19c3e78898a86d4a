//! The Cloud Run env-revert effect.

use super::*;

impl ActionRunner {
    pub(super) async fn step_env(
        &self,
        run: &mut Run,
        step: usize,
        cfg: &CloudRunEnvConfig,
    ) -> Step {
        let service = cfg.service.clone();
        let svc = match self.deps().cloud_run.get_service(&service).await {
            Ok(s) => s,
            Err(e) => return Step::Failed(format!("cannot read {service}: {e}")),
        };
        let vars = cfg
            .env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ");
        if svc.has_env(&cfg.env) {
            return Step::AlreadyAtTarget(format!("{} already has {vars}", short_name(&service)));
        }
        let current = svc.serving_revision();
        if run.dry_run {
            return Step::DryRun(format!(
                "would set {vars} on {} (a new revision)",
                short_name(&service)
            ));
        }
        let mut intent = self.new_intent(
            run,
            step,
            IntentKind::CloudRunEnv,
            IntentDetail {
                env: cfg.env.clone(),
                origin: run.origin.clone(),
                planned: Some(PlannedBase::of(&svc)),
                ..IntentDetail::for_alert(run.trigger.alert.as_ref())
            },
        );
        intent.from_revision = current.clone();
        intent.etag = Some(svc.etag.clone());
        let id = match self.write_intent(&intent).await {
            Ok(id) => id,
            Err(failed) => return failed,
        };
        intent.id = id;
        let mut ev = self.alert_evidence(run).await;
        ev["before"] = traffic_json(&svc);
        ev["env"] = json!(cfg.env);
        self.audit(
            run,
            Decision::Started,
            &format!("setting {vars}"),
            Some(id),
            current.as_deref(),
            None,
            ev,
        )
        .await;
        self.event(
            run,
            Phase::Started,
            "setting_env",
            current.as_deref(),
            None,
            format!(
                "setting {vars} on {} because {}",
                short_name(&service),
                run.because()
            ),
            "A new revision with the variables is deployed; then verifying.".into(),
        )
        .await;
        let result = self
            .execute_env(&intent, &cfg.env, run.action.operation_timeout.0)
            .await;
        if let Step::Done { to, .. } = &result {
            if let Some(c) = &current {
                run.left_behind.insert(c.clone());
            }
            let after = self
                .deps()
                .cloud_run
                .get_service(&service)
                .await
                .ok()
                .map(|s| traffic_json(&s));
            self.audit(
                run,
                Decision::Done,
                "env set",
                Some(id),
                current.as_deref(),
                to.as_deref(),
                json!({"after": after}),
            )
            .await;
        } else {
            self.audit_step_result(run, &result, id, current.as_deref(), None)
                .await;
        }
        result
    }

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
