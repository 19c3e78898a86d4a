//! `cloud_run:` entries: `services.get` and `revisions.list` on an interval,
//! written as `cloud_run_*` series, and a typed view of each service (what
//! serves traffic, the traffic history as seen, the revisions with their
//! conditions) kept in memory for the rollback code and in the store so a
//! restart knows what was serving before.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::clock::TimestampMs;
use crate::config::gcp::CloudRunConfig;
use crate::gcp::run::{short_name, Condition, Revision, Service, TrafficTargetAllocationType};
use crate::gcp::{GcpContext, GcpError};
use crate::labels::{Labels, Sample, METRIC_NAME};
use crate::source::health::kind;

pub use super::poll::GcpSourceDeps;
use super::poll::{PolledSource, SourcePolls};

/// Traffic changes kept per service.
pub const TRAFFIC_HISTORY: usize = 50;
/// Revisions exported and kept in the view (newest first).
pub const REVISIONS_KEPT: usize = 30;

/// One share of traffic as seen (`trafficStatuses`; `LATEST` resolved to a revision).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TrafficShare {
    pub revision: String,
    pub percent: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The share follows the latest ready revision.
    #[serde(default)]
    pub latest: bool,
}

/// The traffic split from `at_ms` on, as rearguard saw it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrafficChange {
    pub at_ms: TimestampMs,
    pub traffic: Vec<TrafficShare>,
}

/// A revision as rearguard saw it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RevisionView {
    /// Short name (`backend-00012-abc`).
    pub name: String,
    pub create_time: Option<DateTime<Utc>>,
    pub generation: Option<i64>,
    pub ready: bool,
    /// The Ready condition failed (e.g. the container never started).
    pub failed: bool,
    pub conditions: Vec<Condition>,
}

/// What rearguard knows about one Cloud Run service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceView {
    /// `projects/P/locations/L/services/S`
    pub name: String,
    pub etag: Option<String>,
    pub generation: Option<i64>,
    pub observed_generation: Option<i64>,
    pub ready: bool,
    pub reconciling: bool,
    pub latest_ready_revision: Option<String>,
    pub latest_created_revision: Option<String>,
    /// Where traffic goes now (revisions with a share > 0).
    pub serving: Vec<TrafficShare>,
    /// Every split seen, oldest first (at most [`TRAFFIC_HISTORY`]); the last is `serving`.
    pub traffic_history: Vec<TrafficChange>,
    /// Newest first (at most [`REVISIONS_KEPT`]).
    pub revisions: Vec<RevisionView>,
    /// When this view was read.
    pub seen_ms: TimestampMs,
    /// The service exactly as read (for a read-modify-write; re-read before patching).
    pub service: Service,
}

impl ServiceView {
    /// The split before the current one, as seen (what to roll back to).
    pub fn previous_traffic(&self) -> Option<&TrafficChange> {
        let n = self.traffic_history.len();
        (n >= 2).then(|| &self.traffic_history[n - 2])
    }

    pub fn revision(&self, short: &str) -> Option<&RevisionView> {
        self.revisions.iter().find(|r| r.name == short)
    }

    /// Revisions that became ready, newest first, except those serving now:
    /// candidates to roll back to.
    pub fn ready_revisions_not_serving(&self) -> Vec<&RevisionView> {
        let serving: BTreeSet<&str> = self.serving.iter().map(|s| s.revision.as_str()).collect();
        self.revisions
            .iter()
            .filter(|r| r.ready && !serving.contains(r.name.as_str()))
            .collect()
    }
}

/// The current view of every watched service, shared with the rollback code. Cheap to clone.
#[derive(Clone, Default)]
pub struct CloudRunViews {
    inner: Arc<RwLock<HashMap<String, ServiceView>>>,
}

impl CloudRunViews {
    /// The view of `service` (full name `projects/P/locations/L/services/S`).
    pub fn get(&self, service: &str) -> Option<ServiceView> {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(service)
            .cloned()
    }

    pub fn all(&self) -> Vec<ServiceView> {
        let mut v: Vec<ServiceView> = self
            .inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    fn set(&self, view: ServiceView) {
        self.inner
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(view.name.clone(), view);
    }

    fn retain(&self, keep: &[String]) {
        self.inner
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| keep.contains(k));
    }
}

