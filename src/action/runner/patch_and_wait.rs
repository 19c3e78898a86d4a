//! The one path both Cloud Run effects (traffic, env revert) take once their
//! intent is written: build the patch against the planned service, send it
//! (never blindly twice, see `send_patch`), wait for the operation, then wait
//! until the change is in effect, exactly as planned.

use super::*;

/// What a Cloud Run effect changes; everything else of the path is shared.
pub(super) enum CloudRunChange {
    /// All traffic to one revision (a rollback).
    Traffic { to: String },
    /// Env vars set on the template: a new revision that takes all traffic.
    Env { env: BTreeMap<String, String> },
}

impl CloudRunChange {
    fn route(&self) -> Route<'_> {
        match self {
            CloudRunChange::Traffic { to } => Route::Revision(to),
            CloudRunChange::Env { .. } => Route::Latest,
        }
    }

    /// The traffic of an intent written before plans were recorded.
    fn unplanned_traffic(&self) -> Vec<TrafficTarget> {
        match self {
            CloudRunChange::Traffic { to } => vec![TrafficTarget::pinned(to, 100)],
            CloudRunChange::Env { .. } => vec![TrafficTarget::latest(100)],
        }
    }

    /// The `rolled-back-to` annotation.
    fn annotated_to(&self) -> &str {
        match self {
            CloudRunChange::Traffic { to } => to,
            CloudRunChange::Env { .. } => ENV_REVERT_TO,
        }
    }

    fn env(&self) -> Option<BTreeMap<String, String>> {
        match self {
            CloudRunChange::Traffic { .. } => None,
            CloudRunChange::Env { env } => Some(env.clone()),
        }
    }

    /// Whether `s` already has the change (someone else may have made it).
    fn is_made_in(&self, s: &ServiceState) -> bool {
        match self {
            CloudRunChange::Traffic { to } => s.requests_fully(to),
            CloudRunChange::Env { env } => s.has_env(env),
        }
    }
}

impl ActionRunner {
    /// Sends the change of a written intent and waits until it is in effect.
    pub(super) async fn patch_and_wait(
        &self,
        intent: &Intent,
        service: &str,
        change: &CloudRunChange,
        timeout: Duration,
    ) -> Step {
        let planned = intent.detail.planned.clone();
        // Tags of other revisions stay (as `gcloud run services update-traffic`).
        let traffic = match &planned {
            Some(p) => route_all(&p.traffic, change.route()),
            None => change.unplanned_traffic(),
        };
        let patch = ServicePatch {
            etag: intent.etag.clone().unwrap_or_default(),
            expect: planned,
            traffic: Some(traffic.clone()),
            env: change.env(),
            annotations: self.rollback_annotations(intent, change.annotated_to()),
        };
        let op = match self
            .send_patch(intent, service, patch, |s| change.is_made_in(s))
            .await
        {
            Ok(op) => op,
            Err(step) => return step,
        };
        self.set_intent(
            intent.id,
            IntentState::Applied,
            op.as_ref().map(|o| o.name.clone()),
            None,
        )
        .await;
        let deadline = self.now() + timeout.as_millis() as i64;
        if let Some(op) = &op {
            if let Err(e) = self.wait_operation(&op.name, op.done, deadline).await {
                self.set_intent(intent.id, IntentState::Failed, None, Some(e.clone()))
                    .await;
                return Step::Failed(e);
            }
        }
        match change {
            CloudRunChange::Traffic { to } => {
                self.finish_traffic(intent, service, to, &traffic, deadline)
                    .await
            }
            CloudRunChange::Env { env } => {
                self.finish_env(intent, service, env, Some(&traffic), deadline)
                    .await
            }
        }
    }

    /// Waits until all traffic goes to `to`. The result must be exactly the
    /// plan: a change made by someone else meanwhile shows up as a
    /// difference and is never overwritten.
    async fn finish_traffic(
        &self,
        intent: &Intent,
        service: &str,
        to: &str,
        ours: &[TrafficTarget],
        deadline: TimestampMs,
    ) -> Step {
        match self
            .wait_service(service, deadline, |s| {
                s.traffic != ours || s.serves_fully(to)
            })
            .await
        {
            Ok(s) if s.traffic != ours => self.changed_after_ours(intent, service, ours, &s).await,
            Ok(_) => {
                self.set_intent(intent.id, IntentState::Verifying, None, None)
                    .await;
                Step::Done {
                    intent_id: intent.id,
                    from: intent.from_revision.clone(),
                    to: Some(to.to_string()),
                }
            }
            Err(e) => {
                let detail = format!("traffic did not move to {to}: {e}");
                self.fail_intent(intent.id, detail).await
            }
        }
    }
}
