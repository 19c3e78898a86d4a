//! The `rearguard` command line. Parsing only: the work is in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rearguard::logging::{self, LogFormat};

#[derive(Parser)]
#[command(name = "rearguard", version, about = "Watches a deployed service, alerts on Prometheus rules, and rolls back bad deploys.")]
struct Cli {
    /// Log output format: human text, or JSON lines for journald and Cloud Logging.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run {
        #[arg(long, short, default_value = "rearguard.yaml")]
        config: PathBuf,
    },
    /// Validate the config and every file it names; print every error as file:line:col.
    Check {
        #[arg(long, short, default_value = "rearguard.yaml")]
        config: PathBuf,
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run { config } => rearguard::daemon::run(&config).await.map(|_| ExitCode::SUCCESS).map_err(anyhow::Error::from),
            Command::Check { config } => Ok(rearguard::cli::check::run(&config).await),
            Command::Probes { config, json } => rearguard::cli::probes::run(&config, json).await,
            Command::Silence { command } => rearguard::cli::silence::run(command).await,
            Command::Alerts { api, json } => rearguard::cli::alerts::run(api, json).await,
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
