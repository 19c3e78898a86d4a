//! What actions need from Cloud Run, as a small trait: the typed client in
//! `src/gcp/` implements it for real, the fake in [`super::fake`] and the sim
//! for tests. Revision names here are short (`svc-00042-abc`), as in `traffic`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::clock::TimestampMs;
use crate::dispatch::notification::BoxFuture;

/// One entry of `traffic` or `trafficStatuses`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficTarget {
    /// Set for a pinned revision; in `trafficStatuses` also for `latest`.
    pub revision: Option<String>,
    /// `TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST`.
    pub latest: bool,
    pub percent: u32,
    /// A traffic tag (its own URL); tags are kept by a rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

impl TrafficTarget {
    pub fn pinned(revision: &str, percent: u32) -> Self {
        Self {
            revision: Some(revision.to_string()),
            latest: false,
            percent,
            tag: None,
        }
    }
    pub fn latest(percent: u32) -> Self {
        Self {
            revision: None,
            latest: true,
            percent,
            tag: None,
        }
    }
    fn same_destination(&self, other: &Self) -> bool {
        self.latest == other.latest && (self.latest || self.revision == other.revision)
    }
}

/// Where a change sends all traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// A named revision (a rollback).
    Revision(&'a str),
    /// The latest Ready revision (an env revert's new revision).
    Latest,
}

/// The `traffic` that sends 100% to `route` and keeps every tag of `current`
/// at 0%, as `gcloud run services update-traffic --to-revisions R=100` does
/// (a tag on the destination itself stays on its 100% entry).
pub fn route_all(current: &[TrafficTarget], route: Route<'_>) -> Vec<TrafficTarget> {
    let mut main = match route {
        Route::Revision(r) => TrafficTarget::pinned(r, 100),
        Route::Latest => TrafficTarget::latest(100),
    };
    let mut out = Vec::new();
    for t in current.iter().filter(|t| t.tag.is_some()) {
        if main.tag.is_none() && t.same_destination(&main) {
            main.tag = t.tag.clone();
            continue;
        }
        let mut kept = t.clone();
        kept.percent = 0;
        if kept.latest {
            kept.revision = None;
        }
        out.push(kept);
    }
    out.insert(0, main);
    out
}

/// The parts of a Cloud Run v2 Service that actions read.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServiceState {
    pub name: String,
    pub etag: String,
    pub generation: i64,
    pub observed_generation: i64,
    pub latest_ready_revision: Option<String>,
    pub latest_created_revision: Option<String>,
    /// The requested traffic split (`traffic`).
    pub traffic: Vec<TrafficTarget>,
    /// The traffic split in effect (`trafficStatuses`).
    pub traffic_statuses: Vec<TrafficTarget>,
    /// Environment of the template's ingress container (the one with a
    /// port; the only one when there is no sidecar), plain values only.
    pub env: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// `template.serviceAccount`: the identity revisions run as (None: the
    /// Compute Engine default service account). Updating the service acts as it.
    pub runtime_service_account: Option<String>,
}

fn resolve(t: &TrafficTarget, latest_ready: Option<&str>) -> Option<String> {
    match (&t.revision, t.latest) {
        (Some(r), _) => Some(r.clone()),
        (None, true) => latest_ready.map(str::to_string),
        (None, false) => None,
    }
}

fn main_revision(targets: &[TrafficTarget], latest_ready: Option<&str>) -> Option<(String, u32)> {
    let mut by_rev: BTreeMap<String, u32> = BTreeMap::new();
    for t in targets {
        if let Some(r) = resolve(t, latest_ready) {
            *by_rev.entry(r).or_default() += t.percent;
        }
    }
    by_rev.into_iter().max_by_key(|(_, p)| *p)
}

impl ServiceState {
    /// The revision that serves most of the traffic now (from `trafficStatuses`).
    pub fn serving_revision(&self) -> Option<String> {
        main_revision(
            &self.traffic_statuses,
            self.latest_ready_revision.as_deref(),
        )
        .map(|(r, _)| r)
        .or_else(|| self.latest_ready_revision.clone())
    }

