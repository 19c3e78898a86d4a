//! The probe engine against real HTTP targets on loopback: failure reasons,
//! exported series, stale markers, reloads, TLS certificates, and transitions
//! in the store across a restart.
//!
//! These run in real time with sub-second intervals (real sockets and tokio's
//! paused time do not mix: a paused runtime jumps to the next timer while a
//! loopback answer is in flight). Where the wall time matters (certificate
//! expiry) the Clock is set to a chosen date.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use rearguard::clock::{Clock, TimestampMs};
use rearguard::config::probe::ProbeConfig;
use rearguard::labels::{Labels, Sample};
use rearguard::source::probe::{FailureReason, ProbeDeps, ProbeManager};
use rearguard::store::Store;
use rearguard::tsdb::SampleSink;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const HEALTHY: &str = r#"{"status":"healthy","version":"1.2.3"}"#;
const DEGRADED: &str = r#"{"status":"degraded","version":"1.2.3"}"#;

fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Healthy,
    Unavailable,
    /// Answers only after 30 s.
    Hung,
    WrongBody,
    /// Answers healthy after this many milliseconds.
    Delay(u64),
}

/// An HTTP target whose `/health` can be switched between behaviours, and closed.
struct Target {
    port: u16,
    mode: Arc<Mutex<Mode>>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl Target {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut t = Target {
            port,
            mode: Arc::new(Mutex::new(Mode::Healthy)),
            stop: None,
            server: None,
        };
        t.serve(listener);
        t
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let app = Router::new()
            .route("/health", get(health))
            .with_state(self.mode.clone());
        let (tx, rx) = oneshot::channel::<()>();
        self.stop = Some(tx);
        self.server = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        }));
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/health", self.port)
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// Stops listening: connections are refused until [`Target::reopen`].
    async fn close(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let abort = server.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), server)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }

    async fn reopen(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap();
        self.serve(listener);
    }
}

async fn health(State(mode): State<Arc<Mutex<Mode>>>) -> Response {
    let mode = *mode.lock().unwrap();
    let json = [("content-type", "application/json")];
    match mode {
        Mode::Healthy => (json, HEALTHY).into_response(),
        Mode::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable").into_response(),
        Mode::Hung => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            (json, HEALTHY).into_response()
        }
        Mode::WrongBody => (json, DEGRADED).into_response(),
        Mode::Delay(ms) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            (json, HEALTHY).into_response()
        }
    }
}

/// A sink that keeps everything written to it.
#[derive(Default)]
struct RecordingSink {
    samples: Mutex<Vec<Sample>>,
    stale: Mutex<Vec<(Labels, TimestampMs)>>,
}

impl SampleSink for RecordingSink {
    fn append(&self, samples: &[Sample]) {
        self.samples.lock().unwrap().extend_from_slice(samples);
    }
    fn mark_stale(&self, series: &[Labels], t: TimestampMs) {
        self.stale
            .lock()
            .unwrap()
            .extend(series.iter().map(|l| (l.clone(), t)));
    }
}

impl RecordingSink {
    fn stale_series(&self) -> Vec<String> {
        self.stale
            .lock()
            .unwrap()
            .iter()
            .map(|(l, _)| l.to_string())
            .collect()
    }
}

struct Harness {
    manager: ProbeManager,
    registry: prometheus::Registry,
    sink: Arc<RecordingSink>,
    store: Store,
}

fn harness_with(clock: Clock, store: Store) -> Harness {
    install_crypto();
    let registry = prometheus::Registry::new();
    let sink = Arc::new(RecordingSink::default());
    let manager = ProbeManager::new(ProbeDeps {
        clock,
        sink: sink.clone(),
        store: store.clone(),
        registry: registry.clone(),
    });
    Harness {
        manager,
        registry,
        sink,
        store,
    }
}

fn harness() -> Harness {
    harness_with(Clock::system(), Store::open_in_memory().unwrap())
}

