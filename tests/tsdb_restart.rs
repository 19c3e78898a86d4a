//! The daemon's tsdb keeps its history in state_dir across a restart.

use promql_parser::label::{MatchOp, Matcher};
use rearguard::labels::Labels;
use rearguard::tsdb::Queryable;

async fn start(dir: &std::path::Path) -> rearguard::daemon::Daemon {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let text = format!(
        "listen: 127.0.0.1:{port}\nstate_dir: {state}\n",
        state = dir.join("state").display()
    );
    let cfg_path = dir.join("rearguard.yaml");
    std::fs::write(&cfg_path, &text).unwrap();
    let loaded = rearguard::config::load(&cfg_path).unwrap_or_else(|e| panic!("{e}"));
    rearguard::daemon::Daemon::start(loaded, rearguard::clock::Clock::system(), Some(listener))
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
