//! `gcp:`, `cloud_monitoring:`, `cloud_logging:`, `cloud_run:` and `query_sources:`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::defaults;
use super::duration::Dur;

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcpConfig {
    pub project: String,
    /// `adc` (Application Default Credentials) or a path to a service-account key file.
    #[serde(default = "default_credentials")]
    pub credentials: String,
    #[serde(default)]
    pub endpoints: GcpEndpoints,
}

fn default_credentials() -> String {
    defaults::GCP_CREDENTIALS.to_string()
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcpEndpoints {
    #[serde(default = "default_run")]
    pub run: String,
    #[serde(default = "default_monitoring")]
    pub monitoring: String,
    #[serde(default = "default_logging")]
    pub logging: String,
}

impl Default for GcpEndpoints {
    fn default() -> Self {
        Self {
            run: default_run(),
            monitoring: default_monitoring(),
            logging: default_logging(),
        }
    }
}

fn default_run() -> String {
    defaults::GCP_RUN_ENDPOINT.into()
}
fn default_monitoring() -> String {
    defaults::GCP_MONITORING_ENDPOINT.into()
}
fn default_logging() -> String {
    defaults::GCP_LOGGING_ENDPOINT.into()
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudMonitoringConfig {
    pub name: String,
    pub metric: String,
    #[serde(default)]
    pub filter: Option<String>,
    #[serde(default = "default_monitoring_interval")]
    pub interval: Dur,
    /// How far back every poll re-reads, because points arrive minutes late.
    #[serde(default = "default_monitoring_overlap")]
    pub overlap: Dur,
    #[serde(default)]
    pub aggregation: Option<AggregationConfig>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregationConfig {
    #[serde(default)]
    pub alignment_period: Option<Dur>,
    #[serde(default)]
    pub per_series_aligner: Option<String>,
    #[serde(default)]
    pub cross_series_reducer: Option<String>,
    #[serde(default)]
    pub group_by_fields: Vec<String>,
}

fn default_monitoring_interval() -> Dur {
    defaults::CLOUD_MONITORING_INTERVAL
}
fn default_monitoring_overlap() -> Dur {
    defaults::CLOUD_MONITORING_OVERLAP
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudLoggingConfig {
    pub name: String,
    pub filter: String,
    #[serde(default = "default_logging_interval")]
    pub interval: Dur,
    /// How far before the cursor every poll re-reads (entries arrive late);
    /// insertIds de-duplicate what is read twice.
    #[serde(default = "default_logging_overlap")]
    pub overlap: Dur,
}

fn default_logging_interval() -> Dur {
    defaults::CLOUD_LOGGING_INTERVAL
}
fn default_logging_overlap() -> Dur {
    defaults::CLOUD_LOGGING_OVERLAP
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudRunConfig {
    /// `projects/P/locations/L/services/S`
    pub service: String,
    #[serde(default = "default_run_interval")]
    pub interval: Dur,
}

fn default_run_interval() -> Dur {
    defaults::CLOUD_RUN_INTERVAL
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum QuerySourceConfig {
    Prometheus {
        url: String,
        #[serde(default)]
        bearer_token_file: Option<PathBuf>,
        #[serde(default)]
        basic_auth: Option<BasicAuthConfig>,
        #[serde(default)]
        timeout: Option<Dur>,
        #[serde(default)]
        headers: BTreeMap<String, String>,
    },
    CloudMonitoringPromql {
        #[serde(default)]
        project: Option<String>,
        #[serde(default)]
        timeout: Option<Dur>,
    },
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthConfig {
    pub username: String,
    pub password_file: PathBuf,
}
