//! `rearguard check`: validate the config and every file it names.

use std::path::Path;
use std::process::ExitCode;

use crate::daemon::load_config;

/// Prints a one-line summary (exit 0) or every error as `file:line:col: message` (exit 1).
pub async fn run(config_path: &Path) -> ExitCode {
    match load_config(config_path).await {
        Ok(loaded) => {
            let c = &loaded.config;
            println!(
                "{}: ok ({} probes, {} rule files, {} receivers, {} actions)",
                config_path.display(),
                c.probes.len(),
                loaded.rule_file_paths.len(),
                c.receivers.len(),
                c.actions.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors.0 {
                println!("{e}");
            }
            eprintln!("{}: {} error(s)", config_path.display(), errors.0.len());
            ExitCode::FAILURE
        }
    }
}
