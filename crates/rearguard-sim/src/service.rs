//! A simulated Cloud Run service: real HTTP on `127.0.0.1:0`, routed to a
//! revision by the fake control plane's traffic split, each revision behaving
//! as its [`RevisionBehaviour`] says (health status, error ratio, latency).
//! What it serves goes into the fake's Monitoring (`request_count` by
//! `response_code_class`, `request_latencies`, memory utilization) and its
//! errors into the fake's Logging, so moving traffic back to a good revision
//! visibly heals every signal.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::logging::LogEntrySpec;
use super::monitoring::{BucketOptions, Distribution, MetricKind, PointValue, SeriesSpec};
use super::run::RevisionBehaviour;
use super::server::FakeGcp;
use super::util::ApiError;
use rearguard_clock::TimestampMs;

pub const REQUEST_COUNT: &str = "run.googleapis.com/request_count";
pub const REQUEST_LATENCIES: &str = "run.googleapis.com/request_latencies";
pub const MEMORY_UTILIZATIONS: &str = "run.googleapis.com/container/memory/utilizations";

/// Latency buckets (ms): exponential, 1 ms × 2^i.
pub fn latency_buckets() -> BucketOptions {
    BucketOptions::Exponential {
        num_finite_buckets: 20,
        growth_factor: 2.0,
        scale: 1.0,
    }
}

/// Memory utilization buckets: 0..1 in steps of 0.05.
pub fn memory_buckets() -> BucketOptions {
    BucketOptions::Linear {
        num_finite_buckets: 20,
        width: 0.05,
        offset: 0.0,
    }
}

#[derive(Clone, Debug)]
pub struct SimServiceOptions {
    /// Requests per second the service serves on its own (simulated users,
    /// recorded like real requests but not sent over HTTP). 0 = only real ones.
    pub synthetic_rps: f64,
    /// How often points are written (Cloud Run reports every 60 s).
    pub report_interval: Duration,
}

impl Default for SimServiceOptions {
    fn default() -> Self {
        Self {
            synthetic_rps: 5.0,
            report_interval: Duration::from_secs(60),
        }
    }
}

#[derive(Default)]
struct RevisionTally {
    /// response code → count
    codes: BTreeMap<u16, i64>,
    /// response code class → latencies (ms)
    latencies: BTreeMap<&'static str, Vec<f64>>,
    served: u64,
    errors_so_far: u64,
}

struct Inner {
    fake: FakeGcp,
    service: String,
    project: String,
    location: String,
    short: String,
    /// revision short name → tally since the last report
    tallies: Mutex<BTreeMap<String, RevisionTally>>,
    /// Lifetime counters per revision, for the error-ratio sequence.
    sequence: Mutex<BTreeMap<String, (u64, u64)>>,
    round_robin: Mutex<u64>,
}

struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// The running simulated service. Stops when dropped.
pub struct SimService {
    inner: Arc<Inner>,
    addr: SocketAddr,
    _tasks: Tasks,
}

