//! `rearguard probes`: each configured probe's current state, from the store.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use crate::clock::to_datetime;
use crate::daemon::load_config;
use crate::store::Store;

pub async fn run(config_path: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let loaded = load_config(config_path).await?;
    let dir = loaded.state_dir();
    let store = tokio::task::spawn_blocking(move || Store::open(&dir))
        .await?
        .context("opening the state store")?;
    let last = store.last_probe_transitions().await?;
    let rows: Vec<_> = loaded
        .config
        .probes
        .iter()
        .map(|p| (p, last.iter().find(|t| t.probe == p.name)))
        .collect();
    if json {
        let out: Vec<_> = rows
            .iter()
            .map(|(p, t)| {
                serde_json::json!({
                    "probe": p.name,
                    "url": p.url,
                    "state": t.map(|t| if t.up { "up" } else { "down" }).unwrap_or("unknown"),
                    "since": t.map(|t| to_datetime(t.at_ms).to_rfc3339()),
                    "reason": t.and_then(|t| t.reason.clone()),
                    "status_code": t.and_then(|t| t.status_code),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<24} {:<8} {:<26} {:<10} URL",
        "PROBE", "STATE", "SINCE", "REASON"
    );
    for (p, t) in rows {
        let (state, since, reason) = match t {
            Some(t) => (
                if t.up { "up" } else { "down" },
                to_datetime(t.at_ms)
                    .format("%Y-%m-%d %H:%M:%S UTC")
                    .to_string(),
                t.reason.clone().unwrap_or_else(|| "-".into()),
            ),
            None => ("unknown", "-".to_string(), "-".to_string()),
        };
        println!(
            "{:<24} {:<8} {:<26} {:<10} {}",
            p.name, state, since, reason, p.url
        );
    }
    Ok(ExitCode::SUCCESS)
}
