//! HTTP health probes: each on its own schedule, exported in blackbox_exporter's names.
//!
//! Every probe runs in its own task (a slow or hung target delays nobody else;
//! `timeout` bounds each run). Results go three ways: samples into the tsdb
//! ([`SampleSink`]), the current values onto `/metrics` (a collector over the
//! latest results, so a removed probe disappears), and up/down transitions into
//! the store.

mod check;
mod export;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::Rng;
use serde::Serialize;
use tokio::task::JoinHandle;

pub use check::{cert_not_after, CompiledProbe, FailureReason, ProbeResult, MAX_BODY_BYTES};
pub use export::{
    ProbeCollector, PROBE_CERT_EXPIRY, PROBE_CONTENT_LENGTH, PROBE_DURATION, PROBE_FAILURE_INFO,
    PROBE_STATUS_CODE, PROBE_SUCCESS,
};

use crate::clock::{Clock, TimestampMs};
use crate::config::defaults;
use crate::config::probe::ProbeConfig;
use crate::labels::Labels;
use crate::store::{ProbeTransition, Store};
use crate::tsdb::SampleSink;

/// The counter of probe runs, by probe and result (`success` or `failure`).
pub const PROBE_RUNS_TOTAL: &str = "rearguard_probe_runs_total";

/// What a probe manager needs from the rest of the daemon.
#[derive(Clone)]
pub struct ProbeDeps {
    pub clock: Clock,
    pub sink: Arc<dyn SampleSink>,
    pub store: Store,
    pub registry: prometheus::Registry,
}

/// The current state of one configured probe, for the API and rollback verification.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProbeStatus {
    pub name: String,
    pub url: String,
    /// None until the probe has run once.
    pub up: Option<bool>,
    pub last_run_ms: Option<TimestampMs>,
    pub reason: Option<FailureReason>,
    pub status_code: Option<u16>,
    pub duration_seconds: Option<f64>,
    pub error: Option<String>,
    /// When the next scheduled run is due.
    pub next_run_ms: TimestampMs,
    /// Runs completed since this probe (in its current form) was started.
    pub runs: u64,
}

/// Runs every configured probe; [`ProbeManager::apply`] swaps the set on reload.
pub struct ProbeManager {
    shared: Arc<Shared>,
}

/// One configured probe and what it last saw.
struct Slot {
    probe: Arc<CompiledProbe>,
    /// Tells a restarted probe's task from the one it replaced.
    generation: u64,
    task: Option<JoinHandle<()>>,
    client: Result<reqwest::Client, String>,
    last: Option<ProbeResult>,
    /// The series last written to the sink (to stale-mark those that go away).
    exported: Vec<Labels>,
    next_due_ms: TimestampMs,
    runs: u64,
}

/// Reused connections need a shared client; clients differ only by these settings.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct ClientKey {
    follow_redirects: bool,
    insecure_skip_verify: bool,
    keep_alive: bool,
}

