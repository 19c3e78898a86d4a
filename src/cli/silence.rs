//! `rearguard silence add|list|expire`: manage silences of a running daemon
//! through its admin API.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use crate::config::duration::parse_duration;
use crate::matchers::parse_matchers;

/// Where the daemon is and how to authenticate.
#[derive(Args, Debug, Clone)]
pub struct ApiArgs {
    /// Base URL of the running daemon.
    #[arg(long, env = "REARGUARD_URL", default_value = "http://127.0.0.1:9464")]
    pub url: String,
    /// File holding the admin token (else $REARGUARD_ADMIN_TOKEN).
    #[arg(long, env = "REARGUARD_ADMIN_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
}

#[derive(Subcommand, Debug, Clone)]
pub enum SilenceCommand {
    /// Add a silence: `rearguard silence add --duration 2h --comment "deploy" 'service="backend"' 'severity=~"warning|info"'`.
    Add {
        #[command(flatten)]
        api: ApiArgs,
        /// Matchers in Alertmanager syntax; each may hold several (`{a="b", c!="d"}`).
        #[arg(required = true)]
        matchers: Vec<String>,
        /// How long from the start (e.g. 30m, 2h, 1d).
        #[arg(long, short, default_value = "1h", conflicts_with = "end")]
        duration: String,
        /// Start time (RFC 3339); default now.
        #[arg(long)]
        start: Option<String>,
        /// End time (RFC 3339) instead of --duration.
        #[arg(long)]
        end: Option<String>,
        /// Who creates it; default $USER.
        #[arg(long, short)]
        author: Option<String>,
        /// Why (shown to everyone who sees the silence).
        #[arg(long, short)]
        comment: String,
    },
    /// List silences (active and pending; --expired for expired ones too).
    List {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long)]
        expired: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Expire silences by id.
    Expire {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

/// An HTTP client for the admin API.
pub(crate) struct ApiClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl ApiClient {
    pub(crate) fn new(api: &ApiArgs) -> anyhow::Result<Self> {
        let token = match &api.token_file {
            Some(f) => Some(
                std::fs::read_to_string(f)
                    .with_context(|| format!("reading the admin token file {}", f.display()))?
                    .trim_end_matches(['\n', '\r'])
                    .to_string(),
            ),
            None => std::env::var("REARGUARD_ADMIN_TOKEN")
                .ok()
                .filter(|t| !t.is_empty()),
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            base: api.url.trim_end_matches('/').to_string(),
            token,
            http,
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let rb = self.http.request(method, format!("{}{}", self.base, path));
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    /// Sends and returns the JSON body, or an error with the server's message.
    pub(crate) async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let mut rb = self.request(method, path);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.with_context(|| {
            format!(
                "cannot reach rearguard at {} (is it running? see --url)",
                self.base
            )
        })?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let json: serde_json::Value = if text.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
        };
        Ok((status, json))
    }
}

fn api_error(status: u16, body: &serde_json::Value) -> anyhow::Error {
    let msg = body
        .get("error")
        .and_then(|e| e.as_str())
        .map(str::to_string)
        .unwrap_or_else(|| body.to_string());
    let hint = match status {
        401 => " (pass --token-file or set REARGUARD_ADMIN_TOKEN)",
        _ => "",
    };
    anyhow::anyhow!("rearguard answered {status}: {msg}{hint}")
}

pub async fn run(cmd: SilenceCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SilenceCommand::Add {
            api,
            matchers,
            duration,
            start,
            end,
            author,
            comment,
        } => {
            let mut ms = Vec::new();
            for m in &matchers {
                for m in parse_matchers(m).map_err(|e| anyhow::anyhow!(e))?.0 {
                    ms.push(serde_json::json!({
                        "name": m.name, "value": m.value,
                        "isRegex": m.op.is_regex(), "isEqual": m.op.is_equal(),
                    }));
                }
            }
            if ms.is_empty() {
                bail!("give at least one matcher, e.g. 'service=\"backend\"'");
            }
            let start = match start {
                Some(s) => chrono::DateTime::parse_from_rfc3339(&s)
                    .with_context(|| format!("--start {s:?} is not an RFC 3339 time"))?
                    .with_timezone(&chrono::Utc),
                None => chrono::Utc::now(),
            };
            let end = match end {
                Some(e) => chrono::DateTime::parse_from_rfc3339(&e)
                    .with_context(|| format!("--end {e:?} is not an RFC 3339 time"))?
                    .with_timezone(&chrono::Utc),
                None => {
                    let d = parse_duration(&duration)
                        .map_err(|e| anyhow::anyhow!("--duration: {e}"))?;
                    start + chrono::Duration::from_std(d).context("--duration is too long")?
                }
            };
            let author = author
                .or_else(|| std::env::var("USER").ok())
                .unwrap_or_else(|| "rearguard-cli".into());
            let body = serde_json::json!({
                "matchers": ms, "startsAt": start.to_rfc3339(), "endsAt": end.to_rfc3339(),
                "createdBy": author, "comment": comment,
            });
            let client = ApiClient::new(&api)?;
            let (status, resp) = client
                .send(reqwest::Method::POST, "/api/v1/silences", Some(body))
                .await?;
            if status != 200 {
                return Err(api_error(status, &resp));
            }
            println!(
                "{}",
                resp.get("silenceID").and_then(|v| v.as_str()).unwrap_or("")
            );
            Ok(ExitCode::SUCCESS)
        }
        SilenceCommand::List { api, expired, json } => {
            let client = ApiClient::new(&api)?;
            let (status, resp) = client
                .send(reqwest::Method::GET, "/api/v1/silences", None)
                .await?;
            if status != 200 {
                return Err(api_error(status, &resp));
            }
            let all = resp.as_array().cloned().unwrap_or_default();
            let shown: Vec<&serde_json::Value> = all
                .iter()
                .filter(|s| expired || s["status"]["state"].as_str() != Some("expired"))
                .collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&shown)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:<36}  {:<8}  {:<24}  {:<24}  {:<12}  {:<30}  COMMENT",
                "ID", "STATE", "STARTS", "ENDS", "CREATED BY", "MATCHERS"
            );
            for s in shown {
                let matchers: Vec<String> = s["matchers"]
                    .as_array()
                    .map(|ms| {
                        ms.iter()
                            .map(|m| {
                                let op = match (
                                    m["isRegex"].as_bool().unwrap_or(false),
                                    m["isEqual"].as_bool().unwrap_or(true),
                                ) {
                                    (false, true) => "=",
                                    (false, false) => "!=",
                                    (true, true) => "=~",
                                    (true, false) => "!~",
                                };
                                format!(
                                    "{}{}{:?}",
                                    m["name"].as_str().unwrap_or(""),
                                    op,
                                    m["value"].as_str().unwrap_or("")
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                println!(
                    "{:<36}  {:<8}  {:<24}  {:<24}  {:<12}  {:<30}  {}",
                    s["id"].as_str().unwrap_or(""),
                    s["status"]["state"].as_str().unwrap_or(""),
                    s["startsAt"].as_str().unwrap_or(""),
                    s["endsAt"].as_str().unwrap_or(""),
                    s["createdBy"].as_str().unwrap_or(""),
                    matchers.join(","),
                    s["comment"].as_str().unwrap_or("")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        SilenceCommand::Expire { api, ids } => {
            let client = ApiClient::new(&api)?;
            let mut failed = false;
            for id in ids {
                let (status, resp) = client
                    .send(
                        reqwest::Method::DELETE,
                        &format!("/api/v1/silences/{id}"),
                        None,
                    )
                    .await?;
                if status == 200 {
                    println!("expired {id}");
                } else {
                    eprintln!("error: {id}: {}", api_error(status, &resp));
                    failed = true;
                }
            }
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}
