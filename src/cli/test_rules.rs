//! `rearguard test rules`: runs `promtool test rules` files with promtool's
//! output and exit codes (0 when every file passed, 1 otherwise).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::rules::unittest::{run_files, TestOptions};

/// Runs the test files. `run` are regexes (OR-ed) selecting test groups by name.
pub async fn run(
    files: Vec<PathBuf>,
    run: Vec<String>,
    ignore_unknown_fields: bool,
) -> anyhow::Result<ExitCode> {
    let mut regexes = Vec::new();
    for r in &run {
        regexes.push(
            regex::Regex::new(r).map_err(|e| anyhow::anyhow!("invalid --run regex {r:?}: {e}"))?,
        );
    }
    let opts = TestOptions {
        run: regexes,
        ignore_unknown_fields,
    };
    let ok = tokio::task::spawn_blocking(move || {
        let mut out = std::io::stdout().lock();
        let mut err = std::io::stderr().lock();
        run_files(&files, &opts, &mut out, &mut err)
    })
    .await?;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
