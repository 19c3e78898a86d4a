//! The guard rails a run passes before acting: holds, mute windows, cooldown,
//! budget, the firing re-check, the veto window and deploy correlation.

use super::*;
use crate::action::decide::guard_rails::{self, AlertRecheck, RateLimit};

impl ActionRunner {
    /// Holds, mute windows, cooldown, budget, and the firing re-check.
    pub(super) async fn check_guard_rails(&self, run: &Run, now: TimestampMs) -> Option<Outcome> {
        match self.hold_for(&run.target).await {
            Ok(Some(h)) => {
                let detail = format!(
                    "{} is on hold: {} (set by {})",
                    run.target, h.reason, h.set_by
                );
                return Some(self.skip(run, reason::HOLD, detail, false).await);
            }
            Ok(None) => {}
            Err(e) => {
                // Cannot tell whether held: do not act.
                let detail = format!("cannot read holds from the store: {e}");
                return Some(self.skip(run, reason::HOLD, detail, true).await);
            }
        }
        let view = self.view();
        let muted = |name: &str| {
            view.intervals
                .is_active(name, to_datetime(now))
                .unwrap_or_else(|| self.deps().time_intervals.is_active(name, now))
        };
        if let Some(ti) = guard_rails::first_muted(&run.action.mute_time_intervals, muted) {
            let detail = format!("time interval {ti:?} is active");
            return Some(self.skip(run, reason::MUTED, detail, false).await);
        }
        let cooldown = run.action.cooldown.as_millis();
        let window = run.action.max_per_window.window.as_millis();
        let runs = match self
            .deps()
            .store
            .action_runs_since(
                &run.target,
                guard_rails::rate_limit_since(now, cooldown, window),
            )
            .await
        {
            Ok(r) => r,
            Err(e) => {
                let detail = format!("cannot read earlier actions from the store: {e}");
                return Some(self.skip(run, reason::COOLDOWN, detail, true).await);
            }
        };
        let budget = run.action.max_per_window.count as usize;
        let limit = guard_rails::rate_limit(&runs, now, cooldown, window, budget);
        if let RateLimit::Cooldown { last } = limit {
            let detail = format!(
                "the last action on {} was {} ago (cooldown {})",
                run.target,
                format_duration(Duration::from_millis((now - last).max(0) as u64)),
                run.action.cooldown
            );
            return Some(self.skip(run, reason::COOLDOWN, detail, false).await);
        }
        if let RateLimit::Budget { in_window } = limit {
            let detail = format!(
                "{in_window} actions on {} within {} (budget {budget}): holding it and escalating",
                run.target, run.action.max_per_window.window
            );
            let outcome = self.skip(run, reason::BUDGET, detail.clone(), false).await;
            let hold_reason = format!(
                "budget of {budget} actions per {} used up; it keeps failing after rollbacks: investigate, then `rearguard unhold {}`",
                run.action.max_per_window.window, run.target
            );
            self.hold_by_rearguard(&run.target, &hold_reason).await;
            self.audit(
                run,
                Decision::Escalated,
                reason::BUDGET,
                None,
                None,
                None,
                json!({"detail": detail}),
            )
            .await;
            self.event(
                run,
                Phase::Escalated,
                reason::BUDGET,
                None,
                None,
                format!(
                    "{} keeps failing: automatic rollback stopped, a human is needed",
                    run.service_label()
                ),
                format!("{} fired again. {detail}. {hold_reason}.", run.because()),
            )
            .await;
            return Some(outcome);
        }
        if let Some(a) = &run.trigger.alert {
            let state = self.deps().alert_state.as_ref();
            let recheck = guard_rails::alert_recheck(
                state.is_firing(a.fingerprint()),
                state.rule_error(a.fingerprint()),
            );
            if recheck == AlertRecheck::Resolved {
                let detail = format!("{} is no longer firing", a.name());
                return Some(self.skip(run, reason::ALERT_RESOLVED, detail, false).await);
            }
            // An alert kept through a failing query says nothing new.
            if let AlertRecheck::RuleFailing { error } = recheck {
                let detail = format!(
                    "inconclusive: the last evaluation of the rule of {} failed ({error}); an alert kept through a failing query is not evidence; still watching",
                    a.name()
                );
                return Some(self.inconclusive(run, detail).await);
            }
        }
        None
    }

