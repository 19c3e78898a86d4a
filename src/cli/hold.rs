//! `rearguard hold|unhold [TARGET] --reason R`: stop (or resume) automatic
//! actions on one target, or on all without TARGET. Written to the store, which
//! the daemon reads at every decision, so it works with or without a daemon.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context};

use crate::action::cloud_run::short_name;
use crate::action::journal::Decision;
use crate::daemon::load_config;
use crate::store::actions::GLOBAL_HOLD;
use crate::store::{AuditEntry, Hold, Store};

fn actor() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .map(|u| format!("cli:{u}"))
        .unwrap_or_else(|_| "cli".into())
}

pub async fn run(
    config_path: &Path,
    target: Option<String>,
    reason: String,
    hold: bool,
) -> anyhow::Result<ExitCode> {
    let loaded = load_config(config_path).await?;
    let actions = &loaded.config.actions;
    let target = match target.as_deref() {
        None | Some(GLOBAL_HOLD) => GLOBAL_HOLD.to_string(),
        Some(t) if actions.contains_key(t) => t.to_string(),
        Some(t) => {
            let by_service: Vec<&String> = actions
                .iter()
                .filter(|(_, a)| a.service().is_some_and(|s| s == t || short_name(&s) == t))
                .map(|(k, _)| k)
                .collect();
            match by_service.as_slice() {
                [one] => one.to_string(),
                _ => bail!(
                    "no action named {t:?}; defined actions: {}",
                    actions.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            }
        }
    };
    if reason.trim().is_empty() {
        bail!("give a reason with --reason (it goes into the audit)");
    }
    let dir = loaded.state_dir();
    let store = tokio::task::spawn_blocking(move || Store::open(&dir))
        .await?
        .context("opening the state store")?;
    let now = chrono::Utc::now().timestamp_millis();
    let who = actor();
    let label = if target == GLOBAL_HOLD {
        "every target".to_string()
    } else {
        target.clone()
    };
    if hold {
        store
            .set_hold(Hold {
                target: target.clone(),
                reason: reason.clone(),
                set_by: who.clone(),
                at_ms: now,
            })
            .await?;
        println!("held {label}: {reason}");
    } else if store.remove_hold(&target).await? {
        println!("lifted the hold on {label}");
    } else {
        println!("{label} was not held");
        let file = loaded.state_dir().join(crate::action::plan::HOLD_FILE);
        if file.exists() {
            println!(
                "note: {} exists and holds every target; remove it to resume",
                file.display()
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    store
        .append_audit(AuditEntry {
            id: 0,
            at_ms: now,
            run_id: None,
            target,
            service: None,
            intent_id: None,
            alertname: None,
            fingerprint: None,
            decision: if hold {
                Decision::Hold
            } else {
                Decision::Unhold
            },
            reason,
            from_revision: None,
            to_revision: None,
            dry_run: false,
            evidence: serde_json::json!({ "set_by": who }),
        })
        .await?;
    Ok(ExitCode::SUCCESS)
}
