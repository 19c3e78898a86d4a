//! Credentials (google-cloud-auth 1.x): Application Default Credentials or a
//! key file, scope `cloud-platform`. The metadata server is found at
//! `GCE_METADATA_HOST` when that is set (google-cloud-auth reads it).

use std::path::{Path, PathBuf};
use std::time::Duration;

use google_cloud_auth::credentials::{self, CacheableResource, Credentials};
use reqwest::header::HeaderMap;

use super::error::GcpError;

pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// What `gcp.credentials` names.
#[derive(Clone, Debug, PartialEq)]
pub enum CredentialSpec {
    /// Application Default Credentials.
    Adc,
    /// A key file: `service_account`, `authorized_user` (gcloud),
    /// `external_account` (workload identity federation) or
    /// `impersonated_service_account`, as Application Default Credentials read them.
    KeyFile(PathBuf),
}

impl CredentialSpec {
    /// Parses `gcp.credentials`; a relative key-file path is resolved from `base_dir`.
    pub fn parse(value: &str, base_dir: &Path) -> Self {
        if value == "adc" {
            CredentialSpec::Adc
        } else {
            CredentialSpec::KeyFile(crate::config::secret::resolve_path(
                base_dir,
                Path::new(value),
            ))
        }
    }
}

/// Where tokens come from; cheap to clone. Never prints a token.
#[derive(Clone)]
pub struct TokenSource {
    creds: Credentials,
    description: String,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("credentials", &self.description)
            .finish()
    }
}

impl TokenSource {
    /// Builds the credentials `spec` names. A key file that is missing, unreadable,
    /// not JSON or of an unsupported type is an error here, not at the first call.
    pub async fn new(spec: &CredentialSpec) -> Result<Self, GcpError> {
        // google-cloud-auth signs JWTs with rustls' provider and panics without one.
        crate::tls::ensure_crypto_provider();
        match spec {
            CredentialSpec::Adc => {
                let creds = credentials::Builder::default()
                    .with_scopes([CLOUD_PLATFORM_SCOPE])
                    .build()
                    .map_err(|e| {
                        GcpError::Credentials(format!(
                            "Application Default Credentials: {e} (set GOOGLE_APPLICATION_CREDENTIALS to a key file, run `gcloud auth application-default login`, or run on Google Cloud)"
                        ))
                    })?;
                Ok(Self {
                    creds,
                    description: "application default credentials".into(),
                })
            }
            CredentialSpec::KeyFile(path) => {
                let text = tokio::fs::read_to_string(path).await.map_err(|e| {
                    GcpError::Credentials(format!(
                        "cannot read key file {}: {e} (set gcp.credentials to a readable service-account key file, or to adc)",
                        path.display()
                    ))
                })?;
                Self::from_key_json(&text, &path.display().to_string())
            }
        }
    }

    /// Credentials from the text of a key file; `origin` names it in errors.
    pub fn from_key_json(text: &str, origin: &str) -> Result<Self, GcpError> {
        // google-cloud-auth signs JWTs with rustls' provider and panics without one.
        crate::tls::ensure_crypto_provider();
        let json: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            GcpError::Credentials(format!(
                "key file {origin} is not JSON (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        let kind = json
            .get("type")
            .and_then(|t| t.as_str())
            .unwrap_or("")
            .to_string();
        let built = match kind.as_str() {
            "service_account" => credentials::service_account::Builder::new(json)
                .with_access_specifier(credentials::service_account::AccessSpecifier::from_scopes([
                    CLOUD_PLATFORM_SCOPE,
                ]))
                .build(),
            "authorized_user" => credentials::user_account::Builder::new(json)
                .with_scopes([CLOUD_PLATFORM_SCOPE])
                .build(),
            // Workload or workforce identity federation (what
            // `gcloud iam workload-identity-pools create-cred-config` writes):
            // the subject token is exchanged at the STS `token_url`, then
            // impersonates `service_account_impersonation_url` when set.
            "external_account" => credentials::external_account::Builder::new(json)
                .with_scopes([CLOUD_PLATFORM_SCOPE])
                .build(),
            // `gcloud auth application-default login --impersonate-service-account`:
            // the source credentials get a token for the target service account
            // from IAM Credentials' generateAccessToken.
            "impersonated_service_account" => credentials::impersonated::Builder::new(json)
                .with_scopes([CLOUD_PLATFORM_SCOPE])
                .build(),
            other => {
                return Err(GcpError::Credentials(format!(
                    "key file {origin} has type {other:?}; expected \"service_account\", \"authorized_user\", \"external_account\" or \"impersonated_service_account\""
                )))
            }
        };
        let creds = built.map_err(|e| {
            GcpError::Credentials(format!(
                "key file {origin} of type {kind:?} is unusable: {e}"
            ))
        })?;
        Ok(Self {
            creds,
            description: format!("{kind} key file {origin}"),
        })
    }

    /// The metadata server at `endpoint` (e.g. `http://127.0.0.1:PORT`), as on GCE.
    pub fn metadata_server(endpoint: &str) -> Result<Self, GcpError> {
        // google-cloud-auth signs JWTs with rustls' provider and panics without one.
        crate::tls::ensure_crypto_provider();
        let creds = credentials::mds::Builder::default()
            .with_endpoint(endpoint)
            .with_scopes([CLOUD_PLATFORM_SCOPE])
            .build()
            .map_err(|e| GcpError::Credentials(format!("metadata server {endpoint}: {e}")))?;
        Ok(Self {
            creds,
            description: format!("metadata server {endpoint}"),
        })
    }

    /// No credentials at all (tests against the fake, emulators).
    pub fn anonymous() -> Self {
        // google-cloud-auth signs JWTs with rustls' provider and panics without one.
        crate::tls::ensure_crypto_provider();
        Self {
            creds: credentials::anonymous::Builder::new().build(),
            description: "anonymous".into(),
        }
    }

    pub fn description(&self) -> &str {
        &self.description
    }

    /// The auth headers for one request (tokens are cached and refreshed by google-cloud-auth).
    pub async fn headers(&self) -> Result<HeaderMap, GcpError> {
        match self.creds.headers(http::Extensions::new()).await {
            Ok(CacheableResource::New { data, .. }) => Ok(data),
            Ok(CacheableResource::NotModified) => Err(GcpError::Credentials(
                "the credentials returned no headers".into(),
            )),
            Err(e) => Err(GcpError::Credentials(format!(
                "{}: cannot get a token: {e}",
                self.description
            ))),
        }
    }

    /// Gets a token once, so that unusable credentials are reported at start
    /// (and by `rearguard check`) rather than at the first poll.
    pub async fn check(&self, timeout: Duration) -> Result<(), GcpError> {
        match tokio::time::timeout(timeout, self.headers()).await {
            Ok(r) => r.map(|_| ()),
            Err(_) => Err(GcpError::Credentials(format!(
                "{}: no token within {timeout:?} (is the metadata server reachable? set gcp.credentials to a key file)",
                self.description
            ))),
        }
    }
}
