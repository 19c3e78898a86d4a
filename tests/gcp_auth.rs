//! Credentials: a service-account key file and the metadata server, both
//! served by the fake on loopback; unusable credentials are clear errors.

use std::time::Duration;

use rearguard::clock::Clock;
use rearguard::config::gcp::{GcpConfig, GcpEndpoints};
use rearguard::gcp::{
    CredentialSpec, GcpContext, GcpError, RetryPolicy, TokenSource, UpstreamMetrics,
};
use rearguard_sim::{methods, FakeGcp, ServiceSpec};

const SVC: &str = "projects/sim-project/locations/us-central1/services/backend";

fn cfg(fake: &FakeGcp) -> GcpConfig {
    GcpConfig {
        project: fake.project(),
        credentials: "adc".into(),
        endpoints: GcpEndpoints {
            run: fake.base_url(),
            monitoring: fake.base_url(),
            logging: fake.base_url(),
        },
    }
}

async fn get_service_with(fake: &FakeGcp, tokens: TokenSource) -> Result<(), GcpError> {
    let metrics = UpstreamMetrics::register(&prometheus::Registry::new()).unwrap();
    let ctx = GcpContext::new(&cfg(fake), tokens, RetryPolicy::default(), metrics).unwrap();
    ctx.run.get_service(SVC).await.map(|_| ())
}

#[tokio::test]
async fn metadata_server_tokens() {
    let fake = FakeGcp::start(Clock::system()).await.unwrap();
    fake.set_require_auth(true);
    fake.create_service(ServiceSpec::new(SVC)).unwrap();
    let tokens = TokenSource::metadata_server(&fake.base_url()).unwrap();
    tokens.check(Duration::from_secs(10)).await.unwrap();
    get_service_with(&fake, tokens.clone()).await.unwrap();
    get_service_with(&fake, tokens).await.unwrap();
    // One token, cached, used for every call.
    assert_eq!(fake.tokens_issued(), 1);
    let calls = fake.calls_to(methods::SERVICES_GET);
    assert!(calls.iter().all(|c| c.authorized && c.status == 200));
    // Without credentials the fake refuses, as Google would.
    let err = get_service_with(&fake, TokenSource::anonymous())
        .await
        .unwrap_err();
    assert_eq!(err.http_status(), Some(401), "{err}");
}

/// An RSA key from the `openssl` command (CI installs Debian's `openssl`).
fn rsa_key_pem() -> String {
    let out = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .output()
        .expect("this test needs the openssl command: apt-get install openssl");
    assert!(out.status.success(), "openssl genpkey failed");
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[tokio::test]
async fn service_account_key_file() {
    let pem = rsa_key_pem();
    let fake = FakeGcp::start(Clock::system()).await.unwrap();
    fake.set_require_auth(true);
    fake.create_service(ServiceSpec::new(SVC)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = serde_json::json!({
        "type": "service_account",
        "project_id": "sim-project",
        "private_key_id": "k1",
        "private_key": pem,
        "client_email": "rearguard@sim-project.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": fake.token_uri(),
    });
    let path = dir.path().join("key.json");
    std::fs::write(&path, key.to_string()).unwrap();
    // A relative path is resolved from the config's folder.
    let spec = CredentialSpec::parse("key.json", dir.path());
    assert_eq!(spec, CredentialSpec::KeyFile(path.clone()));
    let tokens = TokenSource::new(&spec).await.unwrap();
    assert!(tokens.description().contains("service_account"));
    tokens.check(Duration::from_secs(10)).await.unwrap();
    get_service_with(&fake, tokens).await.unwrap();
    let call = fake.calls_to(methods::SERVICES_GET).pop().unwrap();
    assert!(call.authorized);
    assert_eq!(call.status, 200);
}

#[tokio::test]
async fn unusable_credentials_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = TokenSource::new(&CredentialSpec::KeyFile(dir.path().join("nope.json")))
        .await
        .unwrap_err();
    assert!(
        missing.to_string().contains("cannot read key file"),
        "{missing}"
    );
    let garbage = dir.path().join("garbage.json");
    std::fs::write(&garbage, "{\"private_key\": \"-----BEGIN").unwrap();
    let e = TokenSource::new(&CredentialSpec::KeyFile(garbage))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("is not JSON"), "{e}");
    assert!(
        !e.to_string().contains("BEGIN"),
        "no key material in errors: {e}"
    );
    let other = dir.path().join("other.json");
    std::fs::write(&other, "{\"type\": \"gdch_service_account\"}").unwrap();
    let e = TokenSource::new(&CredentialSpec::KeyFile(other))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("expected \"service_account\""),
        "{e}"
    );
    // A supported type with its fields missing says which type it is.
    let incomplete = dir.path().join("incomplete.json");
    std::fs::write(&incomplete, "{\"type\": \"external_account\"}").unwrap();
    let e = TokenSource::new(&CredentialSpec::KeyFile(incomplete))
        .await
        .unwrap_err();
    assert!(matches!(e, GcpError::Credentials(_)), "{e}");
    assert!(e.to_string().contains("\"external_account\""), "{e}");
    let bad_key = dir.path().join("bad-key.json");
    std::fs::write(&bad_key, serde_json::json!({"type": "service_account", "client_email": "x@y", "private_key": "not a key", "private_key_id": "1"}).to_string()).unwrap();
    let e = match TokenSource::new(&CredentialSpec::KeyFile(bad_key)).await {
        Ok(t) => t.check(Duration::from_secs(5)).await.unwrap_err(),
        Err(e) => e,
    };
    assert!(matches!(e, GcpError::Credentials(_)), "{e}");
    assert!(
        !e.to_string().contains("not a key"),
        "no key material in errors: {e}"
    );
    // A metadata server that is not there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let t = TokenSource::metadata_server(&format!("http://{addr}")).unwrap();
    let e = t.check(Duration::from_secs(5)).await.unwrap_err();
    assert!(e.to_string().contains("metadata server"), "{e}");
}