/// The traffic split of a service as seen (statuses; the asked-for split when there are none yet).
pub fn traffic_shares(svc: &Service) -> Vec<TrafficShare> {
    let latest = svc
        .latest_ready_revision
        .as_deref()
        .map(short_name)
        .map(str::to_string);
    let mut out: BTreeMap<(String, Option<String>), TrafficShare> = BTreeMap::new();
    let mut add = |rev: Option<&String>,
                   ty: TrafficTargetAllocationType,
                   percent: i32,
                   tag: Option<&String>| {
        let is_latest = ty == TrafficTargetAllocationType::Latest;
        let revision = match rev.filter(|r| !r.is_empty()) {
            Some(r) => short_name(r).to_string(),
            None if is_latest => match &latest {
                Some(l) => l.clone(),
                None => return,
            },
            None => return,
        };
        let tag = tag.filter(|t| !t.is_empty()).cloned();
        let e = out
            .entry((revision.clone(), tag.clone()))
            .or_insert(TrafficShare {
                revision,
                percent: 0,
                tag,
                latest: is_latest,
            });
        e.percent += percent;
    };
    if svc.traffic_statuses.is_empty() {
        for t in &svc.traffic {
            add(t.revision.as_ref(), t.type_, t.percent, t.tag.as_ref());
        }
    } else {
        for t in &svc.traffic_statuses {
            add(t.revision.as_ref(), t.type_, t.percent, t.tag.as_ref());
        }
    }
    out.into_values().collect()
}

fn revision_view(r: &Revision) -> RevisionView {
    RevisionView {
        name: r.short_name().to_string(),
        create_time: r.create_time,
        generation: r.generation,
        ready: r.is_ready(),
        failed: r.has_failed(),
        conditions: r.conditions.clone(),
    }
}

/// Builds the new view from what was read and the previous view.
pub fn build_view(
    svc: Service,
    revisions: &[Revision],
    previous: Option<&ServiceView>,
    now: TimestampMs,
) -> ServiceView {
    let all = traffic_shares(&svc);
    let serving: Vec<TrafficShare> = all.into_iter().filter(|s| s.percent > 0).collect();
    let mut history = previous
        .map(|p| p.traffic_history.clone())
        .unwrap_or_default();
    let changed = history
        .last()
        .is_none_or(|last| strip_latest(&last.traffic) != strip_latest(&serving));
    if changed && !serving.is_empty() {
        history.push(TrafficChange {
            at_ms: now,
            traffic: serving.clone(),
        });
        if history.len() > TRAFFIC_HISTORY {
            let drop = history.len() - TRAFFIC_HISTORY;
            history.drain(..drop);
        }
    }
    let mut revs: Vec<&Revision> = revisions.iter().collect();
    revs.sort_by(|a, b| {
        b.create_time
            .cmp(&a.create_time)
            .then_with(|| b.name.cmp(&a.name))
    });
    ServiceView {
        name: svc.name.clone(),
        etag: svc.etag.clone(),
        generation: svc.generation,
        observed_generation: svc.observed_generation,
        ready: svc.is_ready(),
        reconciling: svc.reconciling,
        latest_ready_revision: svc
            .latest_ready_revision
            .as_deref()
            .map(short_name)
            .map(str::to_string),
        latest_created_revision: svc
            .latest_created_revision
            .as_deref()
            .map(short_name)
            .map(str::to_string),
        serving,
        traffic_history: history,
        revisions: revs
            .into_iter()
            .take(REVISIONS_KEPT)
            .map(revision_view)
            .collect(),
        seen_ms: now,
        service: svc,
    }
}

fn strip_latest(t: &[TrafficShare]) -> Vec<(String, i32, Option<String>)> {
    t.iter()
        .map(|s| (s.revision.clone(), s.percent, s.tag.clone()))
        .collect()
}

/// The `cloud_run_*` samples of a view.
pub fn view_samples(view: &ServiceView, now: TimestampMs) -> Vec<Sample> {
    let service = short_name(&view.name);
    let l = |name: &str, extra: &[(&str, &str)]| {
        let mut pairs: Vec<(&str, &str)> = vec![(METRIC_NAME, name), ("service", service)];
        pairs.extend_from_slice(extra);
        Labels::from_pairs(pairs)
    };
    let b = |v: bool| if v { 1.0 } else { 0.0 };
    let mut out = vec![
        Sample {
            labels: l("cloud_run_service_ready", &[]),
            timestamp_ms: now,
            value: b(view.ready),
        },
        Sample {
            labels: l("cloud_run_service_reconciling", &[]),
            timestamp_ms: now,
            value: b(view.reconciling),
        },
    ];
    for s in &view.serving {
        out.push(Sample {
            labels: l(
                "cloud_run_traffic_percent",
                &[
                    ("revision", &s.revision),
                    ("tag", s.tag.as_deref().unwrap_or("")),
                ],
            ),
            timestamp_ms: now,
            value: s.percent as f64,
        });
    }
    for r in &view.revisions {
        out.push(Sample {
            labels: l("cloud_run_revision_ready", &[("revision", &r.name)]),
            timestamp_ms: now,
            value: b(r.ready),
        });
        if let Some(t) = r.create_time {
            out.push(Sample {
                labels: l(
                    "cloud_run_revision_created_timestamp_seconds",
                    &[("revision", &r.name)],
                ),
                timestamp_ms: now,
                value: t.timestamp_millis() as f64 / 1000.0,
            });
        }
    }
    if let Some(latest) = &view.latest_created_revision {
        let ready = view.revision(latest).map(|r| r.ready).unwrap_or(false)
            || view.latest_ready_revision.as_deref() == Some(latest.as_str());
        out.push(Sample {
            labels: l(
                "cloud_run_latest_created_revision_ready",
                &[("revision", latest)],
            ),
            timestamp_ms: now,
            value: b(ready),
        });
    }
    out
}