/// Probes from a `probes:` YAML list, through the real loader and validator.
fn probes(yaml: &str) -> Vec<ProbeConfig> {
    let text = format!("probes:\n{yaml}");
    match rearguard::config::load_str(Path::new("test.yaml"), &text, |_| None) {
        Ok(c) => c.config.probes,
        Err(e) => panic!("test config is invalid:\n{e}\n{text}"),
    }
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The registry in Prometheus text format, as `/metrics` serves it.
fn exported(registry: &prometheus::Registry) -> String {
    let mut buf = Vec::new();
    prometheus::Encoder::encode(
        &prometheus::TextEncoder::new(),
        &registry.gather(),
        &mut buf,
    )
    .unwrap();
    String::from_utf8(buf).unwrap()
}

fn value(registry: &prometheus::Registry, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    for f in registry.gather() {
        if f.name() != metric {
            continue;
        }
        for m in f.get_metric() {
            let has = |(k, v): &(&str, &str)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == *k && l.value() == *v)
            };
            if labels.iter().all(has) {
                let counter = m.get_counter().get_value();
                return Some(if counter != 0.0 {
                    counter
                } else {
                    m.get_gauge().get_value()
                });
            }
        }
    }
    None
}

fn reason_of(h: &Harness, probe: &str) -> Option<FailureReason> {
    h.manager.status(probe).and_then(|s| s.reason)
}