/// A workload identity federation key file (`external_account`), as
/// `gcloud iam workload-identity-pools create-cred-config` writes it, with a
/// file-sourced subject token: exchanged at the fake's STS endpoint, and, when
/// the file names a service account to impersonate, exchanged again at IAM
/// Credentials' generateAccessToken.
#[tokio::test]
async fn external_account_key_file() {
    let fake = FakeGcp::start(Clock::system()).await.unwrap();
    fake.set_require_auth(true);
    fake.create_service(ServiceSpec::new(SVC)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let subject = dir.path().join("subject-token");
    std::fs::write(&subject, "eyJhbGciOiJSUzI1NiJ9.e30.c2ln").unwrap();
    let target = "rearguard@sim-project.iam.gserviceaccount.com";
    for impersonate in [false, true] {
        let mut key = serde_json::json!({
            "type": "external_account",
            "audience": "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/ci/providers/github",
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "token_url": fake.token_uri(),
            "credential_source": {"file": subject.display().to_string()},
        });
        if impersonate {
            key["service_account_impersonation_url"] = serde_json::json!(format!(
                "{}/v1/projects/-/serviceAccounts/{target}:generateAccessToken",
                fake.base_url()
            ));
        }
        let path = dir.path().join(format!("wif-{impersonate}.json"));
        std::fs::write(&path, key.to_string()).unwrap();
        let tokens = TokenSource::new(&CredentialSpec::KeyFile(path))
            .await
            .unwrap();
        assert!(tokens.description().contains("external_account"));
        let before = fake.calls_to(methods::GENERATE_ACCESS_TOKEN).len();
        get_service_with(&fake, tokens).await.unwrap();
        let exchanges = fake.calls_to(methods::OAUTH_TOKEN);
        let last = exchanges.last().unwrap();
        assert_eq!(last.status, 200);
        let impersonations = fake.calls_to(methods::GENERATE_ACCESS_TOKEN);
        assert_eq!(impersonations.len() - before, usize::from(impersonate));
        if impersonate {
            let call = impersonations.last().unwrap();
            assert!(
                call.authorized,
                "generateAccessToken is called with the STS token"
            );
            assert_eq!(call.status, 200);
        }
        let call = fake.calls_to(methods::SERVICES_GET).pop().unwrap();
        assert!(call.authorized);
        assert_eq!(call.status, 200);
    }
}

/// `gcloud auth application-default login --impersonate-service-account`
/// writes an `impersonated_service_account` file: its source credentials get
/// a token, which IAM Credentials' generateAccessToken turns into the target's.
#[tokio::test]
async fn impersonated_service_account_key_file() {
    let fake = FakeGcp::start(Clock::system()).await.unwrap();
    fake.set_require_auth(true);
    fake.create_service(ServiceSpec::new(SVC)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let target = "deployer@sim-project.iam.gserviceaccount.com";
    let key = serde_json::json!({
        "type": "impersonated_service_account",
        "service_account_impersonation_url": format!(
            "{}/v1/projects/-/serviceAccounts/{target}:generateAccessToken",
            fake.base_url()
        ),
        "source_credentials": {
            "type": "authorized_user",
            "client_id": "client-1",
            "client_secret": "secret-1",
            "refresh_token": "refresh-1",
            "token_uri": fake.token_uri(),
        },
        "delegates": [],
    });
    let path = dir.path().join("impersonated.json");
    std::fs::write(&path, key.to_string()).unwrap();
    let tokens = TokenSource::new(&CredentialSpec::KeyFile(path))
        .await
        .unwrap();
    assert!(tokens
        .description()
        .contains("impersonated_service_account"));
    tokens.check(Duration::from_secs(10)).await.unwrap();
    get_service_with(&fake, tokens).await.unwrap();
    let gen = fake.calls_to(methods::GENERATE_ACCESS_TOKEN);
    assert_eq!(gen.len(), 1, "one impersonated token, cached");
    assert!(gen[0].authorized && gen[0].status == 200);
    assert!(gen[0].path.contains(target));
    let body = gen[0].body.as_ref().unwrap();
    assert_eq!(body["scope"][0], rearguard::gcp::CLOUD_PLATFORM_SCOPE);
    let call = fake.calls_to(methods::SERVICES_GET).pop().unwrap();
    assert!(call.authorized);
    assert_eq!(call.status, 200);
}
