//! Exactly once across real processes: `rearguard run` as a child process
//! against the HTTP fake of Cloud Run, killed with SIGKILL at the worst moments
//! and restarted on the same state dir; and two daemons on one service.
//!
//! These need the daemon to wire the ActionRunner (dispatch → rollback_configs,
//! reconcile at start); they are ignored until it does:
//! `cargo test --test rollback_process -- --ignored`.
//!
//! No test hooks in production code: the kill lands between the intent and the
//! API call by delaying the fake's `services.patch` (the request is in flight
//! when the process dies, and never processed), and between the call and its
//! completion by a long operation delay.

mod http_support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rearguard::clock::Clock;
use rearguard::sim::service::SimService;
use rearguard::sim::{
    DeploySpec, FakeGcp, FakeOptions, Fault, FaultKind, RevisionBehaviour, ServiceSpec,
};

const SVC: &str = "projects/sim-project/locations/us-central1/services/backend";
const PATCH: &str = "run.projects.locations.services.patch";

struct World {
    fake: FakeGcp,
    service: SimService,
    good: String,
    dir: tempfile::TempDir,
}

/// A healthy revision, then a bad deploy; the config of a daemon watching it.
async fn world(operation_delay: Duration) -> World {
    let fake = FakeGcp::start_with(
        Clock::system(),
        FakeOptions {
            operation_delay,
            require_auth: false,
            ..FakeOptions::default()
        },
    )
    .await
    .unwrap();
    let good = fake.create_service(ServiceSpec::new(SVC)).unwrap();
    let service = SimService::start(&fake, SVC, Default::default())
        .await
        .unwrap();
    fake.deploy(
        SVC,
        DeploySpec {
            behaviour: RevisionBehaviour::bad(),
            ..Default::default()
        },
    )
    .unwrap();
    fake.settle().await;
    World {
        fake,
        good,
        service,
        dir: tempfile::tempdir().unwrap(),
    }
}

fn write_config(w: &World, name: &str, health_url: &str) -> PathBuf {
    let dir = w.dir.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("rules.yaml"),
        "groups:\n  - name: backend\n    interval: 1s\n    rules:\n      - alert: BackendDown\n        expr: probe_success{probe=\"backend-health\"} == 0\n        for: 3s\n        labels: {severity: critical, service: backend}\n",
    )
    .unwrap();
    let config = format!(
        "listen: 127.0.0.1:{port}\nstate_dir: state\nevaluation_interval: 1s\nrule_files: [rules.yaml]\n\
gcp:\n  project: sim-project\n  credentials: adc\n  endpoints:\n    run: {run}\n    monitoring: {run}\n    logging: {run}\n\
probes:\n  - name: backend-health\n    url: {health_url}\n    interval: 1s\n    timeout: 1s\n\
route:\n  receiver: rollback-backend\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 5s\n\
receivers:\n  - name: rollback-backend\n    rollback_configs:\n      - action: backend\n\
actions:\n  backend:\n    cloud_run_traffic:\n      service: {SVC}\n    verify:\n      probes: [backend-health]\n      backoff: [1s, 2s, 4s, 8s]\n    cooldown: 10m\n",
        port = http_support::free_port(),
        run = w.fake.base_url(),
    );
    LOG_DIR.with(|d| *d.borrow_mut() = Some(w.dir.path().to_path_buf()));
    let path = dir.join("rearguard.yaml");
    std::fs::write(&path, config).unwrap();
    path
}

/// A child daemon, SIGKILLed and reaped when dropped (also when a test fails).
struct Daemon(Child);