    /// Whether `trafficStatuses` show all traffic on `revision`.
    pub fn serves_fully(&self, revision: &str) -> bool {
        main_revision(
            &self.traffic_statuses,
            self.latest_ready_revision.as_deref(),
        )
        .is_some_and(|(r, p)| r == revision && p >= 100)
    }

    /// Whether the requested `traffic` sends everything to `revision` (the
    /// change was accepted, even if not in effect yet).
    pub fn requests_fully(&self, revision: &str) -> bool {
        self.traffic
            .iter()
            .any(|t| t.revision.as_deref() == Some(revision) && !t.latest && t.percent >= 100)
    }

    /// Whether the template's env already holds every `env` value.
    pub fn has_env(&self, env: &BTreeMap<String, String>) -> bool {
        env.iter().all(|(k, v)| self.env.get(k) == Some(v))
    }
}

/// The parts of a Cloud Run v2 Revision that actions read.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RevisionState {
    pub name: String,
    pub create_time_ms: TimestampMs,
    /// The `Ready` condition is true.
    pub ready: bool,
}

/// What the service looked like when a change was planned: the patch is
/// refused if the service differs right before it is sent (the etag alone
/// is not relied on: `service.proto` marks it output only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedBase {
    pub generation: i64,
    pub traffic: Vec<TrafficTarget>,
}

impl PlannedBase {
    pub fn of(svc: &ServiceState) -> Self {
        Self {
            generation: svc.generation,
            traffic: svc.traffic.clone(),
        }
    }

    /// Why `now` is not the service the change was planned against, if it is not.
    pub fn differs(&self, now: &ServiceState) -> Option<String> {
        if now.generation != self.generation {
            return Some(format!(
                "its generation is {} (planned against {})",
                now.generation, self.generation
            ));
        }
        if now.traffic != self.traffic {
            return Some(format!(
                "its traffic is {} (planned against {})",
                describe_traffic(&now.traffic),
                describe_traffic(&self.traffic)
            ));
        }
        None
    }
}

