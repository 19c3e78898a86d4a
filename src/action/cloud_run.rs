//! What actions need from Cloud Run, as a small trait: the typed client in
//! `src/gcp/` implements it for real, the fake in [`super::fake`] and the sim
//! for tests. Revision names here are short (`svc-00042-abc`), as in `traffic`.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::clock::TimestampMs;
use crate::dispatch::notification::BoxFuture;

/// One entry of `traffic` or `trafficStatuses`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TrafficTarget {
    /// Set for a pinned revision; in `trafficStatuses` also for `latest`.
    pub revision: Option<String>,
    /// `TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST`.
    pub latest: bool,
    pub percent: u32,
}

impl TrafficTarget {
    pub fn pinned(revision: &str, percent: u32) -> Self {
        Self {
            revision: Some(revision.to_string()),
            latest: false,
            percent,
        }
    }
    pub fn latest(percent: u32) -> Self {
        Self {
            revision: None,
            latest: true,
            percent,
        }
    }
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
    /// Environment of the template's first container (plain values only).
    pub env: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
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

/// A change to a service, sent with the etag it was planned against.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServicePatch {
    pub etag: String,
    /// New `traffic`, when it changes.
    pub traffic: Option<Vec<TrafficTarget>>,
    /// Env vars to set on the template's first container (others are kept).
    pub env: Option<BTreeMap<String, String>>,
    /// Annotations to add to the service (others are kept).
    pub annotations: BTreeMap<String, String>,
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
    },
    #[error("cannot reach the Cloud Run API: {0}")]
    Transport(String),
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
}
