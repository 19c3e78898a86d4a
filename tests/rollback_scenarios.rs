//! Rollback scenarios on simulated time: an in-memory Cloud Run, a real store,
//! the ActionRunner with its guard rails, verification and events.

mod rollback_support;

use std::sync::Arc;

use rearguard::action::journal::IntentKind;
use rearguard::action::{reason, Outcome, Trigger};
use rearguard::dispatch::NotificationSink;
use rearguard::store::{Hold, Intent, IntentState, Quarantined};
use rearguard_testkit::cloud_run::FakeCall;
use rollback_support::*;

fn phases(h: &Harness) -> Vec<String> {
    h.sink.phases()
}

/// Healthy backend-00001 serves; backend-00002 is deployed and breaks; the
/// alert goes active 30 s later and fires after `for: 5m`; dispatch hands the
/// notification over: traffic goes back to 00001 exactly once and is verified.
#[tokio::test(start_paused = true)]
async fn bad_deploy_is_rolled_back_exactly_once_and_verified() {
    let (h, a) = bad_deploy(&traffic_action("")).await;

    h.runner.send(h.notification(&a)).await.unwrap();
    h.runner.idle().await;

    assert_eq!(h.serving(), "backend-00001");
    assert_eq!(h.fake.accepted_patches(), 1);
    let patch = h
        .fake
        .calls()
        .into_iter()
        .find_map(|c| match c {
            FakeCall::Patch(_, p) => Some(p),
            _ => None,
        })
        .unwrap();
    let traffic = patch.traffic.unwrap();
    assert_eq!(
        (traffic[0].revision.as_deref(), traffic[0].percent),
        (Some("backend-00001"), 100)
    );
    assert_eq!(patch.env, None);
    assert_eq!(phases(&h), ["started", "verified"]);
    let started = &h.sink.alerts()[0];
    let summary = &started.annotations["summary"];
    assert!(
        summary.contains("from backend-00002 to backend-00001 because BackendDown (value 0.42"),
        "{summary}"
    );
    assert_eq!(started.labels.get("alertname"), Some("RearguardRollback"));
    assert_eq!(started.labels.get("service"), Some("backend"));
    let decisions = h.audit_decisions().await;
    let names: Vec<&str> = decisions.iter().map(|(d, _)| d.as_str()).collect();
    assert_eq!(names, ["started", "done", "verified"]);
    let audit = h.store.audit(None, 10).await.unwrap();
    assert_eq!(audit[0].evidence["before"]["serving"], "backend-00002");
    assert_eq!(
        audit[0].evidence["trigger"]["labels"]["alertname"],
        "BackendDown"
    );
    assert_eq!(audit[1].evidence["after"]["serving"], "backend-00001");
    let q = h.store.quarantine(None).await.unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].revision, "backend-00002");
    assert_eq!(
        h.metric(
            "rearguard_rollbacks_total",
            &[("target", "backend"), ("result", "verified")]
        ),
        1.0
    );
    assert_eq!(
        h.metric(
            "rearguard_rollback_duration_seconds",
            &[("target", "backend")]
        ),
        1.0
    );

    // Dispatch repeats the notification (the alert has not resolved in its
    // view yet): cooldown, no second rollback.
    h.runner.send(h.notification(&a)).await.unwrap();
    h.runner.idle().await;
    assert_eq!(h.fake.accepted_patches(), 1);
    assert_eq!(
        h.metric(
            "rearguard_rollback_skipped_total",
            &[("target", "backend"), ("reason", "cooldown")]
        ),
        1.0
    );
}

