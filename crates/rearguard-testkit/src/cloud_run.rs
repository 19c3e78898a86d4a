//! An in-memory Cloud Run for action tests: etag checks,
//! operations that complete after a delay, a call log, and fault injection.
//! (The HTTP fake in `crates/rearguard-sim` serves the same role over the wire.)

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rearguard::action::cloud_run::{
    CloudRunApi, CloudRunError, OperationState, RevisionState, ServicePatch, ServiceState,
    TrafficTarget,
};
use rearguard::clock::{Clock, TimestampMs};
use rearguard::dispatch::notification::BoxFuture;

#[derive(Clone, Debug, PartialEq)]
pub enum FakeCall {
    GetService(String),
    ListRevisions(String),
    /// A patch as received (before the etag check): service, etag, patch.
    Patch(String, ServicePatch),
    GetOperation(String),
}

struct Op {
    done_at_ms: TimestampMs,
    service: String,
    /// The revision an env change creates (Ready once the operation is done).
    new_revision: Option<String>,
    error: Option<String>,
    applied: bool,
}

struct Svc {
    state: ServiceState,
    revisions: Vec<RevisionState>,
    /// Revisions that never become Ready when created by an env change.
    env_revisions_fail: bool,
}

#[derive(Default)]
struct Inner {
    services: BTreeMap<String, Svc>,
    ops: BTreeMap<String, Op>,
    calls: Vec<FakeCall>,
    next_op: u64,
    etag_seq: u64,
    /// Errors returned by the next patches, in order.
    patch_faults: Vec<CloudRunError>,
}

/// A fake Cloud Run Admin API; cheap to clone (shared state).
#[derive(Clone)]
pub struct FakeCloudRun {
    clock: Clock,
    inner: Arc<Mutex<Inner>>,
    op_delay: Duration,
    /// While set, patches wait here before they are applied (a held request).
    gate: Arc<tokio::sync::Mutex<()>>,
}