pub(crate) struct Shared {
    clock: Clock,
    sink: Arc<dyn SampleSink>,
    store: Store,
    slots: Mutex<BTreeMap<String, Slot>>,
    clients: Mutex<HashMap<ClientKey, reqwest::Client>>,
    /// Last known up/down per probe, seeded from the store on first use so a
    /// restart does not record a spurious transition.
    known_up: tokio::sync::OnceCell<Mutex<HashMap<String, bool>>>,
    runs_total: prometheus::IntCounterVec,
    first_round_done: AtomicBool,
    next_generation: std::sync::atomic::AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ProbeManager {
    /// Registers the probe series and `rearguard_probe_runs_total` in
    /// `deps.registry`; runs nothing until [`ProbeManager::apply`].
    pub fn new(deps: ProbeDeps) -> Self {
        let runs_total = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                PROBE_RUNS_TOTAL,
                "Probe runs, by probe and result (success or failure).",
            ),
            &["probe", "result"],
        )
        .expect("static metric definition is valid");
        let shared = Arc::new(Shared {
            clock: deps.clock,
            sink: deps.sink,
            store: deps.store,
            slots: Mutex::new(BTreeMap::new()),
            clients: Mutex::new(HashMap::new()),
            known_up: tokio::sync::OnceCell::new(),
            runs_total: runs_total.clone(),
            first_round_done: AtomicBool::new(false),
            next_generation: std::sync::atomic::AtomicU64::new(1),
        });
        if let Err(e) = deps.registry.register(Box::new(runs_total)) {
            tracing::warn!(error = %e, "cannot register {PROBE_RUNS_TOTAL}");
        }
        match ProbeCollector::new(shared.clone()) {
            Ok(c) => {
                if let Err(e) = deps.registry.register(Box::new(c)) {
                    tracing::warn!(error = %e, "cannot register the probe series collector");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot create the probe series collector"),
        }
        Self { shared }
    }

    /// Starts new probes, stops removed ones, restarts changed ones; unchanged
    /// probes keep their task and schedule (no extra run, same next due time).
    pub fn apply(&self, probes: &[ProbeConfig]) {
        let shared = &self.shared;
        let now = shared.clock.now_ms();
        let mut slots = lock(&shared.slots);
        let wanted: BTreeMap<&str, &ProbeConfig> =
            probes.iter().map(|p| (p.name.as_str(), p)).collect();

        let removed: Vec<String> = slots
            .iter()
            .filter(|(name, slot)| wanted.get(name.as_str()) != Some(&&slot.probe.config))
            .map(|(name, _)| name.clone())
            .collect();
        for name in removed {
            if let Some(slot) = slots.remove(&name) {
                if let Some(task) = slot.task {
                    task.abort();
                }
                if !slot.exported.is_empty() {
                    shared.sink.mark_stale(&slot.exported, now);
                }
                if !wanted.contains_key(name.as_str()) {
                    for result in ["success", "failure"] {
                        let _ = shared.runs_total.remove_label_values(&[&name, result]);
                    }
                    tracing::info!(probe = %name, "probe removed");
                }
            }
        }

        for cfg in probes {
            if slots.contains_key(&cfg.name) {
                continue;
            }
            let probe = match CompiledProbe::new(cfg.clone()) {
                Ok(p) => Arc::new(p),
                Err(e) => {
                    tracing::error!(probe = %cfg.name, error = %e, "probe not started");
                    continue;
                }
            };
            let client = shared.client(ClientKey {
                follow_redirects: cfg.expect.follow_redirects,
                insecure_skip_verify: cfg.tls.insecure_skip_verify,
                keep_alive: cfg.keep_alive,
            });
            let interval_ms = interval_ms(&probe);
            let jitter_max = ((interval_ms as f64) * defaults::PROBE_JITTER_FRACTION) as i64;
            let first_due = now + rand::thread_rng().gen_range(0..=jitter_max.max(0));
            let generation = shared.next_generation.fetch_add(1, Ordering::Relaxed);
            let task = tokio::spawn(run_loop(
                shared.clone(),
                probe.clone(),
                generation,
                client.clone(),
                first_due,
            ));
            slots.insert(
                cfg.name.clone(),
                Slot {
                    probe,
                    generation,
                    task: Some(task),
                    client,
                    last: None,
                    exported: Vec::new(),
                    next_due_ms: first_due,
                    runs: 0,
                },
            );
        }
        shared.update_first_round(&slots);
    }

    /// True once every configured probe has run at least once (it stays true
    /// across reloads, so readiness does not flap).
    pub fn first_round_done(&self) -> bool {
        self.shared.first_round_done.load(Ordering::SeqCst)
    }

    /// The current state of a configured probe.
    pub fn status(&self, name: &str) -> Option<ProbeStatus> {
        lock(&self.shared.slots).get(name).map(slot_status)
    }

    /// The current state of every configured probe, by name.
    pub fn statuses(&self) -> Vec<ProbeStatus> {
        lock(&self.shared.slots).values().map(slot_status).collect()
    }

    /// Runs a configured probe now and returns its result, which is recorded like
    /// any other run; the schedule is not touched. None for an unknown probe.
    pub async fn probe_now(&self, name: &str) -> Option<ProbeResult> {
        let (probe, generation, client) = {
            let slots = lock(&self.shared.slots);
            let slot = slots.get(name)?;
            (slot.probe.clone(), slot.generation, slot.client.clone())
        };
        let result = run_once(&client, &probe, &self.shared.clock).await;
        self.shared.record(&probe, generation, result.clone()).await;
        Some(result)
    }

    /// Stops every probe task and waits for them to end.
    pub async fn shutdown(&self) {
        let tasks: Vec<JoinHandle<()>> = lock(&self.shared.slots)
            .values_mut()
            .filter_map(|s| s.task.take())
            .collect();
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
    }
}

impl Drop for ProbeManager {
    fn drop(&mut self) {
        for slot in lock(&self.shared.slots).values_mut() {
            if let Some(t) = slot.task.take() {
                t.abort();
            }
        }
    }
}

fn slot_status(slot: &Slot) -> ProbeStatus {
    let last = slot.last.as_ref();
    ProbeStatus {
        name: slot.probe.config.name.clone(),
        url: slot.probe.config.url.clone(),
        up: last.map(|r| r.success),
        last_run_ms: last.map(|r| r.at_ms),
        reason: last.and_then(|r| r.reason),
        status_code: last.and_then(|r| r.status_code),
        duration_seconds: last.map(|r| r.duration.as_secs_f64()),
        error: last.and_then(|r| r.error.clone()),
        next_run_ms: slot.next_due_ms,
        runs: slot.runs,
    }
}

fn interval_ms(probe: &CompiledProbe) -> i64 {
    (probe.config.interval.0.as_millis() as i64).max(1)
}

/// The next due time after a run that was due at `due` and finished at `now`:
/// one interval later, skipping slots already missed so a probe never bursts.
fn next_due(due: TimestampMs, interval_ms: i64, now: TimestampMs) -> TimestampMs {
    let next = due + interval_ms;
    if next > now {
        next
    } else {
        next + ((now - next) / interval_ms + 1) * interval_ms
    }
}

async fn run_loop(
    shared: Arc<Shared>,
    probe: Arc<CompiledProbe>,
    generation: u64,
    client: Result<reqwest::Client, String>,
    mut due: TimestampMs,
) {
    let interval = interval_ms(&probe);
    loop {
        shared.clock.sleep_until_ms(due).await;
        let result = run_once(&client, &probe, &shared.clock).await;
        due = next_due(due, interval, shared.clock.now_ms());
        if let Some(slot) = lock(&shared.slots).get_mut(&probe.config.name) {
            if slot.generation == generation {
                slot.next_due_ms = due;
            }
        }
        shared.record(&probe, generation, result).await;
    }
}

async fn run_once(
    client: &Result<reqwest::Client, String>,
    probe: &CompiledProbe,
    clock: &Clock,
) -> ProbeResult {
    match client {
        Ok(c) => check::execute(c, probe, clock).await,
        Err(e) => ProbeResult {
            probe: probe.config.name.clone(),
            at_ms: clock.now_ms(),
            success: false,
            reason: Some(FailureReason::Connect),
            status_code: None,
            duration: Duration::ZERO,
            content_length: None,
            cert_not_after: None,
            error: Some(format!("no HTTP client: {e}")),
        },
    }
}

impl Shared {
    fn client(&self, key: ClientKey) -> Result<reqwest::Client, String> {
        let mut clients = lock(&self.clients);
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let client = build_client(key).map_err(|e| {
            tracing::error!(error = %e, "cannot build the probes' HTTP client");
            e.to_string()
        })?;
        clients.insert(key, client.clone());
        Ok(client)
    }

