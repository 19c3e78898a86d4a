//! The `rearguard` command line. Parsing only: the work is in the library,
//! except `demo`, which lives here because it needs the Google simulator
//! (crates/rearguard-sim) and the library must not depend on it.

mod demo;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use rearguard::logging::{self, LogFormat};

#[derive(Parser)]
#[command(
    name = "rearguard",
    version,
    about = "Watches a deployed service, alerts on Prometheus rules, and rolls back bad deploys."
)]
struct Cli {
    /// Log output format: human text, or JSON lines for journald and Cloud Logging.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A self-contained staging scenario on loopback: a bad deploy of a simulated
    /// Cloud Run service, detected, rolled back, verified and notified by the real daemon.
    Demo {
        /// Leave everything running afterwards (to browse /metrics and the API) until Ctrl-C.
        #[arg(long)]
        keep_running: bool,
        /// Keep the daemon's state here instead of a new temp dir.
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Run the daemon.
    Run {
        #[arg(long, short, default_value = "rearguard.yaml")]
        config: PathBuf,
    },
    /// Validate the config and every file it names; print every error as file:line:col.
    Check {
        #[arg(long, short, default_value = "rearguard.yaml")]
        config: PathBuf,
        /// Do not ask Google for a token (for machines without the credentials,
        /// e.g. CI); everything else is still checked.
        #[arg(long)]
        offline: bool,
    },
    /// Test tools: `rearguard test rules FILE...` runs promtool rule unit tests.
    Test {
        #[command(subcommand)]
        what: TestCommand,
    },
    /// Run a PromQL instant query against a running rearguard (or any Prometheus API).
    Query {
        /// The PromQL expression.
        expr: String,
        /// Evaluation time: RFC 3339 or Unix seconds (default: now).
        #[arg(long)]
        time: Option<String>,
        /// The server to ask (default: http://127.0.0.1:9464).
        #[arg(long, default_value = "http://127.0.0.1:9464")]
        url: String,
        /// Print the raw JSON response.
        #[arg(long)]
        json: bool,
    },
    /// List each probe's current state and last transition, from the state store.
    Probes {
        #[arg(long, short, default_value = "rearguard.yaml")]
        config: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Add, list or expire silences on a running daemon.
    Silence {
        #[command(subcommand)]
        command: rearguard::cli::silence::SilenceCommand,
    },
    /// List a running daemon's active alerts: receivers, and what silences, inhibits or mutes them.
    Alerts {
        #[command(flatten)]
        api: rearguard::cli::silence::ApiArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Roll TARGET back now through the running daemon (same path as an automatic rollback).
    Rollback {
        #[arg(long, short, default_value = "rearguard.yaml")]
        config: PathBuf,
        /// The action name (or the service it changes).
        target: String,
        /// The revision to send traffic to (default: the one that served before, if Ready).
        #[arg(long = "to")]
        to: Option<String>,
        /// Decide and tell, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the daemon's JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// The audit of action decisions (acted and skipped, with reasons), from the state store.
    History {
        #[arg(long, short, default_value = "rearguard.yaml")]
        config: PathBuf,
        #[arg(long)]
        target: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// What rearguard would have done over a past window: reads the window's
    /// metrics, logs and deploys from Google and replays the rules and the
    /// action decisions. Changes nothing. Exit 2: a flag is wrong; 1: Google failed.
    Backtest {
        #[arg(long, short, default_value = "rearguard.yaml")]
        config: PathBuf,
        /// Start: RFC 3339, Unix seconds, or now-DURATION (e.g. now-14d).
        #[arg(long)]
        from: String,
        /// End (same forms; default now).
        #[arg(long, default_value = "now")]
        to: String,
        /// Evaluate every rule group at this step instead of its own interval.
        #[arg(long)]
        step: Option<String>,
        #[arg(long, value_enum, default_value = "text")]
        format: rearguard::cli::backtest::Format,
    },
    /// Stop automatic actions on TARGET (all targets without one).
    Hold {
        #[arg(long, short, default_value = "rearguard.yaml")]
        config: PathBuf,
        target: Option<String>,
        #[arg(long)]
        reason: String,
    },
    /// Resume automatic actions on TARGET (the global hold without one).
    Unhold {
        #[arg(long, short, default_value = "rearguard.yaml")]
        config: PathBuf,
        target: Option<String>,
        #[arg(long)]
        reason: String,
    },
    /// Print a shell completion script (e.g. `rearguard completions bash > /etc/bash_completion.d/rearguard`).
    Completions {
        #[arg(value_enum)]
        shell: rearguard::cli::completions::Shell,
    },
    /// Print the man page, or with --dir write one page per subcommand there.
    Man {
        /// Write rearguard.1 and rearguard-SUBCOMMAND.1 pages into this directory.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum TestCommand {
    /// Run `promtool test rules` files, with promtool's output and exit codes.
    Rules {
        /// Only run test groups whose name matches this regex (repeatable; OR-ed).
        #[arg(long)]
        run: Vec<String>,
        /// Accept unknown fields in rule files.
        #[arg(long)]
        ignore_unknown_fields: bool,
        /// Accepted for promtool compatibility; no effect.
        #[arg(long, hide = true)]
        debug: bool,
        /// Accepted for promtool compatibility; no effect.
        #[arg(long, hide = true)]
        diff: bool,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// glibc gives each busy thread its own malloc arena; with a dozen runtime
/// threads that roughly doubles peak RSS (bench/README.md: 116 MiB against 77
/// MiB at 1,000 probes/s). Two arenas cost nothing measurable in CPU. An
/// explicit `MALLOC_ARENA_MAX` in the environment wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; called before any
        // thread is started.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    if matches!(cli.command, Command::Demo { .. }) && std::env::var_os("RUST_LOG").is_none() {
        // The demo prints a timeline on stdout (the probe failures and alerts
        // it shows are expected); only errors go to the log.
        std::env::set_var("RUST_LOG", "error");
    }
    logging::init(cli.log_format);
    rearguard::tls::ensure_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Demo {
                keep_running,
                state_dir,
            } => demo::run(keep_running, state_dir).await,
            Command::Run { config } => rearguard::daemon::run(&config)
                .await
                .map(|_| ExitCode::SUCCESS)
                .map_err(anyhow::Error::from),
            Command::Check { config, offline } => {
                Ok(rearguard::cli::check::run(&config, offline).await)
            }
            Command::Probes { config, json } => rearguard::cli::probes::run(&config, json).await,
            Command::Test {
                what:
                    TestCommand::Rules {
                        run,
                        ignore_unknown_fields,
                        files,
                        ..
                    },
            } => rearguard::cli::test_rules::run(files, run, ignore_unknown_fields).await,
            Command::Query {
                expr,
                time,
                url,
                json,
            } => rearguard::cli::query::run(&expr, time.as_deref(), &url, json).await,
            Command::Silence { command } => rearguard::cli::silence::run(command).await,
            Command::Alerts { api, json } => rearguard::cli::alerts::run(api, json).await,
            Command::Rollback {
                config,
                target,
                to,
                dry_run,
                json,
            } => rearguard::cli::rollback::run(&config, target, to, dry_run, json).await,
            Command::History {
                config,
                target,
                limit,
                json,
            } => rearguard::cli::history::run(&config, target, limit, json).await,
            Command::Backtest {
                config,
                from,
                to,
                step,
                format,
            } => {
                let args = rearguard::cli::backtest::BacktestArgs {
                    from,
                    to,
                    step,
                    format,
                };
                rearguard::cli::backtest::run(&config, args).await
            }
            Command::Hold {
                config,
                target,
                reason,
            } => rearguard::cli::hold::run(&config, target, reason, true).await,
            Command::Unhold {
                config,
                target,
                reason,
            } => rearguard::cli::hold::run(&config, target, reason, false).await,
            Command::Completions { shell } => {
                rearguard::cli::completions::run_completions(Cli::command(), shell)
            }
            Command::Man { dir } => {
                rearguard::cli::completions::run_man(Cli::command(), dir.as_deref())
            }
        }
    });
    // Do not wait for lingering blocking tasks (a hung probe) at exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
