//! `GET /api/v1/evidence/logs?query=NAME` and `GET /api/v1/cloud_run/services`.

use std::collections::VecDeque;

use rearguard::server::gcp_api;
use rearguard::source::cloud_logging::{LogEvidence, LogEvidenceStore};
use rearguard::source::cloud_run::CloudRunViews;
use serde_json::Value;

#[tokio::test]
async fn evidence_route() {
    let _ = rustls::crypto::ring::default_provider().install_default();
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
    let app = gcp_api::router(evidence, CloudRunViews::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let http = reqwest::Client::new();
    let base = format!("http://{addr}/api/v1");

    let r = http
        .get(format!("{base}/evidence/logs?query=backend-errors"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["data"]["entries"][0]["message"], "boom");
    assert_eq!(v["data"]["entries"][0]["revision"], "backend-00002");

    let r = http
        .get(format!("{base}/evidence/logs?query=nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("backend-errors"));

    let r = http
        .get(format!("{base}/evidence/logs"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let r = http
        .get(format!("{base}/cloud_run/services"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["data"], serde_json::json!([]));
}