/// `s-1=100%, LATEST=0% (tag canary)` for messages.
pub fn describe_traffic(t: &[TrafficTarget]) -> String {
    if t.is_empty() {
        return "(none: 100% to LATEST)".into();
    }
    t.iter()
        .map(|t| {
            let dest = if t.latest {
                "LATEST"
            } else {
                t.revision.as_deref().unwrap_or("?")
            };
            match &t.tag {
                Some(tag) => format!("{dest}={}% (tag {tag})", t.percent),
                None => format!("{dest}={}%", t.percent),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A change to a service, sent with the etag it was planned against.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServicePatch {
    pub etag: String,
    /// The service as planned against; `None` (an intent from an older
    /// rearguard) skips the check.
    pub expect: Option<PlannedBase>,
    /// New `traffic`, when it changes.
    pub traffic: Option<Vec<TrafficTarget>>,
    /// Env vars to set on the template's ingress container (others are kept);
    /// a new revision with a generated name.
    pub env: Option<BTreeMap<String, String>>,
    /// Annotations to add to the service (others are kept).
    pub annotations: BTreeMap<String, String>,
}

impl ServicePatch {
    /// Whether `now` carries this very change: our annotations (with their
    /// timestamp) and our traffic and env.
    pub fn is_applied_in(&self, now: &ServiceState) -> bool {
        self.annotations
            .iter()
            .all(|(k, v)| now.annotations.get(k) == Some(v))
            && self.traffic.as_ref().is_none_or(|t| now.traffic == *t)
            && self.env.as_ref().is_none_or(|e| now.has_env(e))
    }
}

/// What a re-read says about a patch whose answer was lost (timeout, reset,
/// 5xx: the server may have acted). `services.patch` is not idempotent, so
/// it is never re-sent without this.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LostPatch {
    /// Our change is there: continue to verification as ours.
    Applied,
    /// Nothing changed since the plan: send it again with this fresh etag.
    NotApplied { etag: String },
    /// Someone else changed the service meanwhile.
    ChangedByOther(String),
}

pub fn after_lost_patch(patch: &ServicePatch, now: &ServiceState) -> LostPatch {
    if patch.is_applied_in(now) {
        return LostPatch::Applied;
    }
    match patch.expect.as_ref().map(|e| e.differs(now)) {
        Some(None) => LostPatch::NotApplied {
            etag: now.etag.clone(),
        },
        Some(Some(why)) => LostPatch::ChangedByOther(why),
        None if now.etag == patch.etag => LostPatch::NotApplied {
            etag: now.etag.clone(),
        },
        None => LostPatch::ChangedByOther("its etag changed".into()),
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OperationState {
    pub name: String,
    pub done: bool,
    /// Set when the operation finished with an error.
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum CloudRunError {
    /// 409 ABORTED: the etag no longer matches (someone else changed the service).
    #[error("the service changed since it was read (stale etag): {0}")]
    StaleEtag(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("Cloud Run API error {code} {status}: {message}")]
    Api {
        code: u16,
        status: String,
        message: String,
        /// The permission a 403's `ErrorInfo` names (see `gcp::error`).
        denied_permission: Option<Box<str>>,
    },
    /// Re-read right before the patch, the service was not as planned.
    #[error("the service changed since the change was planned: {0}")]
    Changed(String),
    #[error("cannot reach the Cloud Run API: {0}")]
    Transport(String),
}

impl CloudRunError {
    /// The request may or may not have been carried out: no answer
    /// (timeout, reset) or a 5xx/429 that a front end may send after the
    /// server acted.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            CloudRunError::Transport(_) => true,
            CloudRunError::Api { code, .. } => *code >= 500 || *code == 429,
            _ => false,
        }
    }
}

/// Which role a 403 on a rollback says is missing. Cloud Run needs Cloud Run
/// Developer on the service and Service Account User on its runtime identity
/// for traffic changes too ("Rollbacks, gradual rollouts, and traffic
/// migration", cloud.google.com/run/docs/rollouts-rollbacks-traffic-migration);
/// a missing actAs is named as `iam.serviceaccounts.actAs`, in the error's
/// `ErrorInfo` (`denied_permission`) and in its message.
pub fn missing_role(err: &CloudRunError, runtime_account: Option<&str>) -> String {
    // The permission Google names in the error's details; the message's
    // wording only when the details name none.
    let denied = match err {
        CloudRunError::Api {
            denied_permission: Some(permission),
            ..
        } => permission.to_ascii_lowercase(),
        CloudRunError::Api { message, .. } => message.to_ascii_lowercase(),
        _ => String::new(),
    };
    let account = runtime_account
        .map(|a| format!("the runtime service account {a}"))
        .unwrap_or_else(|| "the service's runtime service account (the Compute Engine default service account when none is set)".into());
    let act_as = format!(
        "rearguard's identity needs Service Account User (roles/iam.serviceAccountUser) on {account}: Cloud Run requires it for traffic changes too"
    );
    let developer = "rearguard's identity needs Cloud Run Developer (roles/run.developer, or run.services.update) on the service";
    if denied.contains("iam.serviceaccounts.actas") {
        act_as
    } else if denied.contains("run.services.") {
        developer.to_string()
    } else {
        format!("{developer}, and {act_as}")
    }
}

/// Cloud Run Admin API v2, as much as actions need. `service` is the full
/// name `projects/P/locations/L/services/S`.
pub trait CloudRunApi: Send + Sync {
    fn get_service<'a>(
        &'a self,
        service: &'a str,
    ) -> BoxFuture<'a, Result<ServiceState, CloudRunError>>;
    fn list_revisions<'a>(
        &'a self,
        service: &'a str,
    ) -> BoxFuture<'a, Result<Vec<RevisionState>, CloudRunError>>;
    /// `services.patch`; returns the long-running operation.
    fn patch_service<'a>(
        &'a self,
        service: &'a str,
        patch: ServicePatch,
    ) -> BoxFuture<'a, Result<OperationState, CloudRunError>>;
    fn get_operation<'a>(
        &'a self,
        operation: &'a str,
    ) -> BoxFuture<'a, Result<OperationState, CloudRunError>>;
}

