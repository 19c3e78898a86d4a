//! `rearguard check`: validate the config and every file it names, and that
//! the Google credentials it names can get a token.

use std::path::Path;
use std::process::ExitCode;

use crate::config::{LoadedConfig, LocatedError, Locator, YamlPath};
use crate::daemon::load_config;

/// Prints a one-line summary (exit 0) or every error as `file:line:col: message` (exit 1).
/// With `offline`, the Google credentials are not tried.
pub async fn run(config_path: &Path, offline: bool) -> ExitCode {
    let loaded = match load_config(config_path).await {
        Ok(loaded) => loaded,
        Err(errors) => {
            for e in &errors.0 {
                println!("{e}");
            }
            eprintln!("{}: {} error(s)", config_path.display(), errors.0.len());
            return ExitCode::FAILURE;
        }
    };
    let mut summary = String::new();
    if let Some(gcp) = loaded.config.gcp.as_ref().filter(|_| !offline) {
        match crate::gcp::context::check(gcp, &loaded.base_dir).await {
            Ok(description) => summary = format!(", Google credentials: {description}"),
            Err(e) => {
                println!("{}", credentials_error(&loaded, e.to_string()));
                eprintln!("{}: 1 error(s)", config_path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    let c = &loaded.config;
    println!(
        "{}: ok ({} probes, {} rule files, {} receivers, {} actions{summary})",
        config_path.display(),
        c.probes.len(),
        loaded.rule_file_paths.len(),
        c.receivers.len(),
        c.actions.len()
    );
    ExitCode::SUCCESS
}

/// A credential failure, located at `gcp.credentials` in the config file.
fn credentials_error(loaded: &LoadedConfig, message: String) -> LocatedError {
    let text = std::fs::read_to_string(&loaded.path).unwrap_or_default();
    let path = YamlPath::root().key("gcp").key("credentials");
    let pos = Locator::new(&text).value(&path);
    LocatedError::new(
        &loaded.path,
        pos,
        format!("gcp.credentials: {message} (see README: Google service account)"),
    )
}