    /// The `min_requests` guard: an alert whose rule reads request counts
    /// must rest on enough requests to the judged revision.
    pub(super) async fn check_requests(
        &self,
        run: &mut Run,
        service: &str,
        now: TimestampMs,
    ) -> Option<Outcome> {
        let alert = run.trigger.alert.as_ref()?;
        let revision = run.origin.clone()?;
        let window_start = run.window_start_ms?;
        if run.action.min_requests == 0 {
            return None;
        }
        let reads_requests = self
            .deps()
            .alert_state
            .evidence_metrics(alert.fingerprint())
            .is_some_and(|m| m.contains(judge::REQUEST_COUNT_SERIES));
        if !reads_requests {
            return None;
        }
        let seen = self
            .deps()
            .requests
            .requests(short_name(service), &revision, window_start, now)
            .await;
        match judge::sufficiency(
            run.action.min_requests,
            reads_requests,
            seen,
            &revision,
            now - window_start,
        ) {
            judge::Sufficiency::NotApplicable => None,
            judge::Sufficiency::Enough(c) => {
                let counted = format!(
                    "{} of {} requests to {revision} failed since {}",
                    c.errors.round(),
                    c.total.round(),
                    to_datetime(window_start).format("%H:%M:%S UTC")
                );
                run.counted = Some(counted);
                None
            }
            judge::Sufficiency::Inconclusive(detail) => Some(self.inconclusive(run, detail).await),
        }
    }

    /// The revision a traffic rollback would go to now (for the veto notice).
    pub(super) async fn planned_target(&self, run: &Run, service: &str) -> Option<String> {
        let cfg = run.action.effects().into_iter().find_map(|e| match e {
            EffectConfig::CloudRunTraffic(c) => Some(c),
            _ => None,
        })?;
        if let Some(p) = run.trigger.to_revision.clone().or(cfg.revision) {
            return Some(short_name(&p).to_string());
        }
        let api = &self.deps().cloud_run;
        let svc = api.get_service(service).await.ok()?;
        let revisions = api.list_revisions(service).await.ok()?;
        let current = svc.serving_revision()?;
        let history = self.deps().serving_history.serving_history(service).await;
        let mut excl = self.excluded_revisions(service, &svc, run).await;
        excl.insert(current.clone());
        excl.extend(run.implicated.iter().cloned());
        let reference = run.origin.clone().unwrap_or(current);
        match plan::previous_ready(&reference, &history, &revisions, &excl) {
            Candidate::Found(r) => Some(r),
            _ => None,
        }
    }

