//! The Cloud Run traffic effect: plan, patch, wait, quarantine.

use super::*;

/// `cloud_run_traffic`: all traffic back to an earlier Ready revision; what
/// it leaves is quarantined.
pub(super) struct CloudRunTraffic<'a>(pub &'a CloudRunTrafficConfig);

impl Effect for CloudRunTraffic<'_> {
    async fn plan(&self, runner: &ActionRunner, run: &Run) -> Result<Planned, Step> {
        let cfg = self.0;
        let service = cfg.service.clone();
        let api = &runner.deps().cloud_run;
        let svc = match api.get_service(&service).await {
            Ok(s) => s,
            Err(e) => return Err(Step::Failed(format!("cannot read {service}: {e}"))),
        };
        let revisions = match api.list_revisions(&service).await {
            Ok(r) => r,
            Err(e) => {
                return Err(Step::Failed(format!(
                    "cannot list revisions of {service}: {e}"
                )))
            }
        };
        let Some(current) = svc.serving_revision() else {
            return Err(Step::Skip {
                reason: reason::NO_EARLIER_READY_REVISION,
                detail: format!("{} serves no revision", short_name(&service)),
                notify: true,
            });
        };
        let excluded = runner.excluded_revisions(&service, &svc, run).await;
        let pinned = run
            .trigger
            .to_revision
            .clone()
            .or_else(|| cfg.revision.clone());
        let why_to = match &pinned {
            Some(_) if run.trigger.to_revision.is_some() => "the revision asked for",
            Some(_) => "the revision the action pins",
            None => "the newest Ready revision that served before it, neither quarantined nor one the evidence may be about",
        };
        let to = match pinned {
            Some(p) => {
                let p = short_name(&p).to_string();
                if run.implicated.contains(&p) {
                    return Err(Step::Skip {
                        reason: reason::NO_EARLIER_READY_REVISION,
                        detail: format!("{p} served inside the evidence window of the alert: not rolling back onto a revision the evidence may be about"),
                        notify: true,
                    });
                }
                if excluded.contains(&p) {
                    return Err(Step::Skip {
                        reason: reason::QUARANTINED,
                        detail: format!("{p} is quarantined (it was rolled back from); lift it with DELETE /api/v1/quarantine/{}/{p} if it is good", short_name(&service)),
                        notify: true,
                    });
                }
                match revisions.iter().find(|r| r.name == p) {
                    Some(r) if r.ready => p,
                    Some(_) => {
                        return Err(Step::Skip {
                            reason: reason::NO_EARLIER_READY_REVISION,
                            detail: format!("{p} is not Ready"),
                            notify: true,
                        })
                    }
                    None => {
                        return Err(Step::Skip {
                            reason: reason::NO_EARLIER_READY_REVISION,
                            detail: format!("{p} is not a revision of {}", short_name(&service)),
                            notify: true,
                        })
                    }
                }
            }
            None => {
                let reference = run.origin.clone().unwrap_or_else(|| current.clone());
                let history = runner
                    .deps()
                    .serving_history
                    .serving_history(&service)
                    .await;
                let mut excl = excluded.clone();
                excl.insert(current.clone());
                excl.extend(run.implicated.iter().cloned());
                match plan::previous_ready(&reference, &history, &revisions, &excl) {
                    Candidate::Found(r) => r,
                    Candidate::OnlyQuarantined(q) if q.iter().any(|r| run.implicated.contains(r)) => {
                        return Err(Step::Skip {
                            reason: reason::NO_EARLIER_READY_REVISION,
                            detail: format!(
                                "every earlier Ready revision of {} is quarantined or served inside the evidence window of the alert ({}): not rolling back onto a revision the evidence may be about",
                                short_name(&service),
                                q.join(", ")
                            ),
                            notify: true,
                        })
                    }
                    Candidate::OnlyQuarantined(q) => {
                        return Err(Step::Skip {
                            reason: reason::QUARANTINED,
                            detail: format!(
                                "every earlier Ready revision of {} is quarantined ({}): not rolling back to a revision that was rolled back from",
                                short_name(&service),
                                q.join(", ")
                            ),
                            notify: true,
                        })
                    }
                    Candidate::None => {
                        return Err(Step::Skip {
                            reason: reason::NO_EARLIER_READY_REVISION,
                            detail: format!("{} has no Ready revision that served before {reference}", short_name(&service)),
                            notify: true,
                        })
                    }
                }
            }
        };
        let name = short_name(&service);
        if svc.serves_fully(&to) || svc.requests_fully(&to) {
            return Err(Step::AlreadyAtTarget(format!("{name} already serves {to}")));
        }
        Ok(Planned {
            kind: IntentKind::CloudRunTraffic,
            detail: IntentDetail {
                origin: run.origin.clone(),
                planned: Some(PlannedBase::of(&svc)),
                ..IntentDetail::for_alert(run.trigger.alert.as_ref())
            },
            dry_run: format!("would send 100% of {name} traffic from {current} to {to}"),
            audit_start: "rolling back".into(),
            notice_reason: "rolling_back",
            summary: format!(
                "rolling back {name} from {current} to {to} because {}",
                run.because()
            ),
            description: format!(
                "{}Sending 100% of traffic to {to} ({why_to}); then verifying.",
                run.evidence_text()
            ),
            evidence: vec![("before", traffic_json(&svc))],
            etag: Some(svc.etag.clone()),
            from: Some(current),
            to: Some(to),
        })
    }

    async fn apply(&self, runner: &ActionRunner, run: &mut Run, intent: &Intent) -> Applied {
        let step = runner
            .execute_traffic(intent, run.action.operation_timeout.0)
            .await;
        let mut evidence = json!({});
        if let Step::Done { to: Some(to), .. } = &step {
            // The revisions traffic left are never a rollback target again.
            run.left_behind.extend(intent.from_revision.clone());
            run.left_behind.extend(run.origin.clone());
            let service = &self.0.service;
            runner.quarantine_after(service, &run.left_behind, to).await;
            evidence = json!({ "after": runner.service_now(service).await });
        }
        Applied {
            step,
            done: "traffic moved",
            evidence,
        }
    }
}

