//! The action admin API over HTTP and the hold/history CLI against a state dir.

mod http_support;
mod rollback_support;

use http_support::Api;
use rearguard::config::Secret;
use rearguard::server::action_api::{self, ActionApiState};
use rearguard::server::auth::AdminToken;
use rollback_support::*;
use serde_json::{json, Value};

async fn serve(h: &Harness) -> String {
    http_support::serve(action_api::router(ActionApiState {
        runner: h.runner.clone(),
        store: h.store.clone(),
        state_dir: h.dir.path().to_path_buf(),
        admin_token: AdminToken(Some(Secret::new("t0ken"))),
    }))
    .await
}

#[tokio::test(start_paused = true)]
async fn manual_rollback_holds_and_quarantine_through_the_api() {
    let h = Harness::new(&traffic_action(""));
    h.deploy("backend-00002", true);
    let api = Api::new(&serve(&h).await, "t0ken");

    // Mutating calls need the token.
    let r = api
        .post_anonymous("/api/v1/rollbacks", &json!({"target": "backend"}))
        .await;
    assert_eq!(r.status(), 401);
    let r = api
        .post("/api/v1/rollbacks", &json!({"target": "nope"}))
        .await;
    assert_eq!(r.status(), 404);
    let r = api.post_raw("/api/v1/rollbacks", "{not json").await;
    assert_eq!(r.status(), 400);

    // A dry run by service name, then the real thing.
    let v: Value = api
        .post(
            "/api/v1/rollbacks",
            &json!({"target": "backend", "dry_run": true}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["data"]["outcome"], "dry_run", "{v}");
    assert_eq!(h.fake.accepted_patches(), 0);
    let r = api
        .post(
            "/api/v1/rollbacks",
            &json!({"target": "backend", "actor": "alice"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["data"]["outcome"], "verified", "{v}");
    assert_eq!(v["data"]["to_revision"], "backend-00001");
    assert_eq!(h.serving(), "backend-00001");

    let audit = api.get_json("/api/v1/rollbacks?target=backend").await;
    let decisions: Vec<&str> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["decision"].as_str().unwrap())
        .collect();
    assert_eq!(decisions, ["dry_run", "started", "done", "verified"]);
    let intents = api.get_json("/api/v1/rollbacks/intents").await;
    assert_eq!(intents["data"][0]["state"], "done");
    assert_eq!(intents["data"][0]["manual"], true);

    // Holds.
    let r = api
        .post(
            "/api/v1/holds",
            &json!({"target": "backend", "reason": "investigating"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let holds = api.get_json("/api/v1/holds").await;
    assert_eq!(holds["data"][0]["target"], "backend");
    assert_eq!(holds["data"][0]["reason"], "investigating");
    let r = api.delete("/api/v1/holds/backend").await;
    assert_eq!(r.status(), 200);
    let r = api.delete("/api/v1/holds/backend").await;
    assert_eq!(r.status(), 404);

    // The revision rolled back from is quarantined; it can be lifted.
    let q = api.get_json("/api/v1/quarantine").await;
    assert_eq!(q["data"][0]["revision"], "backend-00002");
    let r = api.delete("/api/v1/quarantine/backend/backend-00002").await;
    assert_eq!(r.status(), 200);
    let q = api.get_json("/api/v1/quarantine").await;
    assert!(q["data"].as_array().unwrap().is_empty());
}

#[test]
fn hold_and_history_cli_work_on_the_state_dir() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("rearguard.yaml");
    std::fs::write(
        &cfg,
        format!("state_dir: state\nactions:\n  backend:\n    cloud_run_traffic:\n      service: {SVC}\n"),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_rearguard");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin)
            .args(args)
            .arg("-c")
            .arg(&cfg)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&["hold", "backend", "--reason", "deploy freeze"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("held backend: deploy freeze"), "{out}");
    // By service name too; an unknown target is refused with the list.
    let (code, out, _) = run(&["unhold", "backend", "--reason", "over"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("lifted the hold on backend"), "{out}");
    let (code, _, err) = run(&["hold", "nope", "--reason", "x"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("no action named \"nope\"; defined actions: backend"),
        "{err}"
    );
    let (code, out, _) = run(&["hold", "--reason", "everything"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("held every target"), "{out}");

    let (code, out, err) = run(&["history", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let rows: Vec<(&str, &str)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["decision"].as_str().unwrap(),
                e["target"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [("hold", "backend"), ("unhold", "backend"), ("hold", "*")]
    );
    let (code, out, _) = run(&["history", "--target", "backend"]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("deploy freeze") && !out.contains("everything"),
        "{out}"
    );
}

/// `rearguard rollback` says what the daemon is doing and waiting for while
/// the operation and the verification run, then prints the outcome.
#[tokio::test(start_paused = true)]
async fn rollback_cli_shows_progress_while_it_waits() {
    let h = Harness::new(&traffic_action(""));
    h.deploy("backend-00002", true);
    let base = serve(&h).await;
    let request = rearguard::cli::rollback::Request {
        base_url: base,
        token: "t0ken".into(),
        // The service's short name works as well as the action's.
        target: "backend".into(),
        to_revision: None,
        dry_run: false,
        actor: "cli:test".into(),
    };
    let mut progress = Vec::new();
    let code = request.send(false, &mut progress).await.unwrap();
    assert_eq!(code, std::process::ExitCode::SUCCESS);
    assert_eq!(h.serving(), "backend-00001");
    let text = String::from_utf8(progress).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("asked http://"), "{text}");
    // Each audited step, in order, with the revisions.
    let started = lines
        .iter()
        .position(|l| l.contains("started:"))
        .expect(&text);
    let done = lines.iter().position(|l| l.contains("done:")).expect(&text);
    assert!(started < done, "{text}");
    assert!(
        lines[started].contains("backend-00002 → backend-00001"),
        "{text}"
    );
    // The fake operation takes 20 s: in between, it says what it waits for.
    assert!(
        lines[started..done]
            .iter()
            .any(|l| l.contains("waiting for the Cloud Run operation")),
        "{text}"
    );
    // The POST's answer comes back with the verdict, after verification.
    assert!(
        text.contains("verified:") || text.contains("waiting for verification"),
        "{text}"
    );

    // A refusal is an error exit with the daemon's reason.
    let request = rearguard::cli::rollback::Request {
        token: "wrong".into(),
        ..request
    };
    let err = request.send(false, &mut Vec::new()).await.unwrap_err();
    assert!(err.to_string().contains("HTTP 401"), "{err}");
}