    /// Calls `f` with each configured probe's latest result.
    pub(crate) fn for_each_result(&self, mut f: impl FnMut(&CompiledProbe, &ProbeResult)) {
        for slot in lock(&self.slots).values() {
            if let Some(r) = &slot.last {
                f(&slot.probe, r);
            }
        }
    }

    fn update_first_round(&self, slots: &BTreeMap<String, Slot>) {
        if !self.first_round_done.load(Ordering::SeqCst) && slots.values().all(|s| s.last.is_some())
        {
            self.first_round_done.store(true, Ordering::SeqCst);
        }
    }

    async fn known_up(&self) -> &Mutex<HashMap<String, bool>> {
        self.known_up
            .get_or_init(|| async {
                let known = match self.store.last_probe_transitions().await {
                    Ok(ts) => ts.into_iter().map(|t| (t.probe, t.up)).collect(),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the last probe states; the next states count as transitions");
                        HashMap::new()
                    }
                };
                Mutex::new(known)
            })
            .await
    }

    /// Records a result: current state, samples, stale markers, counters, transitions.
    /// A result of a probe that was removed or restarted meanwhile, or older
    /// than the one already recorded, is dropped.
    async fn record(&self, probe: &CompiledProbe, generation: u64, result: ProbeResult) {
        let name = &probe.config.name;
        let samples = export::samples(probe, &result);
        let gone = {
            let mut slots = lock(&self.slots);
            let Some(slot) = slots.get_mut(name).filter(|s| s.generation == generation) else {
                return;
            };
            if slot.last.as_ref().is_some_and(|l| l.at_ms > result.at_ms) {
                return;
            }
            let gone = export::gone(&slot.exported, &samples);
            slot.exported = samples.iter().map(|s| s.labels.clone()).collect();
            slot.last = Some(result.clone());
            slot.runs += 1;
            self.update_first_round(&slots);
            gone
        };
        self.sink.append(&samples);
        if !gone.is_empty() {
            self.sink.mark_stale(&gone, result.at_ms);
        }
        let outcome = if result.success { "success" } else { "failure" };
        self.runs_total.with_label_values(&[name, outcome]).inc();

        let changed = {
            let mut known = lock(self.known_up().await);
            known.insert(name.clone(), result.success) != Some(result.success)
        };
        if !changed {
            return;
        }
        if result.success {
            tracing::info!(probe = %name, url = %probe.config.url, "probe is up");
        } else {
            tracing::warn!(
                probe = %name,
                url = %probe.config.url,
                reason = result.reason.map(|r| r.as_str()).unwrap_or(""),
                error = result.error.as_deref().unwrap_or(""),
                "probe is down"
            );
        }
        let transition = ProbeTransition {
            probe: name.clone(),
            at_ms: result.at_ms,
            up: result.success,
            reason: result.reason.map(|r| r.as_str().to_string()),
            status_code: result.status_code,
        };
        if let Err(e) = self.store.record_probe_transition(transition).await {
            tracing::warn!(probe = %name, error = %e, "cannot record the probe transition");
        }
    }
}

