//! Cloud Logging v2 `entries.list` (POST `/v2/entries:list`, shapes from `logging-v2.json`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::client::{GcpClient, Request};
use super::error::GcpError;
use super::quota::CallQuota;

pub const API: &str = "logging";

/// `ListLogEntriesRequest`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListLogEntriesRequest {
    /// `projects/P`
    pub resource_names: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub filter: String,
    /// `timestamp asc`
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub order_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_size: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_token: Option<String>,
}

/// `ListLogEntriesResponse`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListLogEntriesResponse {
    #[serde(default)]
    pub entries: Vec<LogEntry>,
    /// Present (possibly with no entries on this page) while the search is not finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// `MonitoredResource`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MonitoredResource {
    #[serde(rename = "type", default)]
    pub type_: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// `LogEntry` (the fields rearguard reads).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogEntry {
    #[serde(default)]
    pub log_name: String,
    #[serde(default)]
    pub resource: MonitoredResource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receive_timestamp: Option<DateTime<Utc>>,
    /// `DEFAULT`, `DEBUG`, `INFO`, ..., `EMERGENCY`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    #[serde(default)]
    pub insert_id: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_payload: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_payload: Option<serde_json::Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto_payload: Option<serde_json::Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_request: Option<Value>,
    /// Set on the entries of a long-running operation (audit logs: one when
    /// it starts, one when it ends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<LogEntryOperation>,
}

/// `LogEntryOperation` (google/logging/v2/log_entry.proto).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LogEntryOperation {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub producer: String,
    /// The first entry of the operation.
    #[serde(default)]
    pub first: bool,
    /// The last entry of the operation.
    #[serde(default)]
    pub last: bool,
}

impl LogEntry {
    pub fn severity(&self) -> &str {
        self.severity
            .as_deref()
            .filter(|s| !s.is_empty())
            .unwrap_or("DEFAULT")
    }

    /// `resource.labels.revision_name` (Cloud Run revisions).
    pub fn revision_name(&self) -> Option<&str> {
        self.resource
            .labels
            .get("revision_name")
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    /// The text to show for the entry: `textPayload`, else `jsonPayload.message`,
    /// else the JSON payload itself, else the proto payload's status message.
    pub fn message(&self) -> String {
        if let Some(t) = &self.text_payload {
            return t.clone();
        }
        if let Some(j) = &self.json_payload {
            for key in ["message", "msg", "textPayload"] {
                if let Some(Value::String(s)) = j.get(key) {
                    return s.clone();
                }
            }
            return Value::Object(j.clone()).to_string();
        }
        if let Some(p) = &self.proto_payload {
            if let Some(Value::String(s)) = p.get("status").and_then(|s| s.get("message")) {
                return s.clone();
            }
            return Value::Object(p.clone()).to_string();
        }
        String::new()
    }
}

#[derive(Clone)]
pub struct LoggingClient {
    client: GcpClient,
    base: String,
}

impl LoggingClient {
    pub fn new(client: GcpClient, endpoint: &str) -> Self {
        Self {
            client,
            base: endpoint.trim_end_matches('/').to_string(),
        }
    }

    /// One `entries.list` call; every attempt takes a slot of `quota`.
    pub async fn list(
        &self,
        body: &ListLogEntriesRequest,
        quota: Option<&CallQuota>,
    ) -> Result<ListLogEntriesResponse, GcpError> {
        let mut req = Request::with_body(
            API,
            "entries.list",
            reqwest::Method::POST,
            format!("{}/v2/entries:list", self.base),
            body,
        )?;
        if let Some(q) = quota {
            req = req.quota(q.clone());
        }
        self.client.send(req).await
    }
}