/// The short name of a service or revision (`.../services/S` → `S`).
pub fn short_name(full: &str) -> &str {
    full.rsplit('/').next().unwrap_or(full)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(statuses: Vec<TrafficTarget>) -> ServiceState {
        ServiceState {
            name: "projects/p/locations/l/services/s".into(),
            etag: "e".into(),
            generation: 1,
            observed_generation: 1,
            latest_ready_revision: Some("s-2".into()),
            latest_created_revision: Some("s-2".into()),
            traffic: vec![TrafficTarget::latest(100)],
            traffic_statuses: statuses,
            env: BTreeMap::new(),
            annotations: BTreeMap::new(),
            runtime_service_account: None,
        }
    }

    #[test]
    fn serving_revision_resolves_latest_and_splits() {
        assert_eq!(
            svc(vec![TrafficTarget::latest(100)])
                .serving_revision()
                .as_deref(),
            Some("s-2")
        );
        let split = svc(vec![
            TrafficTarget::pinned("s-1", 70),
            TrafficTarget::pinned("s-2", 30),
        ]);
        assert_eq!(split.serving_revision().as_deref(), Some("s-1"));
        assert!(!split.serves_fully("s-1"));
        assert!(svc(vec![TrafficTarget::pinned("s-1", 100)]).serves_fully("s-1"));
        assert_eq!(short_name("projects/p/locations/l/services/s"), "s");
    }

    fn tagged(revision: Option<&str>, latest: bool, percent: u32, tag: &str) -> TrafficTarget {
        TrafficTarget {
            revision: revision.map(String::from),
            latest,
            percent,
            tag: Some(tag.into()),
        }
    }

    #[test]
    fn route_all_keeps_the_tags_of_others_at_zero() {
        let current = vec![
            TrafficTarget::latest(90),
            tagged(Some("s-2"), false, 10, "canary"),
            tagged(None, true, 0, "head"),
            tagged(Some("s-1"), false, 0, "stable"),
        ];
        assert_eq!(
            route_all(&current, Route::Revision("s-1")),
            vec![
                tagged(Some("s-1"), false, 100, "stable"),
                tagged(Some("s-2"), false, 0, "canary"),
                tagged(None, true, 0, "head"),
            ]
        );
        assert_eq!(
            route_all(&current, Route::Latest),
            vec![
                tagged(None, true, 100, "head"),
                tagged(Some("s-2"), false, 0, "canary"),
                tagged(Some("s-1"), false, 0, "stable"),
            ]
        );
        assert_eq!(
            route_all(&[TrafficTarget::latest(100)], Route::Revision("s-1")),
            vec![TrafficTarget::pinned("s-1", 100)]
        );
    }

    fn patch_for(base: &ServiceState) -> ServicePatch {
        ServicePatch {
            etag: base.etag.clone(),
            expect: Some(PlannedBase::of(base)),
            traffic: Some(vec![TrafficTarget::pinned("s-1", 100)]),
            env: None,
            annotations: [(
                "rearguard.dev/rolled-back-by".to_string(),
                "run/1/ab".to_string(),
            )]
            .into(),
        }
    }

    #[test]
    fn a_lost_patch_is_ours_untouched_or_someone_elses() {
        let base = svc(vec![TrafficTarget::latest(100)]);
        let patch = patch_for(&base);
        // Applied: our annotation and our traffic, whatever the generation.
        let mut ours = base.clone();
        ours.generation = 2;
        ours.etag = "e2".into();
        ours.traffic = vec![TrafficTarget::pinned("s-1", 100)];
        ours.annotations = patch.annotations.clone();
        assert_eq!(after_lost_patch(&patch, &ours), LostPatch::Applied);
        // Not applied: as planned, only the etag moved (an operation settled).
        let mut untouched = base.clone();
        untouched.etag = "e3".into();
        assert_eq!(
            after_lost_patch(&patch, &untouched),
            LostPatch::NotApplied { etag: "e3".into() }
        );
        // Another rearguard made the same traffic change: not ours.
        let mut other = ours.clone();
        other.annotations = [(
            "rearguard.dev/rolled-back-by".to_string(),
            "run/1/cd".to_string(),
        )]
        .into();
        assert!(matches!(
            after_lost_patch(&patch, &other),
            LostPatch::ChangedByOther(why) if why.contains("generation")
        ));
        // A human split the traffic without a new generation in our view.
        let mut split = base.clone();
        split.traffic = vec![TrafficTarget::latest(50), TrafficTarget::pinned("s-1", 50)];
        assert!(matches!(
            after_lost_patch(&patch, &split),
            LostPatch::ChangedByOther(why) if why.contains("s-1=50%")
        ));
    }

    #[test]
    fn the_plan_check_names_what_differs() {
        let base = svc(vec![TrafficTarget::latest(100)]);
        let plan = PlannedBase::of(&base);
        assert_eq!(plan.differs(&base), None);
        let mut newer = base.clone();
        newer.generation = 5;
        assert_eq!(
            plan.differs(&newer).as_deref(),
            Some("its generation is 5 (planned against 1)")
        );
        // Which outcomes leave the request's fate unknown.
        assert!(CloudRunError::Transport("reset".into()).outcome_unknown());
        for (code, unknown) in [
            (503, true),
            (502, true),
            (429, true),
            (403, false),
            (409, false),
        ] {
            let e = CloudRunError::Api {
                code,
                status: String::new(),
                message: String::new(),
                denied_permission: None,
            };
            assert_eq!(e.outcome_unknown(), unknown, "{code}");
        }
        assert!(!CloudRunError::StaleEtag(String::new()).outcome_unknown());
    }

    #[test]
    fn a_403_names_the_missing_role() {
        let denied = |message: &str| CloudRunError::Api {
            code: 403,
            status: "PERMISSION_DENIED".into(),
            message: message.into(),
            denied_permission: None,
        };
        let act_as = missing_role(
            &denied("Permission 'iam.serviceaccounts.actAs' denied on service account rt@p.iam.gserviceaccount.com (or it may not exist)."),
            Some("rt@p.iam.gserviceaccount.com"),
        );
        assert!(act_as.contains("roles/iam.serviceAccountUser"), "{act_as}");
        assert!(act_as.contains("rt@p.iam.gserviceaccount.com"), "{act_as}");
        assert!(!act_as.contains("roles/run.developer"), "{act_as}");
        let update = missing_role(
            &denied("Permission 'run.services.update' denied on resource 'projects/p/locations/l/services/s' (or resource may not exist)."),
            None,
        );
        assert!(update.contains("roles/run.developer"), "{update}");
        assert!(!update.contains("serviceAccountUser"), "{update}");
        // The permission in the error's ErrorInfo wins over a message that
        // names none.
        let structured = missing_role(
            &CloudRunError::Api {
                code: 403,
                status: "PERMISSION_DENIED".into(),
                message: "The caller does not have permission".into(),
                denied_permission: Some("iam.serviceaccounts.actAs".into()),
            },
            Some("rt@p.iam.gserviceaccount.com"),
        );
        assert!(
            structured.contains("roles/iam.serviceAccountUser"),
            "{structured}"
        );
        assert!(!structured.contains("roles/run.developer"), "{structured}");
        let unknown = missing_role(&denied("The caller does not have permission"), None);
        assert!(
            unknown.contains("roles/run.developer")
                && unknown.contains("roles/iam.serviceAccountUser")
                && unknown.contains("Compute Engine default"),
            "{unknown}"
        );
    }
}