impl Daemon {
    /// SIGKILL, like `kill -9`.
    fn kill(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn log_file(config: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(config.with_file_name("daemon.log"))
        .unwrap()
}

fn spawn_daemon(w: &World, config: &Path) -> Daemon {
    Daemon(
        Command::new(env!("CARGO_BIN_EXE_rearguard"))
            .args(["run", "-c"])
            .arg(config)
            .env("GCE_METADATA_HOST", w.fake.metadata_host())
            .stdout(Stdio::from(log_file(config)))
            .stderr(Stdio::from(log_file(config)))
            .spawn()
            .unwrap(),
    )
}

async fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        if start.elapsed() >= limit {
            let logs: Vec<String> = glob_logs();
            panic!(
                "timed out waiting for {what}; daemon logs:\n{}",
                logs.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

thread_local! {
    static LOG_DIR: std::cell::RefCell<Option<PathBuf>> = const { std::cell::RefCell::new(None) };
}

fn glob_logs() -> Vec<String> {
    let Some(dir) = LOG_DIR.with(|d| d.borrow().clone()) else {
        return vec!["(no log dir recorded)".into()];
    };
    ["a", "b"]
        .iter()
        .filter_map(|n| {
            std::fs::read_to_string(dir.join(n).join("daemon.log"))
                .ok()
                .map(|t| format!("[{n}] {} bytes\n{t}", t.len()))
        })
        .map(|t| {
            t.lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect()
}

fn accepted_patches(w: &World) -> usize {
    w.fake
        .calls_to(PATCH)
        .iter()
        .filter(|c| c.status == 200)
        .count()
}

fn serves_good(w: &World) -> bool {
    w.fake.serving(SVC) == vec![(w.good.clone(), 100)]
}

/// SIGKILL while the patch request is in flight (the fake holds it), so the
/// intent is written and the call never completes; the restarted daemon
/// reconciles: the service is unchanged and the alert fires, so it patches once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the daemon to wire the ActionRunner"]
async fn kill_between_intent_and_call_still_rolls_back_once() {
    let w = world(Duration::from_secs(1)).await;
    let health = w.service.health_url();
    let config = write_config(&w, "a", &health);
    w.fake
        .inject(Fault::new(PATCH, FaultKind::Delay(Duration::from_secs(30))).times(1));
    let daemon = spawn_daemon(&w, &config);
    wait_for("the patch request", Duration::from_secs(60), || {
        !w.fake.calls_to(PATCH).is_empty()
    })
    .await;
    daemon.kill();
    let daemon = spawn_daemon(&w, &config);
    wait_for(
        "traffic back on the good revision",
        Duration::from_secs(60),
        || serves_good(&w),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    daemon.kill();
    assert_eq!(accepted_patches(&w), 1, "{:?}", w.fake.calls_to(PATCH));
    assert!(serves_good(&w));
}

/// SIGKILL after the patch was accepted, while its operation runs; the
/// restarted daemon finds the change made and does not patch again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the daemon to wire the ActionRunner"]
async fn kill_between_call_and_completion_does_not_patch_again() {
    let w = world(Duration::from_secs(20)).await;
    let health = w.service.health_url();
    let config = write_config(&w, "a", &health);
    let daemon = spawn_daemon(&w, &config);
    wait_for("an accepted patch", Duration::from_secs(60), || {
        accepted_patches(&w) == 1
    })
    .await;
    daemon.kill();
    let daemon = spawn_daemon(&w, &config);
    wait_for(
        "traffic back on the good revision",
        Duration::from_secs(90),
        || serves_good(&w),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    daemon.kill();
    assert_eq!(accepted_patches(&w), 1, "{:?}", w.fake.calls_to(PATCH));
}

/// Two daemons with their own state watch one service: one rollback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the daemon to wire the ActionRunner"]
async fn two_daemons_on_one_service_roll_back_once() {
    let w = world(Duration::from_secs(2)).await;
    let health = w.service.health_url();
    let a = write_config(&w, "a", &health);
    let b = write_config(&w, "b", &health);
    let da = spawn_daemon(&w, &a);
    let db = spawn_daemon(&w, &b);
    wait_for(
        "traffic back on the good revision",
        Duration::from_secs(90),
        || serves_good(&w),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(15)).await;
    da.kill();
    db.kill();
    assert_eq!(accepted_patches(&w), 1, "{:?}", w.fake.calls_to(PATCH));
}
