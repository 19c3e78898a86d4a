//! The steps of an action in order (its ladder), each taken with the effect
//! of its kind (`effect.rs`) and verified; what they came to is decided by
//! `decide::ladder`, then told and audited.

use super::*;

impl ActionRunner {
    pub(super) async fn run_ladder(&self, run: &mut Run) -> Outcome {
        self.run_ladder_from(run, 0, None).await
    }

    /// The ladder from step `start`; `resumed` is that step's result when a
    /// restart already finished it (reconciliation), so it is not run again.
    pub(super) async fn run_ladder_from(
        &self,
        run: &mut Run,
        start: usize,
        mut resumed: Option<Step>,
    ) -> Outcome {
        let effects = run.action.effects();
        let total = effects.len();
        let mut first_skip: Option<(&'static str, String, bool)> = None;
        let mut plan_lines = Vec::new();
        let mut last_failure: Option<StepFailure> = None;
        for (i, effect) in effects.iter().enumerate().skip(start) {
            let step = match resumed.take() {
                Some(step) => step,
                // The effect of the step's kind; `take_step` does the rest.
                None => match effect {
                    EffectConfig::CloudRunTraffic(c) => {
                        self.take_step(run, i, &CloudRunTraffic(c)).await
                    }
                    EffectConfig::CloudRunEnv(c) => self.take_step(run, i, &CloudRunEnv(c)).await,
                    EffectConfig::Command(argv) => self.take_step(run, i, &Command(argv)).await,
                },
            };
            let label = if total > 1 {
                format!("step {}/{total} ({})", i + 1, effect.kind())
            } else {
                effect.kind().to_string()
            };
            match step {
                Step::AlreadyAtTarget(detail) => {
                    self.audit(
                        run,
                        Decision::Skipped,
                        reason::ALREADY_AT_TARGET,
                        None,
                        None,
                        None,
                        json!({"step": i, "detail": detail}),
                    )
                    .await;
                    first_skip.get_or_insert((reason::ALREADY_AT_TARGET, detail, false));
                }
                Step::Skip {
                    reason,
                    detail,
                    notify,
                } => {
                    if total == 1
                        || (i + 1 == total && first_skip.is_none() && last_failure.is_none())
                    {
                        return self.skip(run, reason, detail, notify).await;
                    }
                    self.audit(
                        run,
                        Decision::Skipped,
                        reason,
                        None,
                        None,
                        None,
                        json!({"step": i, "detail": detail}),
                    )
                    .await;
                    first_skip.get_or_insert((reason, detail, notify));
                }
                Step::DryRun(line) => plan_lines.push(format!("{label}: {line}")),
                Step::Superseded(detail) => {
                    self.event(
                        run,
                        Phase::Superseded,
                        reason::OTHER_ACTOR,
                        None,
                        None,
                        format!(
                            "{} was already rolled back by another actor",
                            run.service_label()
                        ),
                        detail.clone(),
                    )
                    .await;
                    return Outcome::Superseded { detail };
                }
                Step::Failed(detail) => {
                    self.event(
                        run,
                        Phase::Failed,
                        "action_failed",
                        None,
                        None,
                        format!("{label} on {} failed", run.service_label()),
                        format!("{} fired; {detail}", run.because()),
                    )
                    .await;
                    last_failure = Some(StepFailure::Failed(format!("{label}: {detail}")));
                }
                Step::Done {
                    intent_id,
                    from,
                    to,
                } => match self.verify_intent(run, intent_id).await {
                    Ok(attempts) => {
                        let detail = format!("verified after {attempts} check(s)");
                        self.audit(
                            run,
                            Decision::Verified,
                            &detail,
                            Some(intent_id),
                            from.as_deref(),
                            to.as_deref(),
                            json!({"step": i}),
                        )
                        .await;
                        let summary = match (&from, &to) {
                            (Some(f), Some(t)) => {
                                format!(
                                    "rolled back {} from {f} to {t} and verified",
                                    run.service_label()
                                )
                            }
                            _ => format!("{label} on {} done and verified", run.service_label()),
                        };
                        self.event(
                            run,
                            Phase::Verified,
                            "verified",
                            from.as_deref(),
                            to.as_deref(),
                            summary,
                            format!("{} fired; {detail}", run.because()),
                        )
                        .await;
                        return Outcome::Verified {
                            step: i + 1,
                            from_revision: from,
                            to_revision: to,
                        };
                    }
                    Err(detail) => {
                        self.audit(
                            run,
                            Decision::NotVerified,
                            &detail,
                            Some(intent_id),
                            from.as_deref(),
                            to.as_deref(),
                            json!({"step": i}),
                        )
                        .await;
                        last_failure = Some(StepFailure::NotVerified(format!(
                            "{label}: not verified: {detail}"
                        )));
                        if i + 1 < total {
                            tracing::warn!(target_name = %run.target, %detail, "step not verified; trying the next step");
                        }
                    }
                },
            }
        }
        let conclusion = ladder::conclude(
            run.dry_run && !plan_lines.is_empty(),
            last_failure,
            first_skip,
        );
        if let Conclusion::DryRun = conclusion {
            let text = plan_lines.join("; ");
            self.audit(
                run,
                Decision::DryRun,
                &text,
                None,
                None,
                None,
                self.alert_evidence(run).await,
            )
            .await;
            self.event(
                run,
                Phase::DryRun,
                "dry_run",
                None,
                None,
                format!("dry run: would act on {}: {text}", run.service_label()),
                format!("{} fired; dry run, nothing changed", run.because()),
            )
            .await;
            return Outcome::DryRun { plan: plan_lines };
        }
        if let Conclusion::Failed(failure) = conclusion {
            let acted = failure.acted();
            let failure = match failure {
                StepFailure::Failed(d) | StepFailure::NotVerified(d) => d,
            };
            // Acted (or tried) and it did not help: stop acting here.
            let hold_reason =
                format!("rollback did not fix it ({failure}); no further automatic action");
            self.hold_by_rearguard(&run.target, &hold_reason).await;
            self.inner
                .metrics
                .skipped
                .with_label_values(&[&run.target, reason::VERIFICATION_FAILED])
                .inc();
            self.audit(
                run,
                Decision::Failed,
                reason::VERIFICATION_FAILED,
                None,
                None,
                None,
                json!({"detail": failure}),
            )
            .await;
            self.event(
                run,
                Phase::Failed,
                reason::VERIFICATION_FAILED,
                None,
                None,
                format!("rollback did not fix {}", run.service_label()),
                format!(
                    "{} fired; {failure}. {} is now on hold.",
                    run.because(),
                    run.target
                ),
            )
            .await;
            return if acted {
                Outcome::NotVerified { detail: failure }
            } else {
                Outcome::Failed { detail: failure }
            };
        }
        match conclusion {
            Conclusion::Skipped((reason, detail, notify)) => {
                self.skip(run, reason, detail, notify).await
            }
            Conclusion::DryRun | Conclusion::Failed(_) | Conclusion::NothingToDo => {
                self.skip(
                    run,
                    reason::ALREADY_AT_TARGET,
                    "nothing to do".into(),
                    false,
                )
                .await
            }
        }
    }
}