#[tokio::test(start_paused = true)]
async fn outage_long_after_the_last_deploy_is_not_rolled_back_and_says_why() {
    let h = Harness::new(&traffic_action(""));
    h.deploy("backend-00002", true);
    // The outage starts 5 hours after the deploy (bake window 2h).
    let a = alert(T0 + 5 * HOUR);
    sleep_until(&h.clock, a.starts_at_ms).await;
    let out = h.runner.run("backend", Trigger::alert(a)).await;
    assert_eq!(
        out.skip_reason(),
        Some(reason::NOT_DEPLOY_REGRESSION),
        "{out:?}"
    );
    assert_eq!(h.fake.accepted_patches(), 0);
    assert_eq!(phases(&h), ["skipped"]);
    let ev = &h.sink.alerts()[0];
    assert_eq!(ev.labels.get("reason"), Some("not_deploy_regression"));
    let text = &ev.annotations["summary"];
    assert!(
        text.contains("not a deploy regression") && text.contains("bake window 2h"),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn flapping_stops_at_the_budget_then_holds_and_escalates() {
    let h = Harness::new(&traffic_action(
        "    cooldown: 10m\n    max_per_window: {count: 2, window: 24h}\n",
    ));
    let mut outcomes = Vec::new();
    for (i, rev) in ["backend-00002", "backend-00003", "backend-00004"]
        .iter()
        .enumerate()
    {
        let deploy_at = T0 + i as i64 * HOUR;
        sleep_until(&h.clock, deploy_at).await;
        h.deploy(rev, true);
        let a = alert(deploy_at + 30_000);
        sleep_until(&h.clock, a.starts_at_ms).await;
        outcomes.push(h.runner.run("backend", Trigger::alert(a)).await);
    }
    assert!(
        matches!(outcomes[0], Outcome::Verified { .. }),
        "{outcomes:?}"
    );
    assert!(
        matches!(outcomes[1], Outcome::Verified { .. }),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[2].skip_reason(), Some(reason::BUDGET));
    assert_eq!(h.fake.accepted_patches(), 2);
    assert_eq!(h.serving(), "backend-00004");
    let holds = h.store.holds().await.unwrap();
    assert_eq!(holds.len(), 1);
    assert!(
        holds[0].reason.contains("budget of 2 actions per 1d"),
        "{}",
        holds[0].reason
    );
    assert_eq!(
        h.metric("rearguard_target_held", &[("target", "backend")]),
        1.0
    );
    let escalation = h
        .sink
        .alerts()
        .into_iter()
        .find(|a| a.labels.get("phase") == Some("escalated"))
        .unwrap();
    assert_eq!(escalation.labels.get("severity"), Some("critical"));

    // Held now: the next alert does nothing, without another escalation.
    let a = alert(h.clock.now_ms());
    let out = h.runner.run("backend", Trigger::alert(a)).await;
    assert_eq!(out.skip_reason(), Some(reason::HOLD));
    assert_eq!(
        h.sink.phases().iter().filter(|p| *p == "escalated").count(),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn dry_run_decides_and_tells_but_changes_nothing() {
    let h = Harness::new(&traffic_action("    dry_run: true\n"));
    h.deploy("backend-00002", true);
    let a = alert(T0 + 30_000);
    sleep_until(&h.clock, a.starts_at_ms).await;
    let out = h.runner.run("backend", Trigger::alert(a)).await;
    let Outcome::DryRun { plan } = &out else {
        panic!("{out:?}")
    };
    assert!(
        plan[0].contains("from backend-00002 to backend-00001"),
        "{plan:?}"
    );
    assert_eq!(h.fake.accepted_patches(), 0);
    assert_eq!(h.serving(), "backend-00002");
    assert_eq!(phases(&h), ["dry_run"]);
    assert!(h.store.intents_since(None, 0, 10).await.unwrap().is_empty());
    let audit = h.store.audit(None, 10).await.unwrap();
    assert!(audit.iter().any(|e| e.decision == "dry_run" && e.dry_run));
    assert_eq!(
        h.metric("rearguard_rollbacks_total", &[("result", "dry_run")]),
        1.0
    );

    // A manual dry run of a live action does the same.
    let h2 = Harness::new(&traffic_action(""));
    h2.deploy("backend-00002", true);
    let out = h2
        .runner
        .run("backend", Trigger::manual(None, true, "alice"))
        .await;
    assert!(matches!(out, Outcome::DryRun { .. }), "{out:?}");
    assert_eq!(h2.fake.accepted_patches(), 0);
}

#[tokio::test(start_paused = true)]
async fn holds_from_the_store_and_the_hold_file_stop_automatic_actions() {
    let (h, a) = bad_deploy(&traffic_action("")).await;

    h.runner
        .hold(Some("backend"), "investigating", "alice")
        .await
        .unwrap();
    let out = h.runner.run("backend", Trigger::alert(a.clone())).await;
    assert_eq!(out.skip_reason(), Some(reason::HOLD));
    assert!(h
        .runner
        .unhold(Some("backend"), "done", "alice")
        .await
        .unwrap());

    h.store
        .set_hold(Hold {
            target: "*".into(),
            reason: "freeze".into(),
            set_by: "cli".into(),
            at_ms: 0,
        })
        .await
        .unwrap();
    let out = h.runner.run("backend", Trigger::alert(a.clone())).await;
    let Outcome::Skipped { detail, .. } = &out else {
        panic!("{out:?}")
    };
    assert!(detail.contains("freeze"), "{detail}");
    h.store.remove_hold("*").await.unwrap();

    std::fs::write(h.dir.path().join("HOLD"), "release week\n").unwrap();
    let out = h.runner.run("backend", Trigger::alert(a.clone())).await;
    let Outcome::Skipped { detail, .. } = &out else {
        panic!("{out:?}")
    };
    assert!(detail.contains("release week"), "{detail}");
    assert_eq!(
        h.metric("rearguard_target_held", &[("target", "backend")]),
        1.0
    );
    std::fs::remove_file(h.dir.path().join("HOLD")).unwrap();

    assert_eq!(h.fake.accepted_patches(), 0);
    let out = h.runner.run("backend", Trigger::alert(a)).await;
    assert!(matches!(out, Outcome::Verified { .. }), "{out:?}");
    assert_eq!(
        h.metric("rearguard_target_held", &[("target", "backend")]),
        0.0
    );
    let decisions = h.audit_decisions().await;
    assert!(decisions
        .iter()
        .any(|(d, r)| d == "hold" && r == "investigating"));
    assert!(decisions.iter().any(|(d, _)| d == "unhold"));
}

#[tokio::test(start_paused = true)]
async fn a_rollback_that_does_not_fix_it_holds_the_target_and_says_so() {
    let h = Harness::new(&format!(
        "  backend:\n    cloud_run_traffic:\n      service: {SVC}\n    verify:\n      probes: [backend-health]\n      backoff: [2s, 4s, 8s]\n"
    ));
    h.deploy("backend-00002", true);
    *h.world.always_firing.lock().unwrap() = true;
    let a = alert(T0 + 30_000);
    sleep_until(&h.clock, a.starts_at_ms).await;
    let started = h.clock.now_ms();
    let out = h.runner.run("backend", Trigger::alert(a.clone())).await;
    let Outcome::NotVerified { detail } = &out else {
        panic!("{out:?}")
    };
    assert!(detail.contains("BackendDown still firing"), "{detail}");
    // The verification waited 2+4+8 s after the operation (20 s).
    assert!(
        h.clock.now_ms() - started >= 34_000,
        "{}",
        h.clock.now_ms() - started
    );
    assert_eq!(h.fake.accepted_patches(), 1);
    assert_eq!(phases(&h), ["started", "failed"]);
    let failed = &h.sink.alerts()[1];
    assert_eq!(failed.labels.get("severity"), Some("critical"));
    assert!(failed.annotations["summary"].contains("rollback did not fix backend"));
    assert_eq!(h.store.holds().await.unwrap()[0].target, "backend");

    sleep_until(&h.clock, T0 + 2 * HOUR).await;
    let out = h.runner.run("backend", Trigger::alert(a)).await;
    assert_eq!(out.skip_reason(), Some(reason::HOLD));
    assert_eq!(h.fake.accepted_patches(), 1);
}

/// Flip the flag first, then shift traffic.
fn ladder_yaml() -> String {
    format!(
        "  backend:\n    steps:\n      - cloud_run_env: {{service: {SVC}, env: {{USE_SANDBOX: \"false\"}}}}\n      - cloud_run_traffic: {{service: {SVC}}}\n    verify:\n      probes: [backend-health]\n      backoff: [2s, 4s]\n"
    )
}

/// A ladder action, a bad deploy whose env-flipped revision is just as bad,
/// and its alert, now active.
async fn bad_deploy_before_a_ladder() -> (Harness, rearguard::alert::Alert) {
    let h = Harness::new(&ladder_yaml());
    h.deploy("backend-00002", true);
    // The env revision carries the same bad code.
    h.world.bad.lock().unwrap().push("backend-00003".into());
    let a = alert(T0 + 30_000);
    sleep_until(&h.clock, a.starts_at_ms).await;
    (h, a)
}

/// Flip the flag first; when that does not help, shift traffic.
#[tokio::test(start_paused = true)]
async fn a_ladder_tries_each_step_and_verifies_before_the_next() {
    let (h, a) = bad_deploy_before_a_ladder().await;
    let out = h.runner.run("backend", Trigger::alert(a)).await;
    let Outcome::Verified {
        step,
        from_revision,
        to_revision,
    } = &out
    else {
        panic!("{out:?}")
    };
    assert_eq!(*step, 2);
    assert_eq!(from_revision.as_deref(), Some("backend-00003"));
    assert_eq!(to_revision.as_deref(), Some("backend-00001"));
    assert_eq!(h.fake.accepted_patches(), 2);
    let svc = h.fake.service(SVC).unwrap();
    assert_eq!(
        svc.env.get("USE_SANDBOX").map(String::as_str),
        Some("false")
    );
    assert_eq!(h.serving(), "backend-00001");
    assert_eq!(phases(&h), ["started", "started", "verified"]);
    let q: Vec<String> = h
        .store
        .quarantine(None)
        .await
        .unwrap()
        .into_iter()
        .map(|q| q.revision)
        .collect();
    assert_eq!(q, ["backend-00002", "backend-00003"]);
    // One run counts once against the budget.
    assert_eq!(
        h.store.action_runs_since("backend", 0).await.unwrap().len(),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn no_earlier_ready_revision_means_no_rollback() {
    let h = Harness::new(&traffic_action(""));
    // The only earlier revision is not Ready.
    h.fake.set_revision_ready(SVC, "backend-00001", false);
    h.deploy("backend-00002", true);
    let a = alert(T0 + 30_000);
    sleep_until(&h.clock, a.starts_at_ms).await;
    let out = h.runner.run("backend", Trigger::alert(a)).await;
    assert_eq!(
        out.skip_reason(),
        Some(reason::NO_EARLIER_READY_REVISION),
        "{out:?}"
    );
    assert_eq!(h.fake.accepted_patches(), 0);
    assert_eq!(
        h.sink.alerts()[0].labels.get("reason"),
        Some("no_earlier_ready_revision")
    );
}

#[tokio::test(start_paused = true)]
async fn a_quarantined_revision_is_never_a_target() {
    let h = Harness::new(&traffic_action(""));
    h.store
        .quarantine_revision(Quarantined {
            service: SVC.into(),
            revision: "backend-00001".into(),
            reason: "rolled back from earlier".into(),
            at_ms: 0,
        })
        .await
        .unwrap();
    h.deploy("backend-00002", true);
    let a = alert(T0 + 30_000);
    sleep_until(&h.clock, a.starts_at_ms).await;
    let out = h.runner.run("backend", Trigger::alert(a)).await;
    assert_eq!(out.skip_reason(), Some(reason::QUARANTINED), "{out:?}");
    // A manual rollback pinned to it is refused too.
    let out = h
        .runner
        .run(
            "backend",
            Trigger::manual(Some("backend-00001".into()), false, "bob"),
        )
        .await;
    assert_eq!(out.skip_reason(), Some(reason::QUARANTINED), "{out:?}");
    assert_eq!(h.fake.accepted_patches(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_alert_must_still_fire_when_the_action_starts() {
    let (h, a) = bad_deploy(&traffic_action("")).await;
    // Someone fixed it by hand meanwhile.
    h.world.bad.lock().unwrap().clear();
    let out = h.runner.run("backend", Trigger::alert(a)).await;
    assert_eq!(out.skip_reason(), Some(reason::ALERT_RESOLVED));
    assert_eq!(h.fake.accepted_patches(), 0);
}

#[tokio::test(start_paused = true)]
async fn two_rearguards_on_one_service_roll_back_once() {
    let first = Harness::new(&traffic_action(""));
    let second = Harness::with(
        first.clock.clone(),
        first.fake.clone(),
        tempfile::tempdir().unwrap(),
        &traffic_action(""),
        first.world.clone(),
    );
    first.deploy("backend-00002", true);
    let a = alert(T0 + 30_000);
    sleep_until(&first.clock, a.starts_at_ms).await;

    // Both read the service (same etag) before either patch lands.
    let gate = first.fake.hold_patches().await;
    first
        .runner
        .spawn("backend".into(), Trigger::alert(a.clone()));
    second
        .runner
        .spawn("backend".into(), Trigger::alert(a.clone()));
    wait_until(|| {
        first
            .fake
            .calls()
            .iter()
            .filter(|c| matches!(c, FakeCall::Patch(..)))
            .count()
            >= 2
    })
    .await;
    drop(gate);
    first.runner.idle().await;
    second.runner.idle().await;

    assert_eq!(first.fake.accepted_patches(), 1);
    assert_eq!(first.serving(), "backend-00001");
    let results: Vec<f64> = [&first, &second]
        .iter()
        .map(|h| h.metric("rearguard_rollbacks_total", &[("result", "superseded")]))
        .collect();
    assert_eq!(results.iter().sum::<f64>(), 1.0, "{results:?}");
    let loser = if results[0] == 1.0 { &first } else { &second };
    let decisions = loser.audit_decisions().await;
    assert!(
        decisions
            .iter()
            .any(|(d, r)| d == "superseded" && r.contains("already rolled back by another")),
        "{decisions:?}"
    );

    // A third rearguard that reads the service after the rollback sees the
    // annotations and does not roll back further.
    let third = Harness::with(
        first.clock.clone(),
        first.fake.clone(),
        tempfile::tempdir().unwrap(),
        &traffic_action(""),
        first.world.clone(),
    );
    *first.world.always_firing.lock().unwrap() = true;
    let out = third.runner.run("backend", Trigger::alert(a)).await;
    assert_eq!(out.skip_reason(), Some(reason::OTHER_ACTOR), "{out:?}");
    assert_eq!(first.fake.accepted_patches(), 1);
}

/// A crash between writing the intent and the API call: the restarted runner
/// reads the service, sees no change, the alert still fires, and patches once.
#[tokio::test(start_paused = true)]
async fn restart_between_intent_and_call_rolls_back_once() {
    let (h, a) = bad_deploy(&traffic_action("")).await;

    let gate = h.fake.hold_patches().await;
    h.runner.spawn("backend".into(), Trigger::alert(a.clone()));
    wait_until(|| {
        h.fake
            .calls()
            .iter()
            .any(|c| matches!(c, FakeCall::Patch(..)))
    })
    .await;
    // "kill": the held request never reaches the service.
    h.runner.shutdown().await;
    drop(gate);
    assert_eq!(h.fake.accepted_patches(), 0);
    let open = h.store.unfinished_intents().await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].state, IntentState::Pending);

    let restarted = h.restart(&traffic_action(""));
    assert_eq!(restarted.runner.reconcile().await.unwrap(), 1);
    restarted.runner.idle().await;
    assert_eq!(restarted.fake.accepted_patches(), 1);
    assert_eq!(restarted.serving(), "backend-00001");
    assert!(restarted
        .store
        .unfinished_intents()
        .await
        .unwrap()
        .is_empty());
    assert_eq!(restarted.sink.phases(), ["verified"]);

    // Dispatch re-sends the still-known alert after the restart: cooldown.
    let out = restarted.runner.run("backend", Trigger::alert(a)).await;
    assert_eq!(out.skip_reason(), Some(reason::COOLDOWN));
    assert_eq!(restarted.fake.accepted_patches(), 1);
}

/// A crash after the API accepted the patch, before completion: the restarted
/// runner finds the change made and only waits and verifies.
#[tokio::test(start_paused = true)]
async fn restart_between_call_and_completion_does_not_patch_again() {
    let (h, a) = bad_deploy(&traffic_action("")).await;

    h.runner.spawn("backend".into(), Trigger::alert(a));
    wait_until(|| h.fake.accepted_patches() > 0).await;
    h.runner.shutdown().await;
    let open = h.store.unfinished_intents().await.unwrap();
    assert_eq!(open.len(), 1, "{open:?}");

    let restarted = h.restart(&traffic_action(""));
    restarted.runner.reconcile().await.unwrap();
    restarted.runner.idle().await;
    assert_eq!(restarted.fake.accepted_patches(), 1);
    assert_eq!(restarted.serving(), "backend-00001");
    let intent = restarted.store.intents_since(None, 0, 10).await.unwrap();
    assert_eq!(intent[0].state, IntentState::Done);
    assert_eq!(intent[0].note.as_deref(), Some("completed after a restart"));
    assert_eq!(restarted.sink.phases(), ["verified"]);
}

/// A crash after the ladder's first step (the env flip) was accepted: the
/// restarted runner completes it, finds it did not fix the service, and goes
/// on to the next step, as the interrupted run would have.
#[tokio::test(start_paused = true)]
async fn restart_in_a_ladder_goes_on_to_the_next_step() {
    let (h, a) = bad_deploy_before_a_ladder().await;
    h.runner.spawn("backend".into(), Trigger::alert(a));
    wait_until(|| h.fake.accepted_patches() > 0).await;
    h.runner.shutdown().await;
    assert_eq!(h.fake.accepted_patches(), 1, "only the env flip was made");

    let restarted = h.restart(&ladder_yaml());
    assert_eq!(restarted.runner.reconcile().await.unwrap(), 1);
    restarted.runner.idle().await;
    assert_eq!(
        restarted.fake.accepted_patches(),
        2,
        "env once, then traffic"
    );
    assert_eq!(restarted.serving(), "backend-00001");
    assert_eq!(restarted.sink.phases(), ["started", "verified"]);
    let decisions: Vec<String> = restarted
        .store
        .audit(None, 50)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.decision.to_string())
        .collect();
    assert!(
        decisions.contains(&"reconciled".to_string()),
        "{decisions:?}"
    );
    assert!(
        decisions.contains(&"not_verified".to_string()),
        "{decisions:?}"
    );
    assert!(restarted
        .store
        .unfinished_intents()
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        restarted.metric(
            "rearguard_rollbacks_total",
            &[("target", "backend"), ("result", "verified")]
        ),
        1.0
    );
}

/// The first step (`kind`) of run `backend-1` on a BackendDown `alert`
/// (as JSON), written at `at_ms` and left pending, as a crash leaves it.
fn pending_intent(kind: &str, at_ms: i64, alert: serde_json::Value) -> Intent {
    Intent {
        id: 0,
        run_id: "backend-1".into(),
        target: "backend".into(),
        kind: IntentKind::parse(kind).expect("a kind rearguard writes"),
        service: Some(SVC.into()),
        step: 0,
        fingerprint: String::new(),
        alertname: "BackendDown".into(),
        from_revision: None,
        to_revision: None,
        etag: None,
        // Read from the JSON shape the store keeps it in.
        detail: serde_json::from_value(serde_json::json!({ "alert": alert })).unwrap(),
        state: IntentState::Pending,
        operation: None,
        note: None,
        manual: false,
        created_at_ms: at_ms,
        updated_at_ms: at_ms,
    }
}

/// A kill after the intent was written but before its `started` notice was
/// recorded: the restart says it (then the outcome), so people hear both.
#[tokio::test(start_paused = true)]
async fn a_started_notice_lost_before_it_was_recorded_is_said_at_restart() {
    let (h, a) = bad_deploy(&traffic_action("")).await;
    let alert_json = serde_json::json!({
        "labels": {"alertname": "BackendDown", "service": "backend", "severity": "critical"},
        "active_at_ms": a.active_at_ms,
        "starts_at_ms": a.starts_at_ms,
        "value": a.value,
    });
    h.store
        .insert_intent(Intent {
            fingerprint: format!("{:016x}", a.fingerprint()),
            from_revision: Some("backend-00002".into()),
            to_revision: Some("backend-00001".into()),
            ..pending_intent("cloud_run_traffic", h.clock.now_ms(), alert_json)
        })
        .await
        .unwrap();
    h.runner.reconcile().await.unwrap();
    h.runner.idle().await;
    assert_eq!(h.fake.accepted_patches(), 1);
    assert_eq!(h.sink.phases(), ["started", "verified"]);
    let started = &h.sink.alerts()[0];
    assert_eq!(started.labels.get("from_revision"), Some("backend-00002"));
    assert_eq!(started.labels.get("to_revision"), Some("backend-00001"));
    assert!(started.annotations.contains_key("event_id"));
}

/// A command a restart interrupted is not run again (it may or may not have
/// run); while its alert fires it counts as a failed step and the ladder goes on.
#[tokio::test(start_paused = true)]
async fn an_interrupted_command_is_not_rerun_and_the_ladder_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let ran = dir.path().join("ran");
    let yaml = format!(
        "  backend:\n    steps:\n      - command: [sh, -c, 'touch {}']\n      - cloud_run_traffic: {{service: {SVC}}}\n    verify:\n      probes: [backend-health]\n      backoff: [2s]\n",
        ran.display()
    );
    let (h, a) = bad_deploy(&yaml).await;
    // As the runner writes it into the intent, so a restart knows the trigger.
    let alert_json = serde_json::json!({
        "labels": {"alertname": "BackendDown", "service": "backend", "severity": "critical"},
        "active_at_ms": a.active_at_ms,
        "starts_at_ms": a.starts_at_ms,
        "value": a.value,
    });
    h.store
        .insert_intent(Intent {
            fingerprint: format!("{:016x}", a.fingerprint()),
            ..pending_intent("command", h.clock.now_ms(), alert_json)
        })
        .await
        .unwrap();
    h.runner.reconcile().await.unwrap();
    h.runner.idle().await;
    assert!(!ran.exists(), "the interrupted command ran again");
    assert_eq!(h.serving(), "backend-00001", "the traffic step ran");
    let intents = h.store.intents_since(None, 0, 10).await.unwrap();
    let command = intents.iter().find(|i| i.kind == "command").unwrap();
    assert_eq!(command.state, IntentState::Abandoned);
    assert!(
        command
            .note
            .as_deref()
            .unwrap_or("")
            .contains("may or may not have run"),
        "{command:?}"
    );
    // People hear that the command step failed, then that the rollback worked.
    assert_eq!(h.sink.phases(), ["failed", "started", "verified"]);
}

/// Runs a rollback of a bad deploy until its change has taken effect and its
/// verification has begun, then "kills" the runner; returns it for a restart.
async fn crash_while_verifying() -> Harness {
    let (h, a) = bad_deploy(&traffic_action("")).await;
    h.runner.spawn("backend".into(), Trigger::alert(a));
    loop {
        let open = h.store.unfinished_intents().await.unwrap();
        if open.iter().any(|i| i.state == IntentState::Verifying) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    h.runner.shutdown().await;
    assert_eq!(h.fake.accepted_patches(), 1);
    assert!(h.sink.phases().iter().all(|p| p != "verified"));
    h
}

/// A crash during verification: the restart verifies (no second patch).
#[tokio::test(start_paused = true)]
async fn restart_during_verification_verifies_without_acting_again() {
    let restarted = crash_while_verifying().await.restart(&traffic_action(""));
    assert_eq!(restarted.runner.reconcile().await.unwrap(), 1);
    restarted.runner.idle().await;
    assert_eq!(restarted.fake.accepted_patches(), 1);
    assert_eq!(restarted.sink.phases(), ["verified"]);
    let intents = restarted.store.intents_since(None, 0, 10).await.unwrap();
    assert_eq!(intents[0].state, IntentState::Done);
}

/// A crash during verification; after the restart the rule manager holds the
/// trigger firing (restored, not evaluated since) although the good revision
/// serves: the probes, fresh evidence, decide, and the rollback is verified,
/// never called not_verified, nor acted on again.
#[tokio::test(start_paused = true)]
async fn restart_during_verification_is_not_failed_by_the_restore_hold() {
    let restarted = crash_while_verifying().await.restart(&traffic_action(""));
    *restarted.world.held_by_restore.lock().unwrap() = true;
    assert_eq!(restarted.runner.reconcile().await.unwrap(), 1);
    restarted.runner.idle().await;
    assert_eq!(restarted.fake.accepted_patches(), 1);
    assert_eq!(restarted.sink.phases(), ["verified"]);
    assert!(restarted.store.holds().await.unwrap().is_empty(), "no hold");
    let intents = restarted.store.intents_since(None, 0, 10).await.unwrap();
    assert_eq!(intents[0].state, IntentState::Done);
    let note = intents[0].note.as_deref().unwrap_or("");
    assert!(!note.contains("not verified"), "{intents:?}");
}

/// Without verification probes, an alert held by the restore grace is not
/// evidence either way: verification waits for fresh evaluation (here the
/// hold ends 10 s after the restart with the alert not returned) and verifies.
#[tokio::test(start_paused = true)]
async fn without_probes_verification_waits_out_the_restore_hold() {
    let no_probes = format!("  backend:\n    cloud_run_traffic:\n      service: {SVC}\n");
    let restarted = crash_while_verifying().await.restart(&no_probes);
    let world = restarted.world.clone();
    *world.held_by_restore.lock().unwrap() = true;
    let release = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_secs(10)).await;
        *world.held_by_restore.lock().unwrap() = false;
    });
    let started = restarted.clock.now_ms();
    assert_eq!(restarted.runner.reconcile().await.unwrap(), 1);
    restarted.runner.idle().await;
    release.await.unwrap();
    assert_eq!(restarted.sink.phases(), ["verified"]);
    assert!(
        restarted.clock.now_ms() - started >= 10_000,
        "not verified while only the hold was known"
    );
    assert_eq!(restarted.fake.accepted_patches(), 1);
}

/// A crash during verification, and someone deploys while rearguard is down:
/// the restart leaves their newer decision alone.
#[tokio::test(start_paused = true)]
async fn restart_after_the_service_changed_leaves_it_alone() {
    let restarted = crash_while_verifying().await.restart(&traffic_action(""));
    restarted.deploy("backend-00003", true);
    restarted.runner.reconcile().await.unwrap();
    restarted.runner.idle().await;
    assert_eq!(restarted.fake.accepted_patches(), 1, "no second rollback");
    assert_eq!(restarted.serving(), "backend-00003");
    let intents = restarted.store.intents_since(None, 0, 10).await.unwrap();
    assert_eq!(intents[0].state, IntentState::Superseded);
    assert!(
        intents[0]
            .note
            .as_deref()
            .unwrap_or("")
            .contains("changed since"),
        "{intents:?}"
    );
}

/// An unfinished intent whose alert no longer fires is abandoned, not retried,
/// and does not count against the budget.
#[tokio::test(start_paused = true)]
async fn reconcile_abandons_what_is_no_longer_needed() {
    let h = Harness::new(&traffic_action(""));
    h.store
        .insert_intent(Intent {
            fingerprint: "00".into(),
            from_revision: Some("backend-00002".into()),
            to_revision: Some("backend-00001".into()),
            etag: Some("old".into()),
            ..pending_intent(
                "cloud_run_traffic",
                T0,
                serde_json::json!({"labels": {"alertname": "BackendDown"}, "active_at_ms": T0}),
            )
        })
        .await
        .unwrap();
    // backend-00001 serves and nothing is bad: the alert does not fire.
    h.runner.reconcile().await.unwrap();
    // Already at the target: verified in the background, then done.
    h.runner.idle().await;
    assert_eq!(h.fake.accepted_patches(), 0);
    let all = h.store.intents_since(None, 0, 10).await.unwrap();
    assert_eq!(all[0].state, IntentState::Done);
}

// Real time: a child process does not run on tokio's paused clock.
#[tokio::test]
async fn a_command_action_gets_the_alert_and_its_output_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("ran");
    let yaml = format!(
        "  backend:\n    command: [sh, -c, 'echo \"$REARGUARD_ALERTNAME $REARGUARD_SERVICE $REARGUARD_VALUE\" | tee {}']\n    bake_window: 0\n    verify:\n      backoff: [200ms]\n",
        out_file.display()
    );
    let h = Harness::new(&yaml);
    *h.world.fixed_by_file.lock().unwrap() = Some(out_file.clone());
    let out = h.runner.run("backend", Trigger::alert(alert(T0))).await;
    // The alert fires until the command wrote its file: verified.
    assert!(matches!(out, Outcome::Verified { step: 1, .. }), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(&out_file).unwrap().trim(),
        "BackendDown backend 0.42"
    );
    let audit = h.store.audit(None, 10).await.unwrap();
    let done = audit.iter().find(|e| e.decision == "done").unwrap();
    assert_eq!(
        done.evidence["command"]["stdout"].as_str().unwrap().trim(),
        "BackendDown backend 0.42"
    );
    assert_eq!(done.evidence["command"]["exit_code"], 0);
}

#[tokio::test]
async fn a_failing_command_fails_and_holds() {
    let h = Harness::new("  backend:\n    command: [sh, -c, 'echo nope >&2; exit 4']\n    bake_window: 0\n    verify:\n      backoff: [200ms]\n");
    *h.world.always_firing.lock().unwrap() = true;
    let out = h.runner.run("backend", Trigger::alert(alert(T0))).await;
    let Outcome::Failed { detail } = &out else {
        panic!("{out:?}")
    };
    assert!(detail.contains("exited 4"), "{detail}");
    assert_eq!(h.store.holds().await.unwrap().len(), 1);
    let failed = h.store.audit(None, 10).await.unwrap();
    assert!(failed
        .iter()
        .any(|e| e.evidence["command"]["stderr"].as_str() == Some("nope\n")));
}

#[tokio::test(start_paused = true)]
async fn own_events_and_resolved_notifications_never_trigger() {
    let (h, a) = bad_deploy(&traffic_action("")).await;
    let mut own = a.clone();
    own.labels = rearguard::labels::Labels::from_pairs([
        ("alertname", "RearguardRollback"),
        ("severity", "critical"),
    ]);
    h.runner.send(h.notification(&own)).await.unwrap();
    let mut resolved = a.clone();
    resolved.ends_at_ms = Some(h.clock.now_ms() - 1000);
    h.runner.send(h.notification(&resolved)).await.unwrap();
    h.runner.idle().await;
    assert_eq!(h.fake.accepted_patches(), 0);
    assert!(h.sink.alerts().is_empty());
}

#[tokio::test(start_paused = true)]
async fn manual_rollback_to_a_pinned_revision_skips_the_alert_guards() {
    let h = Harness::new(&traffic_action(""));
    h.deploy("backend-00002", false);
    h.deploy("backend-00003", false);
    let out = h
        .runner
        .run(
            "backend",
            Trigger::manual(Some("backend-00001".into()), false, "carol"),
        )
        .await;
    assert!(matches!(out, Outcome::Verified { .. }), "{out:?}");
    assert_eq!(h.serving(), "backend-00001");
    let audit = h.store.audit(None, 10).await.unwrap();
    assert_eq!(audit[0].evidence["actor"], "carol");
    assert_eq!(audit[0].fingerprint.as_deref(), Some("manual"));
    let _ = Arc::clone(&h.world);
}

#[tokio::test(start_paused = true)]
async fn mute_time_intervals_stop_automatic_actions() {
    let h = Harness::new_with(
        "time_intervals:\n  - name: always\n    time_intervals:\n      - weekdays: ['sunday:saturday']\n",
        &traffic_action("    mute_time_intervals: [always]\n"),
    );
    h.deploy("backend-00002", true);
    let a = alert(T0 + 30_000);
    sleep_until(&h.clock, a.starts_at_ms).await;
    let out = h.runner.run("backend", Trigger::alert(a)).await;
    assert_eq!(out.skip_reason(), Some(reason::MUTED), "{out:?}");
    assert_eq!(h.fake.accepted_patches(), 0);
    // Reloaded without the mute: acts.
    h.runner
        .apply(&rollback_support::config(&traffic_action("")));
    let out = h
        .runner
        .run("backend", Trigger::alert(alert(T0 + 30_000)))
        .await;
    assert!(matches!(out, Outcome::Verified { .. }), "{out:?}");
}

/// FanOut keeps the notification sink's contract: the outbox has the
/// notification before any action starts on it (handing the alert to the
/// runner first, as FanOut once did, fails the check inside the outbox).
#[tokio::test(start_paused = true)]
async fn fan_out_persists_the_notification_before_the_action_starts() {
    use rearguard::action::ActionRunner;
    use rearguard::adapters::FanOut;
    use rearguard::dispatch::notification::{BoxFuture, Notification};
    use std::sync::Mutex;

    /// An outbox that notes, while it persists, whether a run was in flight.
    struct Outbox {
        runner: ActionRunner,
        refuse: bool,
        running_while_persisting: Mutex<Vec<bool>>,
    }
    impl NotificationSink for Outbox {
        fn send<'a>(&'a self, _: Notification) -> BoxFuture<'a, Result<(), String>> {
            Box::pin(async move {
                // Persisting takes time: a run handed over before it would proceed meanwhile.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                let idle = tokio::time::timeout(std::time::Duration::ZERO, self.runner.idle())
                    .await
                    .is_ok();
                self.running_while_persisting.lock().unwrap().push(!idle);
                if self.refuse {
                    Err("disk full".into())
                } else {
                    Ok(())
                }
            })
        }
    }

    for refuse in [false, true] {
        let (h, a) = bad_deploy(&traffic_action("")).await;
        let outbox = Arc::new(Outbox {
            runner: h.runner.clone(),
            refuse,
            running_while_persisting: Mutex::default(),
        });
        let fan_out = FanOut {
            outbox: outbox.clone(),
            actions: h.runner.clone(),
        };
        let sent = fan_out.send(h.notification(&a)).await;
        assert_eq!(
            sent.is_err(),
            refuse,
            "the outbox's answer goes to dispatch"
        );
        assert_eq!(
            *outbox.running_while_persisting.lock().unwrap(),
            [false],
            "a run started before the outbox had the notification"
        );
        // Handed over after: the rollback happens, also when the outbox refused.
        h.runner.idle().await;
        assert_eq!(h.fake.accepted_patches(), 1);
        assert_eq!(h.serving(), "backend-00001");
    }
}