fn build_client(key: ClientKey) -> reqwest::Result<reqwest::Client> {
    crate::tls::ensure_crypto_provider();
    let redirect = if key.follow_redirects {
        reqwest::redirect::Policy::limited(10)
    } else {
        reqwest::redirect::Policy::none()
    };
    let mut builder = reqwest::Client::builder()
        .redirect(redirect)
        .tls_info(true)
        .tls_danger_accept_invalid_certs(key.insecure_skip_verify)
        .user_agent(concat!("rearguard/", env!("CARGO_PKG_VERSION")));
    if !key.keep_alive {
        // No idle connections kept: every run connects anew.
        builder = builder.pool_max_idle_per_host(0);
    }
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An HTTP/1.1 server that answers every request on a connection and
    /// counts the connections it accepts.
    async fn counting_server() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/health", listener.local_addr().unwrap());
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let mut seen = Vec::new();
                    loop {
                        let Ok(n) = conn.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        seen.extend_from_slice(&buf[..n]);
                        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            seen.drain(..end + 4);
                            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            if conn.write_all(answer).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (url, accepted)
    }

    async fn connections_for(keep_alive: bool) -> usize {
        let (url, accepted) = counting_server().await;
        let client = build_client(ClientKey {
            follow_redirects: true,
            insecure_skip_verify: false,
            keep_alive,
        })
        .unwrap();
        for _ in 0..3 {
            let r = client.get(&url).send().await.unwrap();
            assert_eq!(r.text().await.unwrap(), "ok");
        }
        accepted.load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn keep_alive_decides_whether_runs_share_a_connection() {
        assert_eq!(connections_for(false).await, 3);
        assert_eq!(connections_for(true).await, 1);
    }

    #[test]
    fn next_due_keeps_the_phase_and_skips_missed_slots() {
        assert_eq!(next_due(1_000, 100, 1_050), 1_100);
        assert_eq!(next_due(1_000, 100, 1_100), 1_200);
        assert_eq!(next_due(1_000, 100, 1_345), 1_400);
    }
}
