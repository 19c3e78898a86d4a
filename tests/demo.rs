//! `rearguard demo`'s scenario, run in real time as the command runs it: the
//! story reaches every phase, one services.patch reaches the fake, and the
//! sinks get the firing and resolved notifications and mail.

// The demo is the binary's (it needs the simulator, which the library must not
// use); compiled here again to drive it in-process and look inside.
#[allow(dead_code)]
#[path = "../src/bin/rearguard/demo.rs"]
mod demo;

use demo::{DemoRun, Phase, Timings};
use rearguard::clock::Clock;
use rearguard_sim::methods;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_reaches_every_phase_and_notifies() {
    let dir = tempfile::tempdir().unwrap();
    let run = DemoRun::start(Clock::system(), dir.path(), Timings::default())
        .await
        .unwrap();
    let mut lines = Vec::new();
    let result = run.watch(&mut |l: &str| lines.push(l.to_string())).await;
    let summary = run.summary();
    let timeline = match result {
        Ok(t) => t,
        Err(e) => panic!("{e}\n{}\n{}", lines.join("\n"), summary.join("\n")),
    };
    for phase in Phase::ALL {
        assert!(
            timeline.reached(phase),
            "{phase:?} missing:\n{}",
            lines.join("\n")
        );
    }
    // In the story's order.
    let at: Vec<i64> = Phase::ALL.iter().map(|p| timeline.phases[p]).collect();
    assert!(
        at.windows(2).all(|w| w[0] <= w[1]),
        "{at:?}\n{}",
        lines.join("\n")
    );

    let patches = run.demo.fake.calls_to(methods::SERVICES_PATCH);
    assert_eq!(patches.len(), 1, "{patches:#?}");
    assert_eq!(patches[0].status, 200);
    // Traffic is back on the healthy revision.
    let serving = run.demo.fake.serving(&run.demo.service_name);
    assert_eq!(serving, vec![(run.demo.good_revision.clone(), 100)]);

    let hooks = run.webhook.received();
    assert!(hooks.iter().any(|h| h.status() == "firing"), "{hooks:#?}");
    assert!(hooks.iter().any(|h| h.status() == "resolved"), "{hooks:#?}");
    let mails = run.smtp.messages();
    assert!(!mails.is_empty());
    assert!(mails
        .iter()
        .all(|m| m.to == vec!["oncall@example.com".to_string()]));
    assert!(
        mails
            .iter()
            .any(|m| m.subject().contains("HealthProbeFailing")),
        "{:?}",
        mails.iter().map(|m| m.subject()).collect::<Vec<_>>()
    );
    run.shutdown().await;
}
