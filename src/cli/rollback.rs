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
    let actor = std::env::var("USER")
        .map(|u| format!("cli:{u}"))
        .unwrap_or_else(|_| "cli".into());
    let request = Request {
        base_url: format!("http://{addr}"),
        token: token.expose().to_string(),
        target,
        to_revision,
        dry_run,
        actor,
    };
    request.send(json, &mut std::io::stderr()).await
}

/// A manual action to ask a running daemon for.
pub struct Request {
    /// The daemon's address, `http://host:port`.
    pub base_url: String,
    pub token: String,
    /// An action name or the short name of its Cloud Run service.
    pub target: String,
    pub to_revision: Option<String>,
    pub dry_run: bool,
    pub actor: String,
}

/// Says nothing new for this long: repeat what the run is waiting for.
const QUIET_REMINDER: Duration = Duration::from_secs(10);

impl Request {
    /// Sends the request and prints the outcome on stdout (JSON with `json`).
    /// While the daemon works, the steps it audits and what it is waiting for
    /// go to `progress` (stderr), so a long operation is never silent.
    pub async fn send(
        &self,
        json: bool,
        progress: &mut (dyn std::io::Write + Send),
    ) -> anyhow::Result<ExitCode> {
        let url = format!("{}/api/v1/rollbacks", self.base_url);
        crate::tls::ensure_crypto_provider();
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .context("building the HTTP client")?;
        // Audit entries up to here are not this run's.
        let mut seen = self
            .audit_since(&client, 0)
            .await
            .map(|e| e.iter().filter_map(|x| x["id"].as_i64()).max().unwrap_or(0))
            .unwrap_or(0);
        let post = client
            .post(&url)
            .bearer_auth(&self.token)
            .json(&serde_json::json!({
                "target": self.target,
                "to_revision": self.to_revision,
                "dry_run": self.dry_run,
                "actor": self.actor,
            }))
            .send();
        tokio::pin!(post);
        let started = tokio::time::Instant::now();
        let mut last_news = started;
        let mut waiting_for =
            "the daemon to start the action (holds, then the service's current state)";
        let _ = writeln!(
            progress,
            "asked {} to act on {}; waiting for {waiting_for}",
            self.base_url, self.target
        );
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let resp = loop {
            let answered = tokio::select! {
                r = &mut post => Some(r),
                _ = tick.tick() => None,
            };
            let elapsed = started.elapsed().as_secs_f64();
            // A failed poll is not worth a word: the request itself reports errors.
            for e in self.audit_since(&client, seen).await.unwrap_or_default() {
                seen = seen.max(e["id"].as_i64().unwrap_or(0));
                let decision = e["decision"].as_str().unwrap_or("?");
                let _ = writeln!(progress, "{elapsed:>7.1}s  {decision}: {}", audit_line(&e));
                if let Some(next) = waiting_after(decision) {
                    waiting_for = next;
                }
                last_news = tokio::time::Instant::now();
            }
            // With the answer in, the poll above showed the run's last steps.
            if let Some(r) = answered {
                break r;
            }
            if last_news.elapsed() >= QUIET_REMINDER {
                let _ = writeln!(progress, "{elapsed:>7.1}s  … waiting for {waiting_for}");
                last_news = tokio::time::Instant::now();
            }
        };
        let resp = resp.with_context(|| {
            format!("cannot reach the daemon at {url} (is `rearguard run` running?)")
        })?;
        self.finish(resp, json).await
    }

    /// Audit entries after `after_id` that belong to this request's target.
    async fn audit_since(
        &self,
        client: &reqwest::Client,
        after_id: i64,
    ) -> anyhow::Result<Vec<serde_json::Value>> {
        let body: serde_json::Value = client
            .get(format!("{}/api/v1/rollbacks?limit=50", self.base_url))
            .timeout(Duration::from_secs(5))
            .send()
            .await?
            .json()
            .await?;
        let mut entries: Vec<serde_json::Value> = body["data"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e["id"].as_i64().is_some_and(|id| id > after_id))
            .filter(|e| {
                e["target"].as_str() == Some(self.target.as_str())
                    || e["service"]
                        .as_str()
                        .is_some_and(|s| crate::action::cloud_run::short_name(s) == self.target)
            })
            .collect();
        entries.sort_by_key(|e| e["id"].as_i64());
        Ok(entries)
    }

    async fn finish(&self, resp: reqwest::Response, json: bool) -> anyhow::Result<ExitCode> {
        let target = self.target.clone();
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
}

/// One audit entry, for the progress lines: the reason and the revisions.
fn audit_line(e: &serde_json::Value) -> String {
    let mut line = e["reason"].as_str().unwrap_or("").to_string();
    if let (Some(from), Some(to)) = (e["from_revision"].as_str(), e["to_revision"].as_str()) {
        line.push_str(&format!(" ({from} → {to})"));
    }
    line
}

/// What a run waits for after it audited `decision`.
fn waiting_after(decision: &str) -> Option<&'static str> {
    match decision {
        "started" => Some("the Cloud Run operation (or the command) to finish"),
        "done" | "reconciled" => {
            Some("verification: the probes and the alert, over the verify backoff")
        }
        "not_verified" => Some("the next step of the ladder"),
        _ => None,
    }
}
