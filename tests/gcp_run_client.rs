//! The Cloud Run v2 client and the shared request path, against wiremock.

use std::time::Duration;

use rearguard::gcp::run::{PatchOptions, TrafficTarget};
use rearguard::gcp::{
    CloudRunClient, GcpClient, GcpError, RetryPolicy, TokenSource, UpstreamMetrics,
};
use serde_json::json;
use wiremock::matchers::{body_partial_json, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const SVC: &str = "projects/p/locations/us-central1/services/backend";

fn client(server: &MockServer) -> (CloudRunClient, UpstreamMetrics) {
    let registry = prometheus::Registry::new();
    let metrics = UpstreamMetrics::register(&registry).unwrap();
    let policy = RetryPolicy {
        max_attempts: 4,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        timeout: Duration::from_secs(5),
        ..RetryPolicy::default()
    };
    let gcp = GcpClient::new(TokenSource::anonymous(), policy, metrics.clone()).unwrap();
    (CloudRunClient::new(gcp, &server.uri()), metrics)
}

fn service_json(etag: &str) -> serde_json::Value {
    json!({
        "name": SVC,
        "generation": "12",
        "observedGeneration": "12",
        "etag": etag,
        "traffic": [{"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", "percent": 100}],
        "trafficStatuses": [{"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", "percent": 100}],
        "latestReadyRevision": format!("{SVC}/revisions/backend-00012-abc"),
        "latestCreatedRevision": format!("{SVC}/revisions/backend-00012-abc"),
        "terminalCondition": {"type": "Ready", "state": "CONDITION_SUCCEEDED"},
        "template": {"containers": [{"image": "gcr.io/p/backend:12"}]}
    })
}

#[tokio::test]
async fn get_service_and_patch_with_etag() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("/v2/{SVC}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(service_json("\"e1\"")))
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path(format!("/v2/{SVC}")))
        .and(query_param("updateMask", "traffic"))
        .and(body_partial_json(json!({"etag": "\"e1\"", "traffic": [{"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION", "revision": "backend-00011-xyz", "percent": 100}]})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "name": "projects/p/locations/us-central1/operations/op-1", "done": false,
            "metadata": {"@type": "type.googleapis.com/google.cloud.run.v2.Service"}
        })))
        .mount(&server)
        .await;
    let (run, _) = client(&server);
    let mut svc = run.get_service(SVC).await.unwrap();
    assert_eq!(svc.generation, Some(12));
    assert_eq!(
        svc.serving_revisions(),
        vec![("backend-00012-abc".to_string(), 100)]
    );
    svc.traffic = vec![TrafficTarget::to_revision("backend-00011-xyz", 100)];
    let op = run
        .patch_service(
            &svc,
            &PatchOptions {
                update_mask: vec!["traffic".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(op.name, "projects/p/locations/us-central1/operations/op-1");
    assert!(!op.done);
}

#[tokio::test]
async fn stale_etag_is_distinguished_from_other_conflicts() {
    let server = MockServer::start().await;
    Mock::given(method("PATCH"))
        .and(body_partial_json(json!({"etag": "\"old\""})))
        .respond_with(ResponseTemplate::new(409).set_body_json(
            json!({"error": {"code": 409, "status": "ABORTED", "message": "etag mismatch"}}),
        ))
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(body_partial_json(json!({"etag": "\"other\""})))
        .respond_with(ResponseTemplate::new(409).set_body_json(json!({"error": {"code": 409, "status": "ALREADY_EXISTS", "message": "revision name taken"}})))
        .mount(&server)
        .await;
    let (run, metrics) = client(&server);
    let mut svc: rearguard::gcp::run::Service =
        serde_json::from_value(service_json("\"old\"")).unwrap();
    let err = run
        .patch_service(&svc, &PatchOptions::default())
        .await
        .unwrap_err();
    assert!(err.is_stale_etag(), "{err}");
    svc.etag = Some("\"other\"".into());
    let err = run
        .patch_service(&svc, &PatchOptions::default())
        .await
        .unwrap_err();
    assert!(!err.is_stale_etag());
    assert_eq!(err.google_status(), Some("ALREADY_EXISTS"));
    // 409 is not retried.
    assert_eq!(metrics.count("run", "services.patch", "409"), 2);
    svc.etag = None;
    assert!(matches!(
        run.patch_service(&svc, &PatchOptions::default()).await,
        Err(GcpError::InvalidRequest(_))
    ));
}

#[tokio::test]
async fn revisions_are_paged_and_retries_show_in_metrics() {
    let server = MockServer::start().await;
    let rev = |n: u32| {
        json!({"name": format!("{SVC}/revisions/backend-{n:05}"), "generation": n.to_string(), "createTime": "2026-11-22T10:00:00Z",
        "conditions": [{"type": "Ready", "state": if n == 3 { "CONDITION_FAILED" } else { "CONDITION_SUCCEEDED" }}]})
    };
    // The first answer of page one is a 503; the retry gets it.
    Mock::given(method("GET"))
        .and(path(format!("/v2/{SVC}/revisions")))
        .respond_with(ResponseTemplate::new(503).set_body_string("unavailable"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/v2/{SVC}/revisions")))
        .and(query_param("pageToken", "p2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"revisions": [rev(1)]})))
        .with_priority(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/v2/{SVC}/revisions")))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"revisions": [rev(3), rev(2)], "nextPageToken": "p2"})),
        )
        .with_priority(3)
        .mount(&server)
        .await;
    let (run, metrics) = client(&server);
    let revs = run.list_revisions(SVC).await.unwrap();
    let names: Vec<&str> = revs.iter().map(|r| r.short_name()).collect();
    assert_eq!(names, ["backend-00003", "backend-00002", "backend-00001"]);
    assert!(revs[0].has_failed());
    assert!(revs[1].is_ready());
    assert_eq!(metrics.count("run", "revisions.list", "503"), 1);
    assert_eq!(metrics.count("run", "revisions.list", "200"), 2);
}

#[tokio::test]
async fn not_found_is_not_retried_and_malformed_json_is_an_error() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("/v2/{SVC}")))
        .respond_with(ResponseTemplate::new(404).set_body_json(
            json!({"error": {"code": 404, "status": "NOT_FOUND", "message": "no such service"}}),
        ))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2/projects/p/locations/us-central1/operations/op-1"))
        .respond_with(ResponseTemplate::new(200).set_body_string("{\"name\": \"op\", \"done\": tr"))
        .mount(&server)
        .await;
    let (run, metrics) = client(&server);
    let err = run.get_service(SVC).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert_eq!(metrics.count("run", "services.get", "404"), 1);
    let err = run
        .get_operation("projects/p/locations/us-central1/operations/op-1")
        .await
        .unwrap_err();
    assert!(matches!(err, GcpError::Decode { .. }), "{err}");
}

#[tokio::test]
async fn operations_wait_until_done() {
    let server = MockServer::start().await;
    let op = "projects/p/locations/us-central1/operations/op-9";
    Mock::given(method("POST"))
        .and(path(format!("/v2/{op}:wait")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"name": op, "done": false})))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("/v2/{op}:wait")))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(
                json!({"name": op, "done": true, "response": service_json("\"e2\"")}),
            ),
        )
        .with_priority(2)
        .mount(&server)
        .await;
    let (run, _) = client(&server);
    let done = run
        .wait_until_done(op, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(done.done);
    let svc = done.response_service().unwrap().unwrap();
    assert_eq!(svc.etag.as_deref(), Some("\"e2\""));
    let requests = server.received_requests().await.unwrap();
    let body: serde_json::Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert!(body["timeout"].as_str().unwrap().ends_with('s'));
}