    /// Announces the action and waits `veto`: a hold during the wait cancels
    /// it (audited); at its end the alert must still fire, the same revision
    /// serve, and the evidence still be enough.
    pub(super) async fn veto_window(&self, run: &mut Run) -> Option<Outcome> {
        let veto = run.action.veto;
        let from = run.origin.clone();
        let to = match run.service.clone() {
            Some(s) => self.planned_target(run, &s).await,
            None => None,
        };
        let what = match (&from, &to) {
            (Some(f), Some(t)) => format!("rolling back {} from {f} to {t}", run.service_label()),
            _ => format!("running {} on {}", run.target, run.service_label()),
        };
        let hold_cmd = format!(
            "rearguard hold {} --reason \"...\"  (or POST /api/v1/holds {{\"target\": \"{}\", \"reason\": \"...\"}})",
            run.target, run.target
        );
        let mut ev = self.alert_evidence(run).await;
        ev["veto"] = json!(veto.to_string());
        ev["judged"] = json!(run.judged);
        self.audit(
            run,
            Decision::VetoWindow,
            &format!("{what} in {veto} unless held"),
            None,
            from.as_deref(),
            to.as_deref(),
            ev,
        )
        .await;
        self.event(
            run,
            Phase::Vetoable,
            "veto_window",
            from.as_deref(),
            to.as_deref(),
            format!("{what} in {veto} unless held"),
            format!(
                "{} fired. {}To stop it: {hold_cmd}.",
                run.because(),
                run.evidence_text()
            ),
        )
        .await;
        let deadline = self.now() + veto.as_millis();
        loop {
            match self.hold_for(&run.target).await {
                Ok(Some(h)) => {
                    let detail = format!(
                        "{what} cancelled during the veto window: {} is on hold ({}, set by {})",
                        run.target, h.reason, h.set_by
                    );
                    return Some(self.skip(run, reason::VETOED, detail, true).await);
                }
                Ok(None) => {}
                Err(e) => {
                    let detail = format!("cannot read holds from the store: {e}");
                    return Some(self.skip(run, reason::HOLD, detail, true).await);
                }
            }
            let now = self.now();
            if now >= deadline {
                break;
            }
            let wait = (deadline - now).min(5_000) as u64;
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
        if let Some(a) = &run.trigger.alert {
            if self.deps().alert_state.is_firing(a.fingerprint()) == Some(false) {
                let detail = format!(
                    "{} stopped firing during the veto window: not {what}",
                    a.name()
                );
                return Some(self.skip(run, reason::ALERT_RESOLVED, detail, true).await);
            }
        }
        if let Some(service) = run.service.clone() {
            let serving = match self.deps().cloud_run.get_service(&service).await {
                Ok(s) => s.serving_revision(),
                Err(e) => {
                    let detail = format!("cannot read {service}: {e}");
                    return Some(
                        self.skip(run, reason::CLOUD_RUN_UNAVAILABLE, detail, true)
                            .await,
                    );
                }
            };
            if serving != run.origin {
                let detail = format!(
                    "{} serves {} now, not {}: what the alert judged changed during the veto window",
                    short_name(&service),
                    serving.as_deref().unwrap_or("nothing"),
                    run.origin.as_deref().unwrap_or("?")
                );
                return Some(self.skip(run, reason::SERVING_CHANGED, detail, true).await);
            }
            let now = self.now();
            if let Some(outcome) = self.check_requests(run, &service, now).await {
                return Some(outcome);
            }
        }
        None
    }

    /// Too little evidence: tell once (audited), then re-check every
    /// [`RECHECK_INCONCLUSIVE`] while the alert fires, quietly.
    pub(super) async fn inconclusive(&self, run: &Run, detail: String) -> Outcome {
        let Some(alert) = run.trigger.alert.clone() else {
            return self.skip(run, reason::INCONCLUSIVE, detail, true).await;
        };
        let key = (run.target.clone(), alert.fingerprint());
        let first = self
            .inner
            .watching
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone());
        let outcome = if first {
            self.skip(run, reason::INCONCLUSIVE, detail, true).await
        } else {
            self.inner
                .metrics
                .skipped
                .with_label_values(&[&run.target, reason::INCONCLUSIVE])
                .inc();
            Outcome::Skipped {
                reason: reason::INCONCLUSIVE.into(),
                detail,
            }
        };
        let scheduled = self
            .inner
            .rechecks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone());
        if scheduled {
            let this = self.clone();
            let trigger = run.trigger.clone();
            tokio::spawn(async move {
                tokio::time::sleep(RECHECK_INCONCLUSIVE).await;
                this.inner
                    .rechecks
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&key);
                if this.deps().alert_state.is_firing(key.1) == Some(true) {
                    this.spawn(key.0, trigger);
                } else {
                    this.inner
                        .watching
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&key);
                }
            });
        }
        outcome
    }

    /// Another actor's recent rollback, then whose evidence the alert is
    /// ([`judge::judge`]: the revision it names, its evidence window, the bake window).
    pub(super) async fn check_deploy(
        &self,
        run: &mut Run,
        service: &str,
        svc: &ServiceState,
        now: TimestampMs,
    ) -> Option<Outcome> {
        let origin = run.origin.clone()?;
        // Done by another rearguard, in effect or still being applied.
        let to = svc.annotations.get(ANNOTATION_TO);
        if to == Some(&origin) || to.is_some_and(|t| svc.requests_fully(t)) {
            let at: Option<i64> = svc
                .annotations
                .get(ANNOTATION_AT)
                .and_then(|v| v.parse().ok());
            if at.is_some_and(|at| at >= now - run.action.cooldown.as_millis()) {
                let detail = format!(
                    "{} was already rolled back to {origin} by another actor (from {})",
                    short_name(service),
                    svc.annotations
                        .get(ANNOTATION_FROM)
                        .map(String::as_str)
                        .unwrap_or("?")
                );
                return Some(self.skip(run, reason::OTHER_ACTOR, detail, false).await);
            }
        }
        let alert = run.trigger.alert.clone()?;
        let history = self.deps().serving_history.serving_history(service).await;
        let revisions = match self.deps().cloud_run.list_revisions(service).await {
            Ok(r) => r,
            Err(e) => {
                let detail = format!("cannot list revisions of {service}: {e}");
                return Some(
                    self.skip(run, reason::CLOUD_RUN_UNAVAILABLE, detail, true)
                        .await,
                );
            }
        };
        // Without the Cloud Run source's traffic history, each Ready revision
        // is taken to have served from its creation until the next one.
        let history = if history.is_empty() {
            judge::history_from_revisions(&revisions)
        } else {
            history
        };
        // Rules unknown (no rule manager, or the alert is gone): the
        // evidence reaches back to when the alert became active.
        let lookback = self
            .deps()
            .alert_state
            .lookback_ms(alert.fingerprint())
            .unwrap_or(0);
        let facts = judge::EvidenceFacts {
            alert_revision: alert.labels.get(judge::REVISION_LABEL),
            alertname: alert.name(),
            active_at_ms: alert.active_at_ms,
            lookback_ms: lookback,
            now_ms: now,
            serving: &origin,
            serving_since_ms: plan::serving_since(&origin, &history, &revisions),
            history: &history,
            bake_window_ms: run.action.bake_window.as_millis(),
        };
        match judge::judge(&facts) {
            Judgement::Judged {
                served_since_ms,
                window_start_ms,
                implicated,
                ..
            } => {
                let fmt = |ms: i64| to_datetime(ms).format("%Y-%m-%d %H:%M:%S UTC").to_string();
                let served = served_since_ms
                    .map(|s| {
                        format!(
                            "{origin} has served since {} ({})",
                            fmt(s),
                            format_duration(Duration::from_millis((now - s).max(0) as u64))
                        )
                    })
                    .unwrap_or_else(|| format!("{origin} serves"));
                let about = match facts.alert_revision {
                    Some(r) => format!("{} is about revision {r}", alert.name()),
                    None => format!(
                        "{} covers {} until now (active at {} minus a lookback of {}), all served by {origin}",
                        alert.name(),
                        fmt(window_start_ms),
                        fmt(alert.active_at_ms),
                        format_duration(Duration::from_millis(lookback.max(0) as u64))
                    ),
                };
                run.judged = Some(format!("{served}; {about}"));
                run.implicated = implicated;
                run.window_start_ms = Some(window_start_ms);
                None
            }
            Judgement::NotJudged { why, detail } => {
                let reason = match why {
                    NotJudged::OtherRevision => reason::OTHER_REVISION,
                    NotJudged::StartedInsideWindow => reason::STARTED_INSIDE_WINDOW,
                    NotJudged::UnknownStart | NotJudged::OutsideBakeWindow => {
                        reason::NOT_DEPLOY_REGRESSION
                    }
                };
                Some(self.skip(run, reason, detail, true).await)
            }
        }
    }
}