#[tokio::test]
async fn switching_target_yields_each_failure_reason_and_series() {
    let mut target = Target::start().await;
    let h = harness();
    let url = target.url();
    h.manager.apply(&probes(&format!(
        "  - name: api\n    url: {url}\n    interval: 200ms\n    timeout: 150ms\n    labels: {{service: web}}\n    expect: {{body_contains: '\"status\":\"healthy\"'}}\n"
    )));
    assert!(!h.manager.first_round_done(), "nothing has run yet");

    eventually("api up", || {
        h.manager.status("api").and_then(|s| s.up) == Some(true)
    })
    .await;
    assert!(h.manager.first_round_done());
    let api = [
        ("probe", "api"),
        ("instance", url.as_str()),
        ("service", "web"),
    ];
    assert_eq!(value(&h.registry, "probe_success", &api), Some(1.0));
    assert_eq!(
        value(&h.registry, "probe_http_status_code", &api),
        Some(200.0)
    );
    assert_eq!(
        value(&h.registry, "probe_http_content_length", &api),
        Some(HEALTHY.len() as f64)
    );
    let duration = value(&h.registry, "probe_duration_seconds", &api).unwrap();
    assert!(duration > 0.0 && duration < 0.15, "duration {duration}");
    assert_eq!(
        value(&h.registry, "probe_failure_info", &[("probe", "api")]),
        None
    );
    assert_eq!(
        value(
            &h.registry,
            "probe_ssl_earliest_cert_expiry",
            &[("probe", "api")]
        ),
        None,
        "http has no cert"
    );

    target.set(Mode::Unavailable);
    eventually("status failure", || {
        reason_of(&h, "api") == Some(FailureReason::Status)
    })
    .await;
    assert_eq!(value(&h.registry, "probe_success", &api), Some(0.0));
    assert_eq!(
        value(&h.registry, "probe_http_status_code", &api),
        Some(503.0)
    );
    assert_eq!(
        value(
            &h.registry,
            "probe_failure_info",
            &[("probe", "api"), ("reason", "status")]
        ),
        Some(1.0)
    );
    assert_eq!(h.manager.status("api").unwrap().status_code, Some(503));

    target.set(Mode::WrongBody);
    eventually("body failure", || {
        reason_of(&h, "api") == Some(FailureReason::Body)
    })
    .await;
    assert_eq!(
        value(&h.registry, "probe_http_status_code", &api),
        Some(200.0)
    );
    assert_eq!(
        value(
            &h.registry,
            "probe_failure_info",
            &[("probe", "api"), ("reason", "body")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &h.registry,
            "probe_failure_info",
            &[("probe", "api"), ("reason", "status")]
        ),
        None,
        "only the current reason is exported"
    );
    assert!(
        h.sink
            .stale_series()
            .iter()
            .any(|s| s.starts_with("probe_failure_info{") && s.contains(r#"reason="status""#)),
        "the reason that went away is stale-marked: {:?}",
        h.sink.stale_series()
    );

    target.set(Mode::Hung);
    eventually("timeout", || {
        reason_of(&h, "api") == Some(FailureReason::Timeout)
    })
    .await;
    let s = h.manager.status("api").unwrap();
    assert!(
        s.duration_seconds.unwrap() < 0.5,
        "a timeout bounds the run: {s:?}"
    );
    assert_eq!(
        value(&h.registry, "probe_http_status_code", &api),
        Some(0.0)
    );

    target.set(Mode::Healthy);
    target.close().await;
    eventually("connect failure", || {
        reason_of(&h, "api") == Some(FailureReason::Connect)
    })
    .await;
    assert!(h.manager.status("api").unwrap().error.is_some());

    target.reopen().await;
    eventually("api up again", || {
        h.manager.status("api").and_then(|s| s.up) == Some(true)
    })
    .await;
    assert_eq!(
        value(&h.registry, "probe_failure_info", &[("probe", "api")]),
        None
    );

    let ok = value(
        &h.registry,
        "rearguard_probe_runs_total",
        &[("probe", "api"), ("result", "success")],
    )
    .unwrap();
    let failed = value(
        &h.registry,
        "rearguard_probe_runs_total",
        &[("probe", "api"), ("result", "failure")],
    )
    .unwrap();
    assert!(ok >= 2.0 && failed >= 4.0, "runs: {ok} ok, {failed} failed");

    // Every run wrote its samples to the sink, with the metric name and labels.
    let samples = h.sink.samples.lock().unwrap().clone();
    let success: Vec<f64> = samples
        .iter()
        .filter(|s| s.labels.metric_name() == Some("probe_success"))
        .map(|s| s.value)
        .collect();
    assert!(success.contains(&1.0) && success.contains(&0.0));
    assert!(samples
        .iter()
        .all(|s| s.labels.get("service") == Some("web")));
    let codes: Vec<f64> = samples
        .iter()
        .filter(|s| s.labels.metric_name() == Some("probe_http_status_code"))
        .map(|s| s.value)
        .collect();
    assert!(codes.contains(&503.0));
    h.manager.shutdown().await;
}

#[tokio::test]
async fn json_pointer_and_regex_expectations() {
    let target = Target::start().await;
    let h = harness();
    let url = target.url();
    h.manager.apply(&probes(&format!(
        r#"  - name: fields-match
    url: {url}
    interval: 1s
    timeout: 1s
    expect: {{json: {{/status: healthy, /version: "1.2.3"}}, body_regex: 'version.:.1\.\d'}}
  - name: version-differs
    url: {url}
    interval: 1s
    timeout: 1s
    expect: {{json: {{/version: "2.0.0"}}}}
  - name: field-missing
    url: {url}
    interval: 1s
    timeout: 1s
    expect: {{json: {{/checks/db: ok}}}}
  - name: regex-differs
    url: {url}
    interval: 1s
    timeout: 1s
    expect: {{body_regex: '^OK$'}}
"#
    )));
    eventually("first round", || h.manager.first_round_done()).await;
    assert_eq!(h.manager.status("fields-match").unwrap().up, Some(true));
    for name in ["version-differs", "field-missing", "regex-differs"] {
        let s = h.manager.status(name).unwrap();
        assert_eq!(
            (s.up, s.reason),
            (Some(false), Some(FailureReason::Body)),
            "{name}: {s:?}"
        );
    }
    let err = h.manager.status("version-differs").unwrap().error.unwrap();
    assert!(err.contains("/version") && err.contains("2.0.0"), "{err}");
    let err = h.manager.status("field-missing").unwrap().error.unwrap();
    assert!(err.contains("/checks/db is missing"), "{err}");
    h.manager.shutdown().await;
}

#[tokio::test]
async fn slow_answer_beyond_max_duration_is_latency() {
    let target = Target::start().await;
    target.set(Mode::Delay(300));
    let h = harness();
    let url = target.url();
    h.manager.apply(&probes(&format!(
        "  - name: slow\n    url: {url}\n    interval: 5s\n    timeout: 2s\n    expect: {{max_duration: 100ms}}\n  - name: patient\n    url: {url}\n    interval: 5s\n    timeout: 2s\n    expect: {{max_duration: 1s}}\n"
    )));
    eventually("first round", || h.manager.first_round_done()).await;
    let s = h.manager.status("slow").unwrap();
    assert_eq!(
        (s.up, s.reason, s.status_code),
        (Some(false), Some(FailureReason::Latency), Some(200))
    );
    assert!(s.duration_seconds.unwrap() >= 0.3);
    assert_eq!(h.manager.status("patient").unwrap().up, Some(true));
    assert_eq!(
        value(
            &h.registry,
            "probe_failure_info",
            &[("probe", "slow"), ("reason", "latency")]
        ),
        Some(1.0)
    );
    h.manager.shutdown().await;
}

/// A TLS server with a self-signed certificate valid until 2031-01-01, answering
/// every request with 200 "ok".
async fn tls_target() -> (u16, JoinHandle<()>) {
    install_crypto();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2031, 1, 1);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key_der)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (port, server)
}

const NOT_AFTER_2031: i64 = 1_924_992_000; // 2031-01-01T00:00:00Z
const DAY_MS: i64 = 86_400_000;

#[tokio::test]
async fn certificate_expiry_against_cert_min_days() {
    let (port, server) = tls_target().await;
    let yaml = format!(
        "  - name: tls\n    url: https://127.0.0.1:{port}/health\n    interval: 10s\n    tls: {{insecure_skip_verify: true}}\n    expect: {{cert_min_days: 30}}\n  - name: verified\n    url: https://127.0.0.1:{port}/health\n    interval: 10s\n"
    );

    // 10 days before the certificate expires: too soon.
    let h = harness_with(
        Clock::starting_at(NOT_AFTER_2031 * 1000 - 10 * DAY_MS),
        Store::open_in_memory().unwrap(),
    );
    h.manager.apply(&probes(&yaml));
    eventually("first round", || h.manager.first_round_done()).await;
    let s = h.manager.status("tls").unwrap();
    assert_eq!(
        (s.up, s.reason, s.status_code),
        (Some(false), Some(FailureReason::Tls), Some(200)),
        "{s:?}"
    );
    assert!(
        s.error.as_deref().unwrap().contains("cert_min_days 30"),
        "{s:?}"
    );
    assert_eq!(
        value(
            &h.registry,
            "probe_ssl_earliest_cert_expiry",
            &[("probe", "tls")]
        ),
        Some(NOT_AFTER_2031 as f64)
    );
    assert_eq!(
        value(
            &h.registry,
            "probe_failure_info",
            &[("probe", "tls"), ("reason", "tls")]
        ),
        Some(1.0)
    );
    // Without insecure_skip_verify the self-signed certificate fails the handshake.
    let v = h.manager.status("verified").unwrap();
    assert_eq!(
        (v.up, v.reason, v.status_code),
        (Some(false), Some(FailureReason::Tls), None),
        "{v:?}"
    );
    assert_eq!(
        value(
            &h.registry,
            "probe_ssl_earliest_cert_expiry",
            &[("probe", "verified")]
        ),
        None
    );
    h.manager.shutdown().await;

    // 200 days before: fine.
    let h = harness_with(
        Clock::starting_at(NOT_AFTER_2031 * 1000 - 200 * DAY_MS),
        Store::open_in_memory().unwrap(),
    );
    h.manager.apply(&probes(&yaml));
    eventually("first round", || h.manager.first_round_done()).await;
    let s = h.manager.status("tls").unwrap();
    assert_eq!((s.up, s.reason), (Some(true), None), "{s:?}");
    assert_eq!(
        value(
            &h.registry,
            "probe_ssl_earliest_cert_expiry",
            &[("probe", "tls")]
        ),
        Some(NOT_AFTER_2031 as f64)
    );
    h.manager.shutdown().await;
    server.abort();
}

#[tokio::test]
async fn reload_keeps_unchanged_schedules_and_restarts_changed_probes() {
    let target = Target::start().await;
    let h = harness();
    let url = target.url();
    let probe = |name: &str, path: &str| {
        format!("  - name: {name}\n    url: {url}{path}\n    interval: 5s\n")
    };
    h.manager
        .apply(&probes(&format!("{}{}", probe("a", ""), probe("b", ""))));
    eventually("first round", || h.manager.first_round_done()).await;
    let a = h.manager.status("a").unwrap();
    let b = h.manager.status("b").unwrap();
    assert_eq!((a.runs, b.runs), (1, 1));
    assert!(a.next_run_ms > a.last_run_ms.unwrap() + 4_000, "{a:?}");

    // a unchanged, b changed (its url), c new.
    h.manager.apply(&probes(&format!(
        "{}{}{}",
        probe("a", ""),
        probe("b", "?v=2"),
        probe("c", "")
    )));
    assert_eq!(
        h.manager.status("a").unwrap(),
        a,
        "an unchanged probe keeps its state and next due time"
    );
    assert_eq!(
        h.manager.status("b").unwrap().runs,
        0,
        "a changed probe restarts"
    );
    eventually("b and c ran", || {
        h.manager.status("b").unwrap().runs == 1 && h.manager.status("c").unwrap().runs == 1
    })
    .await;
    let b2 = h.manager.status("b").unwrap();
    assert!(b2.url.ends_with("?v=2") && b2.last_run_ms > b.last_run_ms);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        h.manager.status("a").unwrap(),
        a,
        "no extra run of the unchanged probe"
    );
    // The changed probe's old series (other instance label) was stale-marked.
    assert!(h
        .sink
        .stale_series()
        .iter()
        .any(|s| s.contains(r#"probe="b""#) && !s.contains("?v=2")));
    h.manager.shutdown().await;
}

#[tokio::test]
async fn removed_probe_is_no_longer_exported_and_is_stale_marked() {
    let target = Target::start().await;
    let h = harness();
    let url = target.url();
    let a = format!("  - name: a\n    url: {url}\n    interval: 5s\n");
    let b = format!("  - name: b\n    url: {url}\n    interval: 5s\n    labels: {{team: x}}\n");
    h.manager.apply(&probes(&format!("{a}{b}")));
    eventually("first round", || h.manager.first_round_done()).await;
    assert!(exported(&h.registry).contains(r#"probe="b""#));

    h.manager.apply(&probes(&a));
    let text = exported(&h.registry);
    assert!(
        !text.contains(r#"probe="b""#),
        "b is still exported:\n{text}"
    );
    assert!(
        text.contains(r#"probe_success{instance=""#) && text.contains(r#"probe="a""#),
        "{text}"
    );
    assert!(h.manager.status("b").is_none());
    let stale = h.sink.stale_series();
    for metric in [
        "probe_success",
        "probe_duration_seconds",
        "probe_http_status_code",
        "probe_http_content_length",
    ] {
        assert!(
            stale.iter().any(|s| s.starts_with(&format!("{metric}{{"))
                && s.contains(r#"probe="b""#)
                && s.contains(r#"team="x""#)),
            "{metric} of b not stale-marked: {stale:?}"
        );
    }
    assert!(!stale.iter().any(|s| s.contains(r#"probe="a""#)));
    h.manager.shutdown().await;
}

#[tokio::test]
async fn transitions_are_recorded_and_survive_a_restart() {
    let target = Target::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = target.url();
    let cfg = probes(&format!(
        "  - name: api\n    url: {url}\n    interval: 200ms\n    timeout: 150ms\n"
    ));

    let h = harness_with(Clock::system(), Store::open(dir.path()).unwrap());
    h.manager.apply(&cfg);
    eventually("up", || {
        h.manager.status("api").and_then(|s| s.up) == Some(true)
    })
    .await;
    target.set(Mode::Unavailable);
    eventually("down", || {
        h.manager.status("api").and_then(|s| s.up) == Some(false)
    })
    .await;
    // Let a few more failing runs pass: they are not transitions.
    let runs = h.manager.status("api").unwrap().runs;
    eventually("more runs", || {
        h.manager.status("api").unwrap().runs >= runs + 2
    })
    .await;
    h.manager.shutdown().await;
    let history = h.store.probe_history("api", 10).await.unwrap();
    let summary: Vec<_> = history
        .iter()
        .map(|t| (t.up, t.reason.clone(), t.status_code))
        .collect();
    assert_eq!(
        summary,
        vec![
            (true, None, Some(200)),
            (false, Some("status".into()), Some(503))
        ]
    );
    drop(h);

    // A restart with the target still down records nothing new.
    let h = harness_with(Clock::system(), Store::open(dir.path()).unwrap());
    h.manager.apply(&cfg);
    eventually("two runs after restart", || {
        h.manager.status("api").unwrap().runs >= 2
    })
    .await;
    assert_eq!(
        h.store.probe_history("api", 10).await.unwrap().len(),
        2,
        "no spurious transition"
    );
    target.set(Mode::Healthy);
    eventually("up again", || {
        h.manager.status("api").and_then(|s| s.up) == Some(true)
    })
    .await;
    h.manager.shutdown().await;
    let history = h.store.probe_history("api", 10).await.unwrap();
    assert_eq!(history.len(), 3);
    assert!(history[2].up && history[2].at_ms > history[1].at_ms);
}

#[tokio::test]
async fn probe_now_runs_at_once_without_moving_the_schedule() {
    let target = Target::start().await;
    let h = harness();
    let url = target.url();
    h.manager.apply(&probes(&format!(
        "  - name: api\n    url: {url}\n    interval: 10s\n"
    )));
    eventually("first run", || h.manager.first_round_done()).await;
    let before = h.manager.status("api").unwrap();

    target.set(Mode::Unavailable);
    let r = h.manager.probe_now("api").await.unwrap();
    assert_eq!(
        (r.success, r.reason, r.status_code),
        (false, Some(FailureReason::Status), Some(503))
    );
    let after = h.manager.status("api").unwrap();
    assert_eq!(after.next_run_ms, before.next_run_ms, "schedule untouched");
    assert_eq!((after.up, after.runs), (Some(false), 2));
    assert!(h.manager.probe_now("nope").await.is_none());
    h.manager.shutdown().await;
}

#[tokio::test]
async fn a_hung_probe_delays_no_other_and_shutdown_is_prompt() {
    let hung = Target::start().await;
    hung.set(Mode::Hung);
    let fine = Target::start().await;
    let h = harness();
    h.manager.apply(&probes(&format!(
        "  - name: hung\n    url: {}\n    interval: 10s\n    timeout: 10s\n  - name: fine\n    url: {}\n    interval: 200ms\n    timeout: 200ms\n",
        hung.url(),
        fine.url()
    )));
    eventually("fine runs while hung waits", || {
        h.manager.status("fine").unwrap().runs >= 4
    })
    .await;
    assert_eq!(h.manager.status("hung").unwrap().runs, 0);
    assert!(
        !h.manager.first_round_done(),
        "hung has not completed a run"
    );

    let started = Instant::now();
    h.manager.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "shutdown took {:?}",
        started.elapsed()
    );
    let runs = h.manager.status("fine").unwrap().runs;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        h.manager.status("fine").unwrap().runs,
        runs,
        "no run after shutdown"
    );
}

#[tokio::test]
async fn no_probes_means_ready() {
    let h = harness();
    h.manager.apply(&[]);
    assert!(h.manager.first_round_done());
    assert!(h.manager.statuses().is_empty());
}

#[tokio::test(start_paused = true)]
async fn first_runs_are_spread_by_jitter() {
    let h = harness_with(
        Clock::starting_at(1_000_000),
        Store::open_in_memory().unwrap(),
    );
    let yaml: String = (0..1000)
        .map(|i| format!("  - name: p{i}\n    url: http://127.0.0.1:9/{i}\n    interval: 10s\n"))
        .collect();
    // No task has been polled yet (nothing awaited): only the schedule exists.
    h.manager.apply(&probes(&yaml));
    let due: Vec<TimestampMs> = h.manager.statuses().iter().map(|s| s.next_run_ms).collect();
    assert_eq!(due.len(), 1000);
    assert!(
        due.iter().all(|d| (1_000_000..=1_001_000).contains(d)),
        "within 10% of the interval"
    );
    let mut distinct = due.clone();
    distinct.sort();
    distinct.dedup();
    assert!(
        distinct.len() > 500,
        "only {} distinct start times",
        distinct.len()
    );
    h.manager.shutdown().await;
}
