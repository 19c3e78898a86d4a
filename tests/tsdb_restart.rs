//! The daemon's tsdb keeps its history in state_dir across a restart.

use promql_parser::label::{MatchOp, Matcher};
use rearguard::labels::Labels;
use rearguard::tsdb::Queryable;

async fn start(dir: &std::path::Path) -> rearguard::daemon::Daemon {
    start_with(dir, "", rearguard::clock::Clock::system()).await
}

/// A daemon on `dir/state` with `extra` config lines, on `clock`.
async fn start_with(
    dir: &std::path::Path,
    extra: &str,
    clock: rearguard::clock::Clock,
) -> rearguard::daemon::Daemon {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let text = format!(
        "listen: 127.0.0.1:{port}\nstate_dir: {state}\n{extra}",
        state = dir.join("state").display()
    );
    let cfg_path = dir.join("rearguard.yaml");
    std::fs::write(&cfg_path, &text).unwrap();
    let loaded = rearguard::config::load(&cfg_path).unwrap_or_else(|e| panic!("{e}"));
    rearguard::daemon::Daemon::start(loaded, clock, Some(listener))
        .await
        .unwrap_or_else(|e| panic!("daemon did not start: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_last_ten_minutes() {
    let dir = tempfile::tempdir().unwrap();
    let series = Labels::from_pairs([("__name__", "probe_success"), ("probe", "t0")]);
    let now = rearguard::clock::Clock::system().now_ms();
    let daemon = start(dir.path()).await;
    for i in 0..=600 {
        daemon
            .tsdb()
            .append_sample(&series, now - (600 - i) * 1000, 1.0)
            .unwrap();
    }
    // A clean shutdown flushes the WAL.
    daemon.shutdown().await;
    drop(daemon);

    let daemon = start(dir.path()).await;
    assert!(daemon.tsdb().replayed());
    let m = Matcher::new(MatchOp::Equal, "probe", "t0");
    let got = daemon.tsdb().select(&[m], now - 600_000, now);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].timestamps.len(), 601);
    // The issue's check: the look-back window spans the restart.
    let engine = rearguard::promql::Engine::new(rearguard::promql::EngineOptions::default());
    let r = engine
        .instant_query(
            daemon.tsdb().as_ref(),
            r#"count_over_time(probe_success{probe="t0"}[10m])"#,
            now,
        )
        .unwrap();
    match r.value {
        rearguard::promql::Value::Vector(v) => {
            assert_eq!(v.len(), 1);
            // (now - 10m, now]: the sample at exactly now - 10m is outside.
            assert_eq!(v[0].value, 600.0);
        }
        other => panic!("not a vector: {other:?}"),
    }
    // Samples go on after the restart.
    daemon
        .tsdb()
        .append_sample(&series, now + 1000, 0.0)
        .unwrap();
    daemon.shutdown().await;
}

const MIN: i64 = 60_000;

/// "Five failures in five minutes, for two minutes": the expression holds
/// after a restart only if the samples written before it are still there.
const FAILURES_RULE: &str = r#"groups:
  - name: nightly
    interval: 10s
    rules:
      - alert: RepeatedFailures
        expr: sum_over_time(job_failed{job="nightly"}[5m]) >= 5
        for: 2m
"#;

/// The one pending or firing alert of the daemon's rules, if any.
fn the_alert(
    daemon: &rearguard::daemon::Daemon,
) -> Option<rearguard::rules::alerting::ActiveAlert> {
    daemon
        .rules()
        .groups()
        .into_iter()
        .flat_map(|g| g.rules)
        .find_map(|r| match r.state {
            rearguard::rules::group::RuleState::Alerting(rule) => {
                rule.firing_and_pending().next().cloned()
            }
            _ => None,
        })
}

/// On the paused clock from `t0`: seven failures 10 s apart (the alert goes
/// pending at the fifth), a restart at `t0 + 90s` (after deleting the tsdb
/// directory unless `keep_history`), then the alert as it is at `t0 + 200s`.
async fn failures_across_a_restart(
    t0: i64,
    keep_history: bool,
) -> (
    rearguard::rules::alerting::ActiveAlert,
    Option<rearguard::rules::alerting::ActiveAlert>,
) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.yaml"), FAILURES_RULE).unwrap();
    let extra = "evaluation_interval: 10s\nrule_files: [rules.yaml]\n";
    let clock = rearguard::clock::Clock::starting_at(t0);
    let failed = Labels::from_pairs([("__name__", "job_failed"), ("job", "nightly")]);

    let daemon = start_with(dir.path(), extra, clock.clone()).await;
    for i in 0..7 {
        let t = t0 + i * 10_000;
        clock.sleep_until_ms(t).await;
        daemon.tsdb().append_sample(&failed, t, 1.0).unwrap();
    }
    clock.sleep_until_ms(t0 + 90_000).await;
    let before = the_alert(&daemon).expect("no alert pending before the restart");
    daemon.shutdown().await;
    drop(daemon);
    if !keep_history {
        std::fs::remove_dir_all(dir.path().join("state").join("tsdb")).unwrap();
    }

    let daemon = start_with(dir.path(), extra, clock.clone()).await;
    clock.sleep_until_ms(t0 + 200_000).await;
    let after = the_alert(&daemon);
    daemon.shutdown().await;
    (before, after)
}

