//! `rearguard rollback TARGET [--to REVISION] [--dry-run]`: a manual action
//! through the running daemon (`POST /api/v1/rollbacks` with the admin token),
//! so it takes the same path as an automatic one: intent, audit, verification,
//! notifications.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::daemon::load_config;

/// Manual actions wait for verification; give them time.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30 * 60);

pub async fn run(
    config_path: &Path,
    target: String,
    to_revision: Option<String>,
    dry_run: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let loaded = load_config(config_path).await?;
    let Some(token) = loaded.admin_token.clone() else {
        bail!("manual rollbacks go through the daemon's admin API: set admin.token_file in the config");
    };
    let mut addr = loaded.config.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let url = format!("http://{addr}/api/v1/rollbacks");
    let actor = std::env::var("USER")
        .map(|u| format!("cli:{u}"))
        .unwrap_or_else(|_| "cli".into());
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .context("building the HTTP client")?;
    let resp = client
        .post(&url)
        .bearer_auth(token.expose())
        .json(&serde_json::json!({
            "target": target,
            "to_revision": to_revision,
            "dry_run": dry_run,
            "actor": actor,
        }))
        .send()
        .await
        .with_context(|| {
            format!("cannot reach the daemon at {url} (is `rearguard run` running?)")
        })?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.context("reading the daemon's answer")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&body)?);
    }
    if let Some(err) = body.get("error").and_then(|e| e.as_str()) {
        bail!("{err} (HTTP {status})");
    }
    let data = &body["data"];
    let outcome = data["outcome"].as_str().unwrap_or("unknown");
    if !json {
        match outcome {
            "verified" => println!(
                "rolled back {} from {} to {} and verified",
                body["target"].as_str().unwrap_or(&target),
                data["from_revision"].as_str().unwrap_or("?"),
                data["to_revision"].as_str().unwrap_or("?")
            ),
            "dry_run" => {
                println!("dry run, nothing changed:");
                for line in data["plan"].as_array().into_iter().flatten() {
                    println!("  {}", line.as_str().unwrap_or(""));
                }
            }
            "skipped" => println!(
                "not done ({}): {}",
                data["reason"].as_str().unwrap_or("?"),
                data["detail"].as_str().unwrap_or("")
            ),
            _ => println!("{outcome}: {}", data["detail"].as_str().unwrap_or("")),
        }
    }
    Ok(if matches!(outcome, "verified" | "dry_run") {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
