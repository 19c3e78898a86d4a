//! The daemon as a process killed with SIGKILL: its tsdb loses at most the
//! configured WAL flush interval of samples (`tsdb_flush_interval`, set to
//! 500 ms here, half the default), and the restarted process goes on from
//! what was on disk.

mod http_support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Kills the process on drop, so a failed assertion leaves nothing running.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(config: &Path, log: &Path) -> Process {
    let log = std::fs::File::create(log).unwrap();
    Process(
        Command::new(env!("CARGO_BIN_EXE_rearguard"))
            .args(["run", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

async fn wait_ready(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
            if r.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{base} did not become ready");
}

/// Timestamps (ms) of the probe's `probe_success` samples of the last 10 minutes.
async fn probe_samples(client: &reqwest::Client, base: &str) -> Vec<i64> {
    let body: serde_json::Value = client
        .get(format!("{base}/api/v1/query"))
        .query(&[("query", r#"probe_success{probe="self"}[10m]"#)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let values = body["data"]["result"][0]["values"]
        .as_array()
        .unwrap_or_else(|| panic!("no samples in {body}"));
    values
        .iter()
        .map(|pair| (pair[0].as_f64().unwrap() * 1000.0).round() as i64)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_at_most_the_flush_interval() {
    // Not the default (1 s): the config value is what the daemon must use.
    const FLUSH: &str = "500ms";
    let flush = rearguard::duration::parse_duration(FLUSH).unwrap();
    assert_ne!(
        flush,
        rearguard::tsdb::DurableOptions::default().flush_every
    );
    let dir = tempfile::tempdir().unwrap();
    let port = http_support::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let cfg = dir.path().join("rearguard.yaml");
    std::fs::write(
        &cfg,
        format!(
            "listen: 127.0.0.1:{port}\nstate_dir: {}\ntsdb_flush_interval: {FLUSH}\nprobes:\n  - name: self\n    url: {base}/healthz\n    interval: 100ms\n",
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let client = http_support::client();

    let mut first = spawn(&cfg, &dir.path().join("first.log"));
    wait_ready(&client, &base).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let seen = probe_samples(&client, &base).await;
    assert!(seen.len() >= 10, "only {} samples in 3 s", seen.len());
    let killed_at = wall_ms();
    first.0.kill().unwrap(); // SIGKILL: no shutdown, no last flush.
    first.0.wait().unwrap();

    let _second = spawn(&cfg, &dir.path().join("second.log"));
    wait_ready(&client, &base).await;
    let now = probe_samples(&client, &base).await;
    let kept: Vec<i64> = now.iter().copied().filter(|&t| t < killed_at).collect();
    let newest_kept = *kept.last().expect("nothing survived the kill");
    // What was kept is the history as it was, without holes...
    let seen_until_newest: Vec<i64> = seen.into_iter().filter(|&t| t <= newest_kept).collect();
    let kept_until_seen: Vec<i64> = kept
        .iter()
        .copied()
        .filter(|t| seen_until_newest.last().is_some_and(|last| t <= last))
        .collect();
    assert_eq!(kept_until_seen, seen_until_newest);
    // ...up to at most one flush interval before the kill, plus a slack of
    // 1 s for what is not the WAL's loss: the newest sample is up to one
    // probe interval old even when nothing is lost (100 ms, +10 % jitter);
    // its timestamp is the probe's start, appended after the round trip; and
    // the flush loop sleeps the interval *after* each write, so its period is
    // the interval plus the write and fsync, which take hundreds of
    // milliseconds on a busy shared CI disk.
    let lost_ms = killed_at - newest_kept;
    eprintln!(
        "kill -9: newest kept sample {lost_ms} ms before the kill ({} kept, flush interval {FLUSH})",
        kept.len()
    );
    let bound = flush.as_millis() as i64 + 1000;
    assert!(
        lost_ms <= bound,
        "the newest sample kept is {lost_ms} ms older than the kill (bound {bound} ms)"
    );
    // The restarted process appends after the replayed history.
    assert!(
        now.iter().any(|&t| t > killed_at),
        "no samples after restart"
    );
}