#[tokio::test(start_paused = true)]
async fn a_for_window_spans_a_restart_because_the_history_survives() {
    use rearguard::rules::alerting::AlertState;
    let t0 = 1_780_000_000_000;
    let (before, after) = failures_across_a_restart(t0, true).await;
    assert_eq!(before.state, AlertState::Pending, "{before:?}");
    // Pending from the evaluation that saw the fifth failure (t0 + 40s).
    assert!(
        (t0 + 40_000..t0 + 50_000).contains(&before.active_at_ms),
        "active at {}",
        before.active_at_ms - t0
    );
    let after = after.expect("the alert was lost across the restart");
    assert_eq!(after.state, AlertState::Firing, "{after:?}");
    // The window was not restarted: it fired at the first evaluation two
    // minutes after it went pending, 70 s after the restart.
    assert_eq!(after.active_at_ms, before.active_at_ms);
    let fired = after.fired_at_ms.expect("firing without a fired time");
    let waited = fired - after.active_at_ms;
    assert!(
        (2 * MIN..2 * MIN + 10_000).contains(&waited),
        "fired {waited} ms after going pending"
    );

    // The same without the tsdb directory: the restored pending alert is
    // held briefly, the expression finds no failures, and it never fires.
    let (before, after) = failures_across_a_restart(t0, false).await;
    assert_eq!(before.state, AlertState::Pending);
    assert!(after.is_none(), "fired without history: {after:?}");
}

/// The value of a counter without labels in the daemon's registry.
fn counter(daemon: &rearguard::daemon::Daemon, name: &str) -> Option<f64> {
    let family = daemon
        .registry()
        .gather()
        .into_iter()
        .find(|f| f.name() == name)?;
    let m = family.get_metric().first()?;
    Some(m.get_counter().get_value())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_tsdb_files_are_set_aside_and_the_daemon_starts() {
    let dir = tempfile::tempdir().unwrap();
    let series = Labels::from_pairs([("__name__", "probe_success"), ("probe", "t0")]);
    let now = rearguard::clock::Clock::system().now_ms();
    let daemon = start(dir.path()).await;
    for i in 0..100 {
        daemon
            .tsdb()
            .append_sample(&series, now - (100 - i) * 1000, 1.0)
            .unwrap();
    }
    daemon.shutdown().await;
    drop(daemon);

    // A WAL segment cut short (as by a full disk) and a checkpoint of junk.
    let tsdb = dir.path().join("state").join("tsdb");
    let segment = tsdb.join("wal.0000000000");
    let len = std::fs::metadata(&segment).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    std::fs::write(tsdb.join("checkpoint.0000000000"), b"RGCKP001 not a frame").unwrap();

    let daemon = start(dir.path()).await;
    assert!(daemon.ready(), "the daemon is not ready after replay");
    assert_eq!(
        counter(&daemon, "rearguard_tsdb_files_set_aside_total"),
        Some(2.0)
    );
    for name in ["wal.0000000000.corrupt", "checkpoint.0000000000.corrupt"] {
        assert!(tsdb.join(name).exists(), "{name} was not set aside");
    }
    // The readable head of the segment was loaded: all but the cut sample.
    let m = Matcher::new(MatchOp::Equal, "probe", "t0");
    let got = daemon
        .tsdb()
        .select(std::slice::from_ref(&m), now - 200_000, now);
    assert_eq!(got[0].timestamps.len(), 99);
    daemon.shutdown().await;
    drop(daemon);

    // What was read from them was written down again: the next start finds
    // nothing damaged and the same history.
    let daemon = start(dir.path()).await;
    assert_eq!(
        counter(&daemon, "rearguard_tsdb_files_set_aside_total"),
        Some(0.0)
    );
    let got = daemon.tsdb().select(&[m], now - 200_000, now);
    assert_eq!(got[0].timestamps.len(), 99);
    daemon.shutdown().await;
}
