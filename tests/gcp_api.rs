//! `GET /api/v1/evidence/logs?query=NAME` and `GET /api/v1/cloud_run/services`.

mod http_support;

use std::collections::VecDeque;

use http_support::Api;

use rearguard::server::gcp_api;
use rearguard::source::cloud_logging::{LogEvidence, LogEvidenceStore};
use rearguard::source::cloud_run::CloudRunViews;
use serde_json::Value;

#[tokio::test]
async fn evidence_route() {
    let evidence = LogEvidenceStore::default();
    evidence.set(
        "backend-errors",
        VecDeque::from([LogEvidence {
            query: "backend-errors".into(),
            timestamp: None,
            severity: "ERROR".into(),
            revision: Some("backend-00002".into()),
            message: "boom".into(),
            json_payload: None,
            insert_id: "i1".into(),
            log_name: "projects/p/logs/run.googleapis.com%2Fstderr".into(),
        }]),
    );
    let base = http_support::serve(gcp_api::router(evidence, CloudRunViews::default())).await;
    let api = Api::new(&format!("{base}/api/v1"), "");

    let r = api.get("/evidence/logs?query=backend-errors").await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["data"]["entries"][0]["message"], "boom");
    assert_eq!(v["data"]["entries"][0]["revision"], "backend-00002");

    let r = api.get("/evidence/logs?query=nope").await;
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("backend-errors"));

    let r = api.get("/evidence/logs").await;
    assert_eq!(r.status(), 400);

    let r = api.get("/cloud_run/services").await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["data"], serde_json::json!([]));
}
