//! `rearguard history [--target T] [--json]`: the audit of action decisions, from the store.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use crate::action::journal::Decision;
use crate::clock::to_datetime;
use crate::daemon::load_config;
use crate::store::Store;

pub async fn run(
    config_path: &Path,
    target: Option<String>,
    limit: usize,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let loaded = load_config(config_path).await?;
    let dir = loaded.state_dir();
    let store = tokio::task::spawn_blocking(move || Store::open(&dir))
        .await?
        .context("opening the state store")?;
    let entries = store.audit(target, limit).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(ExitCode::SUCCESS);
    }
    if entries.is_empty() {
        println!("no action decisions recorded");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<20} {:<16} {:<13} {:<36} REASON",
        "TIME (UTC)", "TARGET", "DECISION", "CHANGE"
    );
    for e in entries {
        let change = match (&e.from_revision, &e.to_revision) {
            (Some(f), Some(t)) => format!("{f} → {t}"),
            (Some(f), None) => format!("{f} →"),
            (None, Some(t)) => format!("→ {t}"),
            (None, None) => "-".to_string(),
        };
        let decision = if e.dry_run {
            format!("{} (dry)", e.decision)
        } else {
            e.decision.to_string()
        };
        let reason = match e.evidence.get("detail").and_then(|d| d.as_str()) {
            Some(d) if e.decision == Decision::Skipped => {
                format!("{}: {d}", e.reason)
            }
            _ => e.reason.clone(),
        };
        println!(
            "{:<20} {:<16} {:<13} {:<36} {}",
            to_datetime(e.at_ms).format("%Y-%m-%d %H:%M:%S"),
            e.target,
            decision,
            change,
            reason
        );
    }
    Ok(ExitCode::SUCCESS)
}