/// The whole path through the real dispatcher: the alert is routed to the
/// rollback receiver (and the team); the runner's events come back into the
/// dispatcher as `RearguardRollback` alerts and reach the team, and never
/// trigger a second rollback.
#[tokio::test(start_paused = true)]
async fn dispatch_routes_the_alert_to_the_action_and_the_events_to_the_team() {
    use rearguard::action::{ActionDeps, ActionRunner, CloudRunApi, Unknown};
    use rearguard::adapters::{notification_channel, FanOut};
    use rearguard::alert::AlertSink;
    use rearguard::dispatch::dispatcher::{Dispatcher, DispatcherDeps};
    use rearguard::dispatch::notification::{BoxFuture, Notification};
    use std::sync::Mutex;

    #[derive(Default)]
    struct Capture(Mutex<Vec<Notification>>);
    impl NotificationSink for Capture {
        fn send<'a>(&'a self, n: Notification) -> BoxFuture<'a, Result<(), String>> {
            self.0.lock().unwrap().push(n);
            Box::pin(async { Ok(()) })
        }
    }

    let base = Harness::new(&traffic_action(""));
    base.deploy("backend-00002", true);
    let top = "route:\n  receiver: team\n  group_by: [alertname, service, phase]\n  group_wait: 0s\n  group_interval: 10s\n  routes:\n    - matchers: ['severity=\"critical\"', 'service=\"backend\"']\n      receiver: rollback-backend\n      continue: true\n";
    let mut config = rollback_support::config_with(top, &traffic_action(""));
    config.receivers[0].webhook_configs =
        serde_yaml_ng::from_str("[{url: 'http://127.0.0.1:9/hook'}]").unwrap();

    let cloud_run: Arc<dyn CloudRunApi> = Arc::new(base.fake.clone());
    let follows = Arc::new(rollback_support::FollowsService {
        fake: base.fake.clone(),
        world: base.world.clone(),
    });
    let capture = Arc::new(Capture::default());
    // As the daemon wires: the dispatcher first (its sink a channel), then
    // the runner with the dispatcher, then the fan-out the channel feeds.
    let (intake, queue) = notification_channel();
    let dispatcher = Dispatcher::start_with(
        DispatcherDeps {
            clock: base.clock.clone(),
            store: base.store.clone(),
            sink: Arc::new(intake),
            registry: prometheus::Registry::new(),
        },
        &config,
    )
    .await
    .unwrap();
    let routing = dispatcher.clone();
    let deps = ActionDeps {
        clock: base.clock.clone(),
        store: base.store.clone(),
        cloud_run,
        events: dispatcher.clone(),
        event_receivers: Arc::new(move |l| routing.notifying_receivers(l)),
        registry: prometheus::Registry::new(),
        state_dir: base.dir.path().to_path_buf(),
        generator_url: String::new(),
        alert_state: follows.clone(),
        probes: follows,
        time_intervals: Arc::new(Unknown),
        serving_history: Arc::new(Unknown),
        evidence: Arc::new(Unknown),
        requests: Arc::new(Unknown),
    };
    let runner = ActionRunner::new(deps, &config).unwrap();
    let _queue = queue.spawn(Arc::new(FanOut {
        outbox: capture.clone(),
        actions: runner.clone(),
    }));

    let a = alert(T0 + 30_000);
    sleep_until(&base.clock, a.starts_at_ms).await;
    dispatcher.send_alerts(vec![a.clone()]);
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    runner.idle().await;
    for _ in 0..6 {
        tokio::time::sleep(std::time::Duration::from_secs(10)).await;
        dispatcher.send_alerts(vec![a.clone()]);
        runner.idle().await;
    }

    assert_eq!(base.fake.accepted_patches(), 1);
    assert_eq!(base.serving(), "backend-00001");
    let sent = capture.0.lock().unwrap().clone();
    let team_phases: Vec<String> = sent
        .iter()
        .filter(|n| n.receiver == "team")
        .flat_map(|n| n.alerts.iter())
        .filter(|a| a.name() == "RearguardRollback")
        .filter_map(|a| a.labels.get("phase").map(str::to_string))
        .collect();
    assert!(
        team_phases.contains(&"started".to_string()),
        "{team_phases:?}"
    );
    assert!(
        team_phases.contains(&"verified".to_string()),
        "{team_phases:?}"
    );
    assert!(sent.iter().any(|n| n.receiver == "rollback-backend"));
    dispatcher.shutdown().await;
}