#[tokio::test]
async fn remote_promql_query() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/projects/netra-staging/location/global/prometheus/api/v1/query"))
        .and(query_param("query", "up == 0"))
        .and(query_param("time", "1800000000.500"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "status": "success",
            "data": {"resultType": "vector", "result": [{"metric": {"__name__": "up", "job": "backend"}, "value": [1800000000.5, "0"]}]}
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(query_param("query", "rate(("))
        .respond_with(ResponseTemplate::new(400).set_body_json(
            json!({"status": "error", "errorType": "bad_data", "error": "parse error"}),
        ))
        .mount(&server)
        .await;
    let registry = prometheus::Registry::new();
    let metrics = UpstreamMetrics::register(&registry).unwrap();
    let gcp = GcpClient::new(
        TokenSource::anonymous(),
        RetryPolicy::default(),
        metrics.clone(),
    )
    .unwrap();
    let q = rearguard::gcp::PromqlClient::new(
        gcp,
        &server.uri(),
        "netra-staging",
        Some(Duration::from_secs(10)),
    );
    let samples = q.query("up == 0", 1_800_000_000_500).await.unwrap();
    assert_eq!(samples.len(), 1);
    assert_eq!(samples[0].labels.get("job"), Some("backend"));
    assert_eq!(samples[0].value, 0.0);
    let err = q.query("rate((", 1_800_000_000_500).await.unwrap_err();
    assert!(err.to_string().contains("parse error"), "{err}");
    assert_eq!(metrics.count("promql", "query", "400"), 1);
}

#[tokio::test]
async fn a_patch_is_sent_once_whatever_the_retry_policy_and_carries_only_its_fields() {
    use rearguard::gcp::run::ServiceUpdate;
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("/v2/{SVC}")))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path(format!("/v2/{SVC}")))
        .and(query_param("updateMask", "traffic,annotations"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let (run, metrics) = client(&server);
    // An idempotent read is retried as the policy says (4 attempts)...
    assert!(run.get_service(SVC).await.is_err());
    assert_eq!(metrics.count("run", "services.get", "503"), 4);
    // ...a patch is not: the server may have acted before the 503.
    let update = ServiceUpdate {
        name: SVC.into(),
        etag: "\"e1\"".into(),
        traffic: Some(vec![TrafficTarget::to_revision("backend-00011-xyz", 100)]),
        annotations: Some(
            [(
                "rearguard.dev/rolled-back-to".to_string(),
                "backend-00011-xyz".to_string(),
            )]
            .into(),
        ),
        template: None,
    };
    let err = run.update_service(&update, false).await.unwrap_err();
    assert_eq!(err.http_status(), Some(503));
    assert_eq!(metrics.count("run", "services.patch", "503"), 1);
    let sent = server.received_requests().await.unwrap();
    let patch = sent.iter().find(|r| r.method.as_str() == "PATCH").unwrap();
    let body: serde_json::Value = serde_json::from_slice(&patch.body).unwrap();
    let mut keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["annotations", "etag", "name", "traffic"]);
}
