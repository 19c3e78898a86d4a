//! Issue 6's first story end to end through the real daemon, on tokio's paused
//! clock: a bad deploy of the simulated Cloud Run service is detected, rolled
//! back exactly once, verified, and the alert resolves; email and webhook say so.
//! The fake APIs, the simulated service, the sinks and the daemon share one
//! Clock, so the minute of story runs in (real) seconds. Real loopback sockets
//! work under paused time because tokio only auto-advances the clock when every
//! task is idle, and loopback I/O is ready on the next poll.

// The demo is the binary's (it needs the simulator, which the library must not
// use); compiled here again to run its story in-process on paused time.
#[allow(dead_code)]
#[path = "../src/bin/rearguard/demo.rs"]
mod demo;

use demo::{DemoRun, Phase, Timings};
use rearguard::clock::Clock;
use rearguard_sim::methods;

#[tokio::test(start_paused = true)]
async fn a_bad_deploy_is_rolled_back_once_verified_and_resolved() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::starting_at(1_790_000_000_000);
    let run = DemoRun::start(clock, dir.path(), Timings::default())
        .await
        .unwrap();
    let mut lines = Vec::new();
    let result = run.watch(&mut |l: &str| lines.push(l.to_string())).await;
    let timeline = match result {
        Ok(t) => t,
        Err(e) => panic!("{e}\n{}\n{}", lines.join("\n"), run.summary().join("\n")),
    };
    assert!(timeline.missing().is_empty(), "{}", lines.join("\n"));
    let deploy = timeline.phases[&Phase::Deployed];
    let verified = timeline.phases[&Phase::Verified];
    // Probe failing for `for` (5s) + group_wait + operation + one verify check.
    assert!(
        verified - deploy < 30_000,
        "verified {}ms after the deploy\n{}",
        verified - deploy,
        lines.join("\n")
    );

    let patches = run.demo.fake.calls_to(methods::SERVICES_PATCH);
    assert_eq!(patches.len(), 1, "exactly one rollback: {patches:#?}");
    assert!(patches[0].authorized);
    assert_eq!(
        run.demo.fake.serving(&run.demo.service_name),
        vec![(run.demo.good_revision.clone(), 100)]
    );
    let audit = run.daemon.store().audit(None, 100).await.unwrap();
    let decisions: Vec<&str> = audit.iter().map(|e| e.decision.as_str()).collect();
    assert_eq!(
        decisions.iter().filter(|d| **d == "started").count(),
        1,
        "{decisions:?}"
    );
    assert!(decisions.contains(&"verified"), "{decisions:?}");
    // The decision's evidence holds the trigger's expression over its `for`
    // window, evaluated as the rule did: the health probe at 0 all along.
    let started = audit.iter().find(|e| e.decision == "started").unwrap();
    let series = &started.evidence["series"];
    assert!(
        series["expr"]
            .as_str()
            .unwrap_or("")
            .contains("probe_success"),
        "{series}"
    );
    let points = series["points"].as_array().expect("points");
    assert!(points.len() >= 3, "{series}");
    let first = points[0][0].as_i64().unwrap();
    let last = points[points.len() - 1][0].as_i64().unwrap();
    assert!(
        last - first >= Timings::default().health_for.as_millis() as i64,
        "{series}"
    );
    assert!(
        points.iter().all(|p| p[1].as_f64() == Some(0.0)),
        "{series}"
    );

    let hooks = run.webhook.received();
    let health = |status: &str| {
        hooks.iter().any(|h| {
            h.status() == status
                && h.body["alerts"].as_array().is_some_and(|a| {
                    a.iter()
                        .any(|a| a["labels"]["alertname"] == "HealthProbeFailing")
                })
        })
    };
    assert!(health("firing"), "{hooks:#?}");
    assert!(health("resolved"), "{hooks:#?}");
    let subjects: Vec<String> = run.smtp.messages().iter().map(|m| m.subject()).collect();
    assert!(
        subjects
            .iter()
            .any(|s| s.starts_with("[FIRING") && s.contains("HealthProbeFailing")),
        "{subjects:?}"
    );
    assert!(
        subjects
            .iter()
            .any(|s| s.starts_with("[RESOLVED]") && s.contains("HealthProbeFailing")),
        "{subjects:?}"
    );
    assert!(
        subjects.iter().any(|s| s.contains("RearguardRollback")),
        "the rollback itself is announced: {subjects:?}"
    );
    run.shutdown().await;
}
