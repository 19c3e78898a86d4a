//! `actions:`: what a `rollback_configs` entry runs, and its guard rails.
//! (The rollback issue owns the semantics; this is the shape.)

use std::collections::BTreeMap;

use serde::Deserialize;

use super::duration::Dur;

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionConfig {
    #[serde(default)]
    pub cloud_run_traffic: Option<CloudRunTrafficConfig>,
    #[serde(default)]
    pub cloud_run_env: Option<CloudRunEnvConfig>,
    #[serde(default)]
    pub command: Option<Vec<String>>,
    #[serde(default)]
    pub steps: Vec<serde_yaml_ng::Value>,
    #[serde(default)]
    pub verify: Option<VerifyConfig>,
    #[serde(default)]
    pub cooldown: Option<Dur>,
    #[serde(default)]
    pub max_per_window: Option<MaxPerWindow>,
    #[serde(default)]
    pub bake_window: Option<Dur>,
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudRunTrafficConfig {
    pub service: String,
    #[serde(default)]
    pub revision: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudRunEnvConfig {
    pub service: String,
    pub env: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyConfig {
    #[serde(default)]
    pub probes: Vec<String>,
    #[serde(default)]
    pub backoff: Vec<Dur>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxPerWindow {
    pub count: u32,
    pub window: Dur,
}