impl FakeCloudRun {
    /// A fake whose operations complete `op_delay` after the patch.
    pub fn new(clock: Clock, op_delay: Duration) -> Self {
        Self {
            clock,
            inner: Arc::default(),
            op_delay,
            gate: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates `service` serving `revision` (Ready, created at `created_ms`).
    pub fn add_service(&self, service: &str, revision: &str, created_ms: TimestampMs) {
        let mut inner = self.lock();
        inner.etag_seq += 1;
        let etag = format!("etag-{}", inner.etag_seq);
        inner.services.insert(
            service.to_string(),
            Svc {
                state: ServiceState {
                    name: service.to_string(),
                    etag,
                    generation: 1,
                    observed_generation: 1,
                    latest_ready_revision: Some(revision.to_string()),
                    latest_created_revision: Some(revision.to_string()),
                    traffic: vec![TrafficTarget::latest(100)],
                    traffic_statuses: vec![TrafficTarget {
                        revision: Some(revision.to_string()),
                        latest: true,
                        percent: 100,
                        tag: None,
                    }],
                    env: BTreeMap::new(),
                    annotations: BTreeMap::new(),
                    runtime_service_account: None,
                },
                revisions: vec![RevisionState {
                    name: revision.to_string(),
                    create_time_ms: created_ms,
                    ready: true,
                }],
                env_revisions_fail: false,
            },
        );
    }

    /// A deploy: a new revision that takes all traffic at once (when `ready`).
    pub fn deploy(&self, service: &str, revision: &str, ready: bool) {
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        inner.etag_seq += 1;
        let etag = format!("etag-{}", inner.etag_seq);
        if let Some(s) = inner.services.get_mut(service) {
            s.revisions.push(RevisionState {
                name: revision.to_string(),
                create_time_ms: now,
                ready,
            });
            s.state.etag = etag;
            s.state.generation += 1;
            s.state.observed_generation = s.state.generation;
            s.state.latest_created_revision = Some(revision.to_string());
            if ready {
                s.state.latest_ready_revision = Some(revision.to_string());
                s.state.traffic = vec![TrafficTarget::latest(100)];
                s.state.traffic_statuses = vec![TrafficTarget {
                    revision: Some(revision.to_string()),
                    latest: true,
                    percent: 100,
                    tag: None,
                }];
            }
        }
    }

    /// Marks a revision not Ready (e.g. it was deleted or failed later).
    pub fn set_revision_ready(&self, service: &str, revision: &str, ready: bool) {
        let mut inner = self.lock();
        if let Some(s) = inner.services.get_mut(service) {
            for r in s.revisions.iter_mut().filter(|r| r.name == revision) {
                r.ready = ready;
            }
        }
    }

    /// Revisions created by env changes on `service` never become Ready.
    pub fn fail_env_revisions(&self, service: &str) {
        if let Some(s) = self.lock().services.get_mut(service) {
            s.env_revisions_fail = true;
        }
    }

    /// The next patch answers `err` (queued; one per patch).
    pub fn fail_next_patch(&self, err: CloudRunError) {
        self.lock().patch_faults.push(err);
    }

    /// Holds every patch until the guard is dropped: the request is received
    /// (and logged) but not applied.
    pub async fn hold_patches(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.gate.clone().lock_owned().await
    }

    pub fn calls(&self) -> Vec<FakeCall> {
        self.lock().calls.clone()
    }

    /// Patches that were accepted (passed the etag check).
    pub fn accepted_patches(&self) -> usize {
        self.lock().ops.len()
    }

    /// The service as it is now (completing operations whose time has come).
    pub fn service(&self, service: &str) -> Option<ServiceState> {
        let mut inner = self.lock();
        self.settle(&mut inner);
        inner.services.get(service).map(|s| s.state.clone())
    }

    fn settle(&self, inner: &mut Inner) {
        let now = self.clock.now_ms();
        let due: Vec<String> = inner
            .ops
            .iter()
            .filter(|(_, o)| !o.applied && o.done_at_ms <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for name in due {
            let Some(op) = inner.ops.get_mut(&name) else {
                continue;
            };
            op.applied = true;
            let (service, new_rev) = (op.service.clone(), op.new_revision.clone());
            let Some(s) = inner.services.get_mut(&service) else {
                continue;
            };
            s.state.observed_generation = s.state.generation;
            let mut failed = false;
            if let Some(rev) = new_rev {
                let ready = !s.env_revisions_fail;
                if let Some(r) = s.revisions.iter_mut().find(|r| r.name == rev) {
                    r.ready = ready;
                }
                if ready {
                    s.state.latest_ready_revision = Some(rev);
                } else {
                    failed = true;
                }
            }
            if failed {
                if let Some(op) = inner.ops.get_mut(&name) {
                    op.error = Some("revision failed to become ready".into());
                }
                continue;
            }
            let latest_ready = s.state.latest_ready_revision.clone();
            s.state.traffic_statuses = s
                .state
                .traffic
                .iter()
                .map(|t| TrafficTarget {
                    revision: t.revision.clone().or_else(|| latest_ready.clone()),
                    latest: t.latest,
                    percent: t.percent,
                    tag: t.tag.clone(),
                })
                .collect();
        }
    }
}

impl CloudRunApi for FakeCloudRun {
    fn get_service<'a>(
        &'a self,
        service: &'a str,
    ) -> BoxFuture<'a, Result<ServiceState, CloudRunError>> {
        Box::pin(async move {
            let mut inner = self.lock();
            inner.calls.push(FakeCall::GetService(service.to_string()));
            self.settle(&mut inner);
            inner
                .services
                .get(service)
                .map(|s| s.state.clone())
                .ok_or_else(|| CloudRunError::NotFound(service.to_string()))
        })
    }

    fn list_revisions<'a>(
        &'a self,
        service: &'a str,
    ) -> BoxFuture<'a, Result<Vec<RevisionState>, CloudRunError>> {
        Box::pin(async move {
            let mut inner = self.lock();
            inner
                .calls
                .push(FakeCall::ListRevisions(service.to_string()));
            self.settle(&mut inner);
            inner
                .services
                .get(service)
                .map(|s| s.revisions.clone())
                .ok_or_else(|| CloudRunError::NotFound(service.to_string()))
        })
    }

    fn patch_service<'a>(
        &'a self,
        service: &'a str,
        patch: ServicePatch,
    ) -> BoxFuture<'a, Result<OperationState, CloudRunError>> {
        Box::pin(async move {
            self.lock()
                .calls
                .push(FakeCall::Patch(service.to_string(), patch.clone()));
            let _held = self.gate.lock().await;
            let now = self.clock.now_ms();
            let mut inner = self.lock();
            if !inner.patch_faults.is_empty() {
                return Err(inner.patch_faults.remove(0));
            }
            self.settle(&mut inner);
            inner.etag_seq += 1;
            let etag = format!("etag-{}", inner.etag_seq);
            inner.next_op += 1;
            let op_name = format!("{service}/operations/op-{}", inner.next_op);
            let Some(s) = inner.services.get_mut(service) else {
                return Err(CloudRunError::NotFound(service.to_string()));
            };
            // As the real adapter: the plan is checked on a fresh read first.
            if let Some(why) = patch.expect.as_ref().and_then(|e| e.differs(&s.state)) {
                return Err(CloudRunError::Changed(why));
            }
            if s.state.etag != patch.etag {
                return Err(CloudRunError::StaleEtag(format!(
                    "etag {} does not match the current etag",
                    patch.etag
                )));
            }
            s.state.etag = etag;
            s.state.generation += 1;
            s.state.annotations.extend(patch.annotations.clone());
            let mut new_revision = None;
            if let Some(env) = &patch.env {
                s.state.env.extend(env.clone());
                let rev = format!(
                    "{}-{:05}",
                    rearguard::action::cloud_run::short_name(service),
                    s.revisions.len() + 1
                );
                s.revisions.push(RevisionState {
                    name: rev.clone(),
                    create_time_ms: now,
                    ready: false,
                });
                s.state.latest_created_revision = Some(rev.clone());
                new_revision = Some(rev);
            }
            if let Some(t) = &patch.traffic {
                s.state.traffic = t.clone();
            }
            inner.ops.insert(
                op_name.clone(),
                Op {
                    done_at_ms: now + self.op_delay.as_millis() as i64,
                    service: service.to_string(),
                    new_revision,
                    error: None,
                    applied: false,
                },
            );
            self.settle(&mut inner);
            Ok(OperationState {
                name: op_name,
                done: false,
                error: None,
            })
        })
    }

    fn get_operation<'a>(
        &'a self,
        operation: &'a str,
    ) -> BoxFuture<'a, Result<OperationState, CloudRunError>> {
        Box::pin(async move {
            let mut inner = self.lock();
            inner
                .calls
                .push(FakeCall::GetOperation(operation.to_string()));
            self.settle(&mut inner);
            let op = inner
                .ops
                .get(operation)
                .ok_or_else(|| CloudRunError::NotFound(operation.to_string()))?;
            Ok(OperationState {
                name: operation.to_string(),
                done: op.applied,
                error: op.error.clone(),
            })
        })
    }
}
