//! Never blind and silent: with examples/cloud-run-staging.yaml against the
//! fake Google APIs, every API starts hanging; the sources turn
//! `rearguard_source_up` to 0 (gauge and tsdb), `RearguardSourceDown` from
//! rules/ fires, and dispatch tells the team (the default route) within
//! minutes of simulated time, never the rollback receiver.

mod example_support;

use std::time::Duration;

use example_support::{Pipeline, MIN, T0};
use rearguard_sim::{Fault, FaultKind};

#[tokio::test(start_paused = true)]
async fn every_google_api_hanging_is_told_to_a_person_within_minutes() {
    let (clock, fake, service) = Pipeline::fake().await;
    // The probe points nowhere useful; this test is about the Google sources.
    let p = Pipeline::start(clock.clone(), fake, service, "http://127.0.0.1:9").await;
    assert!(p
        .loaded
        .rule_file_paths
        .iter()
        .any(|f| f.ends_with("rules/rearguard.yaml")));

    // Five healthy minutes: every source is up, nobody hears about rearguard.
    clock.sleep_until_ms(T0 + 5 * MIN).await;
    for kind in ["cloud_monitoring", "cloud_logging", "cloud_run"] {
        let g = p.source_up(kind);
        assert!(
            !g.is_empty() && g.iter().all(|v| *v == 1.0),
            "{kind}: {g:?}"
        );
    }
    let about_rearguard = |p: &Pipeline| {
        p.notifications()
            .into_iter()
            .filter(|(_, n)| n.alerts.iter().any(|a| a.name() == "RearguardSourceDown"))
            .collect::<Vec<_>>()
    };
    assert!(about_rearguard(&p).is_empty());

    // Every Google API hangs from now on.
    let hang_at = clock.now_ms();
    p.fake.inject(Fault::new(
        "*",
        FaultKind::Delay(Duration::from_secs(7 * 24 * 3600)),
    ));
    while clock.now_ms() < hang_at + 15 * MIN && about_rearguard(&p).is_empty() {
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let told = about_rearguard(&p);
    let (told_at, n) = told
        .first()
        .expect("nobody was told that rearguard is blind");
    let after = Duration::from_millis((told_at - hang_at) as u64);
    assert!(after <= Duration::from_secs(8 * 60), "told after {after:?}");
    assert_eq!(n.receiver, "team", "{n:?}");
    // Never the rollback receiver.
    assert!(told.iter().all(|(_, n)| n.receiver != "rollback-backend"));

    // Every kind is down, in the gauge.
    for kind in ["cloud_monitoring", "cloud_logging", "cloud_run"] {
        let g = p.source_up(kind);
        assert!(
            !g.is_empty() && g.iter().all(|v| *v == 0.0),
            "{kind}: {g:?}"
        );
    }
    for a in n
        .alerts
        .iter()
        .filter(|a| a.name() == "RearguardSourceDown")
    {
        let summary = &a.annotations["summary"];
        assert!(
            summary.starts_with("rearguard is blind: its cloud_") && !summary.contains("  "),
            "{summary}"
        );
    }
    p.shutdown().await;
}