fn class_of(code: u16) -> &'static str {
    match code {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

impl Inner {
    /// The revision (short name) that serves the next request, by traffic split.
    fn pick(&self) -> Option<(String, RevisionBehaviour)> {
        let serving = self.fake.serving(&self.service);
        let total: i64 = serving.iter().map(|(_, p)| *p).sum();
        if total <= 0 {
            return None;
        }
        let n = {
            let mut rr = self.round_robin.lock().unwrap_or_else(|e| e.into_inner());
            *rr += 1;
            // Spread consecutive requests over the split (37 is coprime with 100).
            ((*rr * 37) % total as u64) as i64
        };
        let mut acc = 0;
        for (rev, p) in serving {
            acc += p;
            if n < acc {
                let b = self.fake.revision(&rev)?.behaviour;
                let short = rev.rsplit('/').next().unwrap_or(&rev).to_string();
                return Some((short, b));
            }
        }
        None
    }

    /// Decides the status of one ordinary request to `revision` (deterministic
    /// error ratio: the n-th request fails when floor(n·r) steps up).
    fn status_for(&self, revision: &str, b: &RevisionBehaviour) -> u16 {
        let mut seq = self.sequence.lock().unwrap_or_else(|e| e.into_inner());
        let (n, _) = seq.entry(revision.to_string()).or_default();
        *n += 1;
        let r = b.error_ratio.clamp(0.0, 1.0);
        let failed = ((*n as f64) * r).floor() > ((*n as f64 - 1.0) * r).floor();
        if failed {
            500
        } else {
            200
        }
    }

    fn record(&self, revision: &str, code: u16, latency_ms: f64, path: &str) {
        {
            let mut t = self.tallies.lock().unwrap_or_else(|e| e.into_inner());
            let tally = t.entry(revision.to_string()).or_default();
            *tally.codes.entry(code).or_default() += 1;
            tally
                .latencies
                .entry(class_of(code))
                .or_default()
                .push(latency_ms);
            tally.served += 1;
            if code >= 500 {
                tally.errors_so_far += 1;
            }
        }
        if code >= 500 {
            let now = self.fake.now_ms();
            let mut e = LogEntrySpec::cloud_run(
                &self.project,
                &self.location,
                &self.short,
                revision,
                now,
                "ERROR",
                "",
            )
            .with_json(json!({
                "message": format!("request to {path} failed: upstream sandbox returned an error"),
                "status": code,
            }));
            e.http_request = Some(json!({
                "requestMethod": "GET",
                "requestUrl": path,
                "status": code,
                "latency": format!("{:.3}s", latency_ms / 1000.0),
            }));
            if let Err(err) = self.fake.add_log_entry(e) {
                tracing::debug!(error = ?err, "simulated service could not write a log entry");
            }
        }
    }

    /// Writes the tallies since the last report as points ending at `end`.
    fn report(&self, start: TimestampMs, end: TimestampMs) {
        let tallies = std::mem::take(&mut *self.tallies.lock().unwrap_or_else(|e| e.into_inner()));
        let mut revisions: Vec<String> = tallies.keys().cloned().collect();
        for (rev, _) in self.fake.serving(&self.service) {
            let short = rev.rsplit('/').next().unwrap_or(&rev).to_string();
            if !revisions.contains(&short) {
                revisions.push(short);
            }
        }
        for rev in revisions {
            let spec = |metric: &str| {
                SeriesSpec::cloud_run(
                    metric,
                    MetricKind::Delta,
                    &self.project,
                    &self.location,
                    &self.short,
                    &rev,
                )
            };
            if let Some(t) = tallies.get(&rev) {
                let mut by_class: BTreeMap<&'static str, i64> = BTreeMap::new();
                for (code, n) in &t.codes {
                    *by_class.entry(class_of(*code)).or_default() += n;
                    let s = spec(REQUEST_COUNT)
                        .metric_label("response_code", &code.to_string())
                        .metric_label("response_code_class", class_of(*code))
                        .metric_label("route", "default")
                        .unit("1");
                    self.write(&s, start, end, PointValue::Int64(*n));
                }
                for (class, lats) in &t.latencies {
                    let s = spec(REQUEST_LATENCIES)
                        .metric_label("response_code_class", class)
                        .unit("ms");
                    self.write(
                        &s,
                        start,
                        end,
                        PointValue::Distribution(Distribution::from_values(
                            latency_buckets(),
                            lats,
                        )),
                    );
                }
            }
            let mem = self
                .fake
                .revision(&format!("{}/revisions/{rev}", self.service))
                .map(|r| r.behaviour.memory_utilization)
                .unwrap_or(0.3);
            let samples: Vec<f64> = (0..6)
                .map(|i| (mem + (i as f64 - 2.5) * 0.01).clamp(0.0, 1.0))
                .collect();
            self.write(
                &spec(MEMORY_UTILIZATIONS).unit("10^2.%"),
                start,
                end,
                PointValue::Distribution(Distribution::from_values(memory_buckets(), &samples)),
            );
        }
    }

    fn write(&self, s: &SeriesSpec, start: TimestampMs, end: TimestampMs, v: PointValue) {
        if let Err(e) = self.fake.add_point(s, start, end, v) {
            tracing::debug!(error = ?e, "simulated service could not write a point");
        }
    }
}

impl SimService {
    /// Starts serving `service` (which must exist in `fake`) on `127.0.0.1:0`,
    /// and sets the service's `uri` to this server's URL.
    pub async fn start(
        fake: &FakeGcp,
        service: &str,
        options: SimServiceOptions,
    ) -> io::Result<Self> {
        let (project, location, short) =
            fake.lock().run.project_location(service).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no service {service} in the fake"),
                )
            })?;
        let inner = Arc::new(Inner {
            fake: fake.clone(),
            service: service.to_string(),
            project,
            location,
            short,
            tallies: Mutex::new(BTreeMap::new()),
            sequence: Mutex::new(BTreeMap::new()),
            round_robin: Mutex::new(0),
        });
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let app = Router::new().fallback(serve).with_state(inner.clone());
        let mut tasks = vec![tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "simulated service stopped");
            }
        })];
        fake.set_service_uri(service, &format!("http://{addr}"))
            .map_err(|e: ApiError| io::Error::other(e.message))?;

        // Reports at interval boundaries of the clock, like Cloud Run's minutely points.
        let reporter = inner.clone();
        let interval_ms = options.report_interval.as_millis().max(1000) as i64;
        tasks.push(tokio::spawn(async move {
            let clock = reporter.fake.clock().clone();
            let mut start = clock.now_ms();
            loop {
                let end = (clock.now_ms() / interval_ms + 1) * interval_ms;
                clock.sleep_until_ms(end).await;
                reporter.report(start, end);
                start = end;
            }
        }));

        if options.synthetic_rps > 0.0 {
            let load = inner.clone();
            let rps = options.synthetic_rps;
            tasks.push(tokio::spawn(async move {
                let mut owed = 0.0;
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    owed += rps;
                    while owed >= 1.0 {
                        owed -= 1.0;
                        if let Some((rev, b)) = load.pick() {
                            let code = load.status_for(&rev, &b);
                            let jitter = 0.8 + 0.4 * rand::random::<f64>();
                            load.record(
                                &rev,
                                code,
                                b.latency.as_secs_f64() * 1000.0 * jitter,
                                "/api/work",
                            );
                        }
                    }
                }
            }));
        }
        Ok(Self {
            inner,
            addr,
            _tasks: Tasks(tasks),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT/health` (answers the serving revision's health status).
    pub fn health_url(&self) -> String {
        format!("{}/health", self.url())
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// Writes the points for the interval so far now (tests that do not want
    /// to wait for the next report boundary).
    pub fn report_now(&self, since_ms: TimestampMs) {
        let now = self.inner.fake.now_ms();
        self.inner.report(since_ms, now);
    }
}

async fn serve(State(inner): State<Arc<Inner>>, uri: Uri) -> Response {
    let path = uri.path().to_string();
    let Some((rev, b)) = inner.pick() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "no revision is serving traffic\n",
        )
            .into_response();
    };
    tokio::time::sleep(b.latency).await;
    let health = path == "/health" || path == "/healthz";
    let code = if health {
        b.health_status
    } else {
        inner.status_for(&rev, &b)
    };
    inner.record(&rev, code, b.latency.as_secs_f64() * 1000.0, &path);
    let body = if health {
        let status = if code < 400 { "healthy" } else { "unhealthy" };
        json!({"status": status, "revision": rev})
    } else if code < 400 {
        json!({"ok": true, "revision": rev})
    } else {
        json!({"error": "internal error", "revision": rev})
    };
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [
            ("x-served-by", rev.as_str()),
            ("content-type", "application/json"),
        ],
        body.to_string(),
    )
        .into_response()
}
