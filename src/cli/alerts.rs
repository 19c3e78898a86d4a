//! `rearguard alerts`: the active alerts of a running daemon, with where they
//! go and what mutes them.

use std::process::ExitCode;

use super::silence::{ApiArgs, ApiClient};

/// Reads `/api/v1/alerts` (falling back to the dispatcher's `/api/v1/dispatch/alerts`).
pub async fn run(api: ApiArgs, json: bool) -> anyhow::Result<ExitCode> {
    let client = ApiClient::new(&api)?;
    let (mut status, mut body) = client
        .send(reqwest::Method::GET, "/api/v1/alerts", None)
        .await?;
    if status == 404 {
        (status, body) = client
            .send(reqwest::Method::GET, "/api/v1/dispatch/alerts", None)
            .await?;
    }
    if status != 200 {
        anyhow::bail!("rearguard answered {status}: {body}");
    }
    // Prometheus-style `{"status":"success","data":{"alerts":[...]}}` or a bare list.
    let alerts = body
        .pointer("/data/alerts")
        .or_else(|| body.get("data"))
        .unwrap_or(&body)
        .as_array()
        .cloned()
        .unwrap_or_default();
    if json {
        println!("{}", serde_json::to_string_pretty(&alerts)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<28}  {:<10}  {:<24}  {:<20}  {:<30}  LABELS",
        "ALERT", "STATE", "SINCE", "RECEIVERS", "SUPPRESSED BY"
    );
    for a in &alerts {
        let labels = a["labels"].as_object().cloned().unwrap_or_default();
        let name = labels
            .get("alertname")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        let status = a.get("status").unwrap_or(&serde_json::Value::Null);
        let state = a["state"]
            .as_str()
            .or_else(|| status["state"].as_str())
            .unwrap_or("");
        let since = a["activeAt"]
            .as_str()
            .or_else(|| a["startsAt"].as_str())
            .unwrap_or("");
        let list = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .map(|xs| {
                    xs.iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        let receivers = list(&a["receivers"]);
        let receivers = if receivers.is_empty() {
            list(&status["receivers"])
        } else {
            receivers
        };
        let mut by = Vec::new();
        for (k, tag) in [
            ("silencedBy", "silence"),
            ("inhibitedBy", "inhibited"),
            ("mutedBy", "muted"),
        ] {
            for x in list(&status[k]) {
                by.push(format!("{tag}:{x}"));
            }
        }
        let rest: Vec<String> = labels
            .iter()
            .filter(|(k, _)| k.as_str() != "alertname")
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
            .collect();
        println!(
            "{:<28}  {:<10}  {:<24}  {:<20}  {:<30}  {}",
            name,
            state,
            since,
            receivers.join(","),
            if by.is_empty() {
                "-".to_string()
            } else {
                by.join(",")
            },
            rest.join(",")
        );
    }
    Ok(ExitCode::SUCCESS)
}
