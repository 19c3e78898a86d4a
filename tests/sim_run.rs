//! The fake Cloud Run API and token endpoint, over real HTTP, as a client sees them.

use std::time::Duration;

use rearguard::clock::Clock;
use rearguard_sim::{DeploySpec, FakeGcp, Fault, RevisionBehaviour, ServiceSpec};
use serde_json::{json, Value};

const SVC: &str = "projects/sim-project/locations/us-central1/services/backend";

fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

async fn token(fake: &FakeGcp, http: &reqwest::Client) -> String {
    let v: Value = http
        .get(format!(
            "{}/computeMetadata/v1/instance/service-accounts/default/token",
            fake.base_url()
        ))
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["access_token"].as_str().unwrap().to_string()
}

#[tokio::test(start_paused = true)]
async fn patch_traffic_with_etag_and_wait_for_operation() {
    let fake = FakeGcp::start(Clock::starting_at(1_700_000_000_000))
        .await
        .unwrap();
    let good = fake.create_service(ServiceSpec::new(SVC)).unwrap();
    let (bad, _) = fake
        .deploy(
            SVC,
            DeploySpec {
                behaviour: RevisionBehaviour::bad(),
                ..Default::default()
            },
        )
        .unwrap();
    fake.settle().await;
    assert_eq!(fake.serving(SVC), vec![(bad.clone(), 100)]);

    let http = http_client();
    let url = format!("{}/v2/{SVC}", fake.base_url());
    // No token: 401 UNAUTHENTICATED.
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let tok = token(&fake, &http).await;

    let svc: Value = http
        .get(&url)
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(svc["generation"], "2");
    let etag = svc["etag"].as_str().unwrap().to_string();
    let good_short = good.rsplit('/').next().unwrap();
    let body = json!({"etag": etag, "traffic": [{"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION", "revision": good_short, "percent": 100}]});
    let op: Value = http
        .patch(&url)
        .bearer_auth(&tok)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(op["done"], false);
    // The same etag again is stale now: 409 ABORTED.
    let r = http
        .patch(&url)
        .bearer_auth(&tok)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"]["status"], "ABORTED");

    let op_name = op["name"].as_str().unwrap();
    let waited: Value = http
        .post(format!("{}/v2/{op_name}:wait", fake.base_url()))
        .bearer_auth(&tok)
        .json(&json!({"timeout": "30s"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(waited["done"], true);
    assert_eq!(
        waited["response"]["trafficStatuses"][0]["revision"],
        good_short
    );
    assert_eq!(fake.serving(SVC), vec![(good.clone(), 100)]);

    let patches = fake.calls_to("run.projects.locations.services.patch");
    assert_eq!(patches.len(), 2);
    assert_eq!(patches[0].etag.as_deref(), Some(etag.as_str()));
    assert_eq!((patches[0].status, patches[1].status), (200, 409));
}

#[tokio::test(start_paused = true)]
async fn revisions_list_pages_newest_first() {
    let fake = FakeGcp::start(Clock::starting_at(1_700_000_000_000))
        .await
        .unwrap();
    fake.set_require_auth(false);
    fake.create_service(ServiceSpec::new(SVC)).unwrap();
    for i in 0..4 {
        tokio::time::sleep(Duration::from_secs(60)).await;
        fake.deploy(
            SVC,
            DeploySpec {
                env: vec![("V".into(), i.to_string())],
                ..Default::default()
            },
        )
        .unwrap();
    }
    fake.settle().await;
    let http = http_client();
    let mut names = Vec::new();
    let mut token = String::new();
    loop {
        let v: Value = http
            .get(format!("{}/v2/{SVC}/revisions", fake.base_url()))
            .query(&[("pageSize", "2"), ("pageToken", token.as_str())])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for r in v["revisions"].as_array().unwrap() {
            names.push(r["name"].as_str().unwrap().to_string());
        }
        match v["nextPageToken"].as_str() {
            Some(t) => token = t.to_string(),
            None => break,
        }
    }
    assert_eq!(names.len(), 5);
    assert!(names[0].contains("backend-00005-"), "{names:?}");
    assert!(names[4].contains("backend-00001-"), "{names:?}");
}

#[tokio::test(start_paused = true)]
async fn faults_answer_as_injected() {
    let fake = FakeGcp::start(Clock::starting_at(1_700_000_000_000))
        .await
        .unwrap();
    fake.set_require_auth(false);
    fake.create_service(ServiceSpec::new(SVC)).unwrap();
    fake.inject(Fault::rate_limited("run.projects.locations.services.get", 7).times(1));
    fake.inject(
        Fault::new("run.*", rearguard_sim::FaultKind::TruncatedJson)
            .after(1)
            .times(1),
    );
    let http = http_client();
    let url = format!("{}/v2/{SVC}", fake.base_url());
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["status"], "RESOURCE_EXHAUSTED");
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(
        serde_json::from_str::<Value>(&text).is_err(),
        "truncated: {text}"
    );
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.json::<Value>().await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn google_cloud_auth_metadata_credentials_get_a_token() {
    let fake = FakeGcp::start(Clock::starting_at(1_700_000_000_000))
        .await
        .unwrap();
    fake.create_service(ServiceSpec::new(SVC)).unwrap();
    let client = http_client();
    let creds = google_cloud_auth::credentials::mds::Builder::default()
        .with_endpoint(fake.base_url())
        .with_scopes(["https://www.googleapis.com/auth/cloud-platform"])
        .build()
        .unwrap();
    let headers = match creds.headers(http::Extensions::new()).await.unwrap() {
        google_cloud_auth::credentials::CacheableResource::New { data, .. } => data,
        google_cloud_auth::credentials::CacheableResource::NotModified => panic!("no headers"),
    };
    let auth = headers[http::header::AUTHORIZATION]
        .to_str()
        .unwrap()
        .to_string();
    assert!(auth.starts_with("Bearer ya29.fake-"));
    let r = client
        .get(format!("{}/v2/{SVC}", fake.base_url()))
        .header("authorization", auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let call = &fake.calls_to("metadata.token")[0];
    assert_eq!(
        call.param("scopes"),
        Some("https://www.googleapis.com/auth/cloud-platform")
    );
}

/// google-cloud-auth's service-account credentials sign their own JWT access
/// token; the fake accepts it (and refuses a JWT without cloud-platform).
#[tokio::test(start_paused = true)]
async fn google_cloud_auth_key_file_self_signed_jwt_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let pem_path = dir.path().join("key.pem");
    let status = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&pem_path)
        .stderr(std::process::Stdio::null())
        .status();
    let status = status.expect("this test needs the openssl command: apt-get install openssl");
    assert!(status.success());
    let pem = std::fs::read_to_string(&pem_path).unwrap();
    let fake = FakeGcp::start(Clock::starting_at(1_700_000_000_000))
        .await
        .unwrap();
    fake.create_service(ServiceSpec::new(SVC)).unwrap();
    let client = http_client();
    let key = json!({
        "type": "service_account",
        "project_id": "sim-project",
        "private_key_id": "k1",
        "private_key": pem,
        "client_email": "rearguard@sim-project.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": fake.token_uri(),
    });
    let creds = google_cloud_auth::credentials::service_account::Builder::new(key)
        .with_access_specifier(
            google_cloud_auth::credentials::service_account::AccessSpecifier::from_scopes([
                "https://www.googleapis.com/auth/cloud-platform",
            ]),
        )
        .build()
        .unwrap();
    let headers = match creds.headers(http::Extensions::new()).await.unwrap() {
        google_cloud_auth::credentials::CacheableResource::New { data, .. } => data,
        google_cloud_auth::credentials::CacheableResource::NotModified => panic!("no headers"),
    };
    let auth = headers[http::header::AUTHORIZATION]
        .to_str()
        .unwrap()
        .to_string();
    let r = client
        .get(format!("{}/v2/{SVC}", fake.base_url()))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(fake.tokens_issued(), 0, "no token endpoint was needed");
    // The same JWT with its scope swapped for another is refused.
    use base64::Engine as _;
    let jwt = auth.trim_start_matches("Bearer ");
    let mut parts: Vec<String> = jwt.split('.').map(String::from).collect();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims: Value = serde_json::from_slice(&b64.decode(&parts[1]).unwrap()).unwrap();
    claims["scope"] = json!("https://www.googleapis.com/auth/logging.read");
    parts[1] = b64.encode(claims.to_string());
    let r = client
        .get(format!("{}/v2/{SVC}", fake.base_url()))
        .header("authorization", format!("Bearer {}", parts.join(".")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test(start_paused = true)]
async fn admin_routes_deploy_and_show_calls() {
    let fake = FakeGcp::start(Clock::starting_at(1_700_000_000_000))
        .await
        .unwrap();
    fake.create_service(ServiceSpec::new(SVC)).unwrap();
    let http = http_client();
    let v: Value = http
        .post(format!("{}/sim/deploy", fake.base_url()))
        .json(&json!({"service": SVC, "env": {"FLAG": "on"}, "behaviour": "bad"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rev = v["revision"].as_str().unwrap().to_string();
    fake.settle().await;
    assert_eq!(
        fake.revision(&rev).unwrap().behaviour,
        RevisionBehaviour::bad()
    );
    let r = http
        .post(format!("{}/sim/faults", fake.base_url()))
        .json(&json!({"method": "run.*", "status": 503, "times": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .get(format!("{}/v2/{SVC}", fake.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let calls: Value = http
        .get(format!("{}/sim/calls", fake.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        calls.as_array().unwrap().len(),
        1,
        "admin calls are not logged: {calls}"
    );
    assert_eq!(calls[0]["status"], 503);
    let services: Value = http
        .get(format!("{}/sim/services", fake.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(services[0]["serving"][0]["revision"], rev.as_str());
}

#[tokio::test(start_paused = true)]
async fn prometheus_compatible_endpoint_answers_canned_results() {
    let fake = FakeGcp::start(Clock::starting_at(1_700_000_000_000))
        .await
        .unwrap();
    let http = http_client();
    let tok = token(&fake, &http).await;
    let q = "sum(rate(run_googleapis_com:request_count{response_code_class=\"5xx\"}[5m]))";
    fake.set_promql_response(
        q,
        json!({"resultType": "vector", "result": [{"metric": {}, "value": [1700000000, "0.5"]}]}),
    );
    let url = format!(
        "{}/v1/projects/sim-project/location/global/prometheus/api/v1/query",
        fake.base_url()
    );
    let v: Value = http
        .post(&url)
        .bearer_auth(&tok)
        .form(&[("query", q), ("time", "1700000000")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["status"], "success");
    assert_eq!(v["data"]["result"][0]["value"][1], "0.5");
    let v: Value = http
        .get(&url)
        .bearer_auth(&tok)
        .query(&[("query", "up")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["data"]["result"].as_array().unwrap().len(), 0);
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
}

/// `operations.wait` returns when the operation completes on the Clock, or at
/// its timeout with `done: false`.
#[tokio::test(start_paused = true)]
async fn operation_wait_honours_timeout_on_the_clock() {
    let fake = FakeGcp::start(Clock::starting_at(1_700_000_000_000))
        .await
        .unwrap();
    fake.set_require_auth(false);
    fake.set_operation_delay(Duration::from_secs(90));
    fake.create_service(ServiceSpec::new(SVC)).unwrap();
    let (_, op) = fake.deploy(SVC, DeploySpec::default()).unwrap();
    let http = http_client();
    let wait = |timeout: &'static str| {
        let (http, url) = (http.clone(), format!("{}/v2/{op}:wait", fake.base_url()));
        async move {
            let v: Value = http
                .post(url)
                .json(&json!({"timeout": timeout}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v
        }
    };
    let t0 = fake.now_ms();
    let v = wait("10s").await;
    assert_eq!(v["done"], false);
    assert_eq!(fake.now_ms() - t0, 10_000);
    assert_eq!(fake.service(SVC).unwrap()["reconciling"], true);
    let v = wait("600s").await;
    assert_eq!(v["done"], true);
    assert_eq!(fake.now_ms() - t0, 90_000);
    assert_eq!(v["response"]["observedGeneration"], "2");
    assert!(fake.service(SVC).unwrap().get("reconciling").is_none());
}

/// A service deployed twice "with gcloud" (the second revision pinned in
/// `template.revision`), without auth, and a plain HTTP client.
async fn pinned_service() -> (FakeGcp, reqwest::Client, String, String, String) {
    let fake = FakeGcp::start(Clock::starting_at(1_700_000_000_000))
        .await
        .unwrap();
    fake.set_require_auth(false);
    let first = fake.create_service(ServiceSpec::new(SVC)).unwrap();
    let (second, _) = fake.deploy(SVC, DeploySpec::default()).unwrap();
    fake.settle().await;
    let short = |s: &str| s.rsplit('/').next().unwrap().to_string();
    let url = format!("{}/v2/{SVC}", fake.base_url());
    (fake, http_client(), url, short(&first), short(&second))
}

async fn get(http: &reqwest::Client, url: &str) -> Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

fn to_revision(rev: &str) -> Value {
    json!([{"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION", "revision": rev, "percent": 100}])
}

#[tokio::test(start_paused = true)]
async fn a_gcloud_deploy_pins_the_revision_and_echoing_it_back_is_refused() {
    let (fake, http, url, first, second) = pinned_service().await;
    let mut svc = get(&http, &url).await;
    assert_eq!(svc["template"]["revision"], second.as_str());
    // The whole service as read, traffic changed: refused even with a mask
    // that leaves the template out (google-cloud-python 11870, 14259).
    svc["traffic"] = to_revision(&first);
    for query in ["", "?updateMask=traffic"] {
        let r = http
            .patch(format!("{url}{query}"))
            .json(&svc)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 409, "{query}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["status"], "ALREADY_EXISTS");
        assert_eq!(
            e["error"]["message"],
            format!("Revision named '{second}' with different configuration already exists.")
        );
    }
    // Only what changes: accepted, and the pin stays.
    let body = json!({"name": SVC, "etag": svc["etag"], "traffic": to_revision(&first), "annotations": {"a": "b"}});
    let r = http
        .patch(format!("{url}?updateMask=traffic,annotations"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    fake.settle().await;
    let after = get(&http, &url).await;
    assert_eq!(after["annotations"]["a"], "b");
    assert_eq!(after["template"]["revision"], second.as_str());
    assert_eq!(
        fake.serving(SVC),
        vec![(format!("{SVC}/revisions/{first}"), 100)]
    );
    // A template with the pin cleared deploys a revision with a generated name.
    let mut template = after["template"].clone();
    template.as_object_mut().unwrap().remove("revision");
    template["containers"][0]["env"] = json!([{"name": "FLAG", "value": "off"}]);
    let body = json!({"etag": after["etag"], "template": template});
    let op: Value = http
        .patch(format!("{url}?updateMask=template"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(op["done"], false, "{op}");
    fake.settle().await;
    let after = get(&http, &url).await;
    assert!(after["template"].get("revision").is_none(), "{after}");
    let created = after["latestCreatedRevision"].as_str().unwrap();
    assert!(!created.ends_with(&second) && !created.ends_with(&first));
}

#[tokio::test(start_paused = true)]
async fn the_etag_can_go_unenforced() {
    let (fake, http, url, first, _) = pinned_service().await;
    let body = json!({"etag": "\"stale\"", "traffic": to_revision(&first)});
    let r = http
        .patch(format!("{url}?updateMask=traffic"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["status"],
        "ABORTED"
    );
    fake.set_run_etag_enforced(false);
    let r = http
        .patch(format!("{url}?updateMask=traffic"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(start_paused = true)]
async fn a_lost_answer_still_applies_the_patch() {
    let (fake, http, url, first, _) = pinned_service().await;
    let svc = get(&http, &url).await;
    fake.inject(Fault::answer_lost("run.projects.locations.services.patch", 503).times(1));
    let body = json!({"etag": svc["etag"], "traffic": to_revision(&first)});
    let r = http
        .patch(format!("{url}?updateMask=traffic"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let now = get(&http, &url).await;
    assert_eq!(now["traffic"], to_revision(&first));
    assert_ne!(now["etag"], svc["etag"]);
    // Sent again blindly, it is refused for its old etag.
    let r = http
        .patch(format!("{url}?updateMask=traffic"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
}

#[tokio::test(start_paused = true)]
async fn without_act_as_every_update_is_denied() {
    let (fake, http, url, first, _) = pinned_service().await;
    let svc = get(&http, &url).await;
    fake.set_run_deny_act_as(true);
    let body = json!({"etag": svc["etag"], "traffic": to_revision(&first)});
    let r = http
        .patch(format!("{url}?updateMask=traffic"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["status"], "PERMISSION_DENIED");
    let message = e["error"]["message"].as_str().unwrap();
    assert!(message.contains("iam.serviceaccounts.actAs"), "{message}");
    assert!(message.contains(svc["template"]["serviceAccount"].as_str().unwrap()));
    // The permission is named in an ErrorInfo too, as Google's IAM denials do.
    let info = &e["error"]["details"][0];
    assert_eq!(info["@type"], "type.googleapis.com/google.rpc.ErrorInfo");
    assert_eq!(info["reason"], "IAM_PERMISSION_DENIED");
    assert_eq!(info["metadata"]["permission"], "iam.serviceaccounts.actAs");
}