/// One `cloud_run:` entry.
pub struct CloudRunSource {
    cfg: CloudRunConfig,
    ctx: GcpContext,
    deps: GcpSourceDeps,
    views: CloudRunViews,
    previous: Option<ServiceView>,
    last_series: BTreeSet<Labels>,
}

impl CloudRunSource {
    /// Starts from the view kept in the store (what was serving before a restart).
    pub async fn load(
        cfg: CloudRunConfig,
        ctx: GcpContext,
        deps: GcpSourceDeps,
        views: CloudRunViews,
    ) -> Self {
        let previous = match deps.store.cloud_run_view(&cfg.service).await {
            Ok(Some((_, text))) => match serde_json::from_str::<ServiceView>(&text) {
                Ok(v) => Some(v),
                Err(e) => {
                    tracing::warn!(service = %cfg.service, error = %e, "stored cloud_run view unreadable");
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(service = %cfg.service, error = %e, "cannot read the stored cloud_run view");
                None
            }
        };
        if let Some(v) = &previous {
            views.set(v.clone());
        }
        Self {
            cfg,
            ctx,
            deps,
            views,
            previous,
            last_series: BTreeSet::new(),
        }
    }

    /// One poll: reads the service and its revisions, updates the view (memory
    /// and store), writes the series and marks vanished ones stale.
    pub async fn poll_once(&mut self) -> Result<ServiceView, GcpError> {
        let svc = self.ctx.run.get_service(&self.cfg.service).await?;
        let revisions = self.ctx.run.list_revisions(&self.cfg.service).await?;
        let now = self.deps.clock.now_ms();
        let mut view = build_view(svc, &revisions, self.previous.as_ref(), now);
        // The configured name is the key even if Google returns another spelling.
        view.name = self.cfg.service.clone();
        match serde_json::to_string(&view) {
            Ok(text) => {
                if let Err(e) = self
                    .deps
                    .store
                    .put_cloud_run_view(&view.name, now, text)
                    .await
                {
                    tracing::warn!(service = %view.name, error = %e, "cannot persist the cloud_run view");
                }
            }
            Err(e) => {
                tracing::warn!(service = %view.name, error = %e, "cannot encode the cloud_run view")
            }
        }
        if self
            .previous
            .as_ref()
            .is_some_and(|p| p.serving != view.serving)
        {
            tracing::info!(service = %view.name, serving = ?view.serving, "cloud run traffic changed");
        }
        self.views.set(view.clone());
        let samples = view_samples(&view, now);
        let current: BTreeSet<Labels> = samples.iter().map(|s| s.labels.clone()).collect();
        let gone: Vec<Labels> = self.last_series.difference(&current).cloned().collect();
        self.deps.sink.append(&samples);
        if !gone.is_empty() {
            self.deps.sink.mark_stale(&gone, now);
        }
        self.last_series = current;
        self.previous = Some(view.clone());
        Ok(view)
    }
}

/// Runs every `cloud_run:` entry and owns the shared views; `apply` changes
/// the set on reload.
pub type CloudRunManager = SourcePolls<CloudRunSource>;

impl CloudRunManager {
    /// The views accessor for the rollback code and the API.
    pub fn views(&self) -> CloudRunViews {
        self.shared().clone()
    }

    /// The Cloud Run client (same credentials, retries and metrics), for rollbacks.
    pub fn client(&self) -> crate::gcp::CloudRunClient {
        self.context().run.clone()
    }
}

impl PolledSource for CloudRunSource {
    type Config = CloudRunConfig;
    type Shared = CloudRunViews;
    type Polled = ServiceView;
    const KIND: &'static str = kind::CLOUD_RUN;

    /// A service is its own name.
    fn name(cfg: &CloudRunConfig) -> &str {
        &cfg.service
    }

    fn interval(cfg: &CloudRunConfig) -> Duration {
        cfg.interval.into()
    }

    async fn load(
        cfg: CloudRunConfig,
        ctx: GcpContext,
        deps: GcpSourceDeps,
        views: CloudRunViews,
    ) -> Self {
        CloudRunSource::load(cfg, ctx, deps, views).await
    }

    async fn poll_once(&mut self) -> Result<ServiceView, GcpError> {
        CloudRunSource::poll_once(self).await
    }

    fn retain(views: &CloudRunViews, names: &[String]) {
        views.retain(names);
    }
}