impl ActionRunner {
    /// Revisions never to roll back to: the quarantined, the one the last
    /// rollback left (its annotation), and those this run left.
    pub(super) async fn excluded_revisions(
        &self,
        service: &str,
        svc: &ServiceState,
        run: &Run,
    ) -> BTreeSet<String> {
        let mut excluded: BTreeSet<String> = self
            .deps()
            .store
            .quarantine(Some(service.to_string()))
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|q| q.revision)
            .collect();
        if let Some(from) = svc.annotations.get(ANNOTATION_FROM) {
            excluded.insert(from.clone());
        }
        excluded.extend(run.left_behind.iter().cloned());
        excluded
    }

    /// The audit of a reconciled step that did not finish as ours.
    pub(super) async fn audit_step_result(
        &self,
        run: &Run,
        result: &Step,
        id: i64,
        from: Option<&str>,
        to: Option<&str>,
    ) {
        match result {
            Step::Superseded(d) => {
                self.audit(run, Decision::Superseded, d, Some(id), from, to, json!({}))
                    .await;
            }
            Step::Failed(d) => {
                self.audit(run, Decision::Failed, d, Some(id), from, to, json!({}))
                    .await;
            }
            _ => {}
        }
    }

    pub(super) async fn quarantine_after(&self, service: &str, left: &BTreeSet<String>, to: &str) {
        for rev in left.iter().filter(|r| r.as_str() != to) {
            let q = Quarantined {
                service: service.to_string(),
                revision: rev.clone(),
                reason: format!("rolled back from {rev} to {to}"),
                at_ms: self.now(),
            };
            if let Err(e) = self.deps().store.quarantine_revision(q).await {
                tracing::error!(error = %e, "cannot quarantine a revision");
            }
        }
    }

    /// The annotations a change writes; `rolled-back-by` (the intent) tells
    /// our change from another rearguard's made in the same millisecond.
    pub(super) fn rollback_annotations(
        &self,
        intent: &Intent,
        to: &str,
    ) -> BTreeMap<String, String> {
        let mut a = BTreeMap::new();
        let from = intent.from_revision.as_deref().unwrap_or("");
        a.insert(ANNOTATION_FROM.to_string(), from.to_string());
        a.insert(ANNOTATION_TO.to_string(), to.to_string());
        a.insert(ANNOTATION_AT.to_string(), self.now().to_string());
        let nonce: u32 = rand::random();
        a.insert(
            ANNOTATION_BY.to_string(),
            format!("{}/{}/{nonce:08x}", intent.run_id, intent.id),
        );
        a
    }

    /// Sends the traffic change of a written intent and waits for it; also
    /// the retry path of reconciliation.
    pub(super) async fn execute_traffic(&self, intent: &Intent, timeout: Duration) -> Step {
        let (Some(service), Some(to)) = (intent.service.clone(), intent.to_revision.clone()) else {
            self.set_intent(
                intent.id,
                IntentState::Failed,
                None,
                Some("intent without service or revision".into()),
            )
            .await;
            return Step::Failed("intent without service or revision".into());
        };
        self.patch_and_wait(intent, &service, &CloudRunChange::Traffic { to }, timeout)
            .await
    }

    /// Sends `patch`, never blindly twice: after an unanswered or failed
    /// patch (timeout, reset, 5xx: the server may have acted) the service is
    /// re-read. Our change is there: Ok(None), continue as ours without an
    /// operation. Nothing changed: send again with the fresh etag. Someone
    /// else changed it: superseded. Ok(Some(op)): the change was accepted.
    pub(super) async fn send_patch(
        &self,
        intent: &Intent,
        service: &str,
        mut patch: ServicePatch,
        already: impl Fn(&ServiceState) -> bool,
    ) -> Result<Option<OperationState>, Step> {
        const MAX_SENDS: u32 = 3;
        let api = &self.deps().cloud_run;
        let mut sends = 0;
        loop {
            sends += 1;
            let err = match api.patch_service(service, patch.clone()).await {
                Ok(op) => return Ok(Some(op)),
                Err(e) => e,
            };
            if !err.outcome_unknown() {
                return self
                    .patch_refused(intent, service, &patch, err, &already)
                    .await;
            }
            tracing::warn!(error = %err, service, intent = intent.id, "the answer to services.patch was lost; re-reading the service to learn whether it was applied");
            // A 429 or an overloaded front end: pause (1s, 2s, 4s) before
            // the re-read, so a re-send is not hammered at it either.
            tokio::time::sleep(Duration::from_secs(1 << (sends - 1))).await;
            let now = match api.get_service(service).await {
                Ok(s) => s,
                Err(e) => {
                    let detail = format!(
                        "the answer to the change of {} was lost ({err}) and the service cannot be read to learn whether it was made ({e})",
                        short_name(service)
                    );
                    return Err(self.fail_intent(intent.id, detail).await);
                }
            };
            match after_lost_patch(&patch, &now) {
                LostPatch::Applied => {
                    tracing::info!(
                        service,
                        intent = intent.id,
                        "the lost patch was applied: continuing as ours"
                    );
                    return Ok(None);
                }
                LostPatch::NotApplied { etag } if sends < MAX_SENDS => patch.etag = etag,
                LostPatch::NotApplied { .. } => {
                    let detail = format!(
                        "{} did not take the change after {sends} attempts: {err}",
                        short_name(service)
                    );
                    return Err(self.fail_intent(intent.id, detail).await);
                }
                LostPatch::ChangedByOther(why) => {
                    let detail = format!(
                        "{} was changed by someone else while rearguard's change was unanswered ({why}); not retrying",
                        short_name(service)
                    );
                    self.set_intent(
                        intent.id,
                        IntentState::Superseded,
                        None,
                        Some(detail.clone()),
                    )
                    .await;
                    return Err(Step::Superseded(detail));
                }
            }
        }
    }

    /// A patch was refused. A stale etag or a service that is no longer as
    /// planned means someone changed it since we read it: if the change is
    /// ours in effect, another actor did it.
    pub(super) async fn patch_refused(
        &self,
        intent: &Intent,
        service: &str,
        patch: &ServicePatch,
        err: CloudRunError,
        already: impl Fn(&ServiceState) -> bool,
    ) -> Result<Option<OperationState>, Step> {
        if let CloudRunError::StaleEtag(_) | CloudRunError::Changed(_) = err {
            if let Ok(now_svc) = self.deps().cloud_run.get_service(service).await {
                if patch.is_applied_in(&now_svc) {
                    // Our own change, re-sent by a layer below: it is ours.
                    return Ok(None);
                }
                if already(&now_svc) {
                    let by = now_svc
                        .annotations
                        .get(ANNOTATION_AT)
                        .map(|_| "another rearguard")
                        .unwrap_or("another actor");
                    let detail = format!(
                        "already rolled back by {by}: {} was changed since it was read",
                        short_name(service)
                    );
                    self.set_intent(
                        intent.id,
                        IntentState::Superseded,
                        None,
                        Some(detail.clone()),
                    )
                    .await;
                    return Err(Step::Superseded(detail));
                }
            }
            let detail = format!(
                "{} changed while rearguard planned ({err}); not retrying",
                short_name(service)
            );
            return Err(self.fail_intent(intent.id, detail).await);
        }
        let mut detail = format!("{} refused the change: {err}", short_name(service));
        if let CloudRunError::Api { code: 403, .. } = &err {
            let runtime = self
                .deps()
                .cloud_run
                .get_service(service)
                .await
                .ok()
                .and_then(|s| s.runtime_service_account);
            detail = format!("{detail}. {}", missing_role(&err, runtime.as_deref()));
        }
        Err(self.fail_intent(intent.id, detail).await)
    }

    /// Our change was applied, then the service changed again before it was
    /// in effect: someone else's newer decision, left as it is.
    pub(super) async fn changed_after_ours(
        &self,
        intent: &Intent,
        service: &str,
        ours: &[TrafficTarget],
        now: &ServiceState,
    ) -> Step {
        let detail = format!(
            "{} was changed by someone else after rearguard's change: traffic is {}, rearguard set {}; not overwriting it",
            short_name(service),
            describe_traffic(&now.traffic),
            describe_traffic(ours)
        );
        self.set_intent(
            intent.id,
            IntentState::Superseded,
            None,
            Some(detail.clone()),
        )
        .await;
        Step::Superseded(detail)
    }

    /// Polls an operation with backoff (1s doubling to 10s) until done or the deadline.
    pub(super) async fn wait_operation(
        &self,
        name: &str,
        done: bool,
        deadline: TimestampMs,
    ) -> Result<(), String> {
        if done {
            return Ok(());
        }
        let mut wait = Duration::from_secs(1);
        loop {
            tokio::time::sleep(wait).await;
            match self.deps().cloud_run.get_operation(name).await {
                Ok(op) if op.done => {
                    return match op.error {
                        Some(e) => Err(format!("operation {name} failed: {e}")),
                        None => Ok(()),
                    }
                }
                Ok(_) => {}
                Err(CloudRunError::NotFound(_)) => {
                    return Err(format!("operation {name} not found"))
                }
                Err(e) => {
                    tracing::warn!(error = %e, operation = name, "polling the operation failed; retrying")
                }
            }
            if self.now() >= deadline {
                return Err(format!("operation {name} not done in time"));
            }
            wait = (wait * 2).min(Duration::from_secs(10));
        }
    }

    /// Polls the service with backoff until `ok` holds or the deadline.
    pub(super) async fn wait_service(
        &self,
        service: &str,
        deadline: TimestampMs,
        ok: impl Fn(&ServiceState) -> bool,
    ) -> Result<ServiceState, String> {
        let mut wait = Duration::from_millis(500);
        loop {
            match self.deps().cloud_run.get_service(service).await {
                Ok(s) if ok(&s) => return Ok(s),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, service, "reading the service failed; retrying")
                }
            }
            if self.now() >= deadline {
                return Err("not in effect in time".into());
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(10));
        }
    }
}
