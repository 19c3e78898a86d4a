//! Everything the Google sources need, built once from `gcp:`.

use std::path::Path;
use std::time::Duration;

use super::auth::{CredentialSpec, TokenSource};
use super::client::{GcpClient, RetryPolicy, UpstreamMetrics};
use super::error::GcpError;
use super::logging::LoggingClient;
use super::monitoring::MonitoringClient;
use super::promql::PromqlClient;
use super::quota::CallQuota;
use super::run::CloudRunClient;
use crate::config::gcp::GcpConfig;

/// Cloud Logging's quota: `entries.list` calls a minute per project.
pub const LOGGING_CALLS_PER_MINUTE: usize = 60;

/// How long a start-time or `check` token fetch may take.
pub const CREDENTIAL_CHECK_TIMEOUT: Duration = Duration::from_secs(15);

/// The clients of one project, sharing credentials, connections, retry policy,
/// metrics and the Logging quota. Cheap to clone.
#[derive(Clone)]
pub struct GcpContext {
    pub project: String,
    pub client: GcpClient,
    pub run: CloudRunClient,
    pub monitoring: MonitoringClient,
    pub logging: LoggingClient,
    /// Shared by every log query: Logging charges `entries.list` to the quota
    /// project of the credentials (one per context), not to the resources read.
    pub log_quota: CallQuota,
    monitoring_endpoint: String,
}

impl GcpContext {
    /// Builds the credentials `gcp.credentials` names and gets a first token
    /// (so unusable credentials fail the start, not the first poll), and
    /// registers the upstream metrics into `registry`.
    pub async fn connect(
        cfg: &GcpConfig,
        base_dir: &Path,
        registry: &prometheus::Registry,
    ) -> Result<Self, GcpError> {
        let tokens = TokenSource::new(&CredentialSpec::parse(&cfg.credentials, base_dir)).await?;
        tokens.check(CREDENTIAL_CHECK_TIMEOUT).await?;
        let metrics = UpstreamMetrics::register(registry).map_err(|e| {
            GcpError::InvalidRequest(format!("cannot register upstream metrics: {e}"))
        })?;
        Self::new(cfg, tokens, RetryPolicy::default(), metrics)
    }

    /// From parts (tests, and callers with their own credentials or policy).
    pub fn new(
        cfg: &GcpConfig,
        tokens: TokenSource,
        policy: RetryPolicy,
        metrics: UpstreamMetrics,
    ) -> Result<Self, GcpError> {
        let client = GcpClient::new(tokens, policy, metrics)?;
        Ok(Self {
            project: cfg.project.clone(),
            run: CloudRunClient::new(client.clone(), &cfg.endpoints.run),
            monitoring: MonitoringClient::new(client.clone(), &cfg.endpoints.monitoring),
            logging: LoggingClient::new(client.clone(), &cfg.endpoints.logging),
            log_quota: CallQuota::new(LOGGING_CALLS_PER_MINUTE, Duration::from_secs(60)),
            monitoring_endpoint: cfg.endpoints.monitoring.clone(),
            client,
        })
    }

    /// The Prometheus-compatible query client for a `cloud_monitoring_promql`
    /// query source (`project` defaults to `gcp.project`).
    pub fn promql(&self, project: Option<&str>, timeout: Option<Duration>) -> PromqlClient {
        PromqlClient::new(
            self.client.clone(),
            &self.monitoring_endpoint,
            project.unwrap_or(&self.project),
            timeout,
        )
    }
}

/// For `rearguard check`: builds the credentials and gets a token.
/// Returns a description of the credentials used (never the token).
pub async fn check(cfg: &GcpConfig, base_dir: &Path) -> Result<String, GcpError> {
    let tokens = TokenSource::new(&CredentialSpec::parse(&cfg.credentials, base_dir)).await?;
    tokens.check(CREDENTIAL_CHECK_TIMEOUT).await?;
    Ok(tokens.description().to_string())
}
