//! Runs Prometheus's PromQL test scripts against rearguard's engine.
//!
//! `promql-conformance PATH... [--manifest MANIFEST.tsv] [--min-pass-percent P]`
//! PATH is a `.test` file or a directory of them. Prints each failing eval as
//! `file:line: expr — expected … got …` and ends with `N passed, M failed, K skipped`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use rearguard::promql::script::{conformance_options, run_script, EvalCmd, Verdict};

struct Args {
    paths: Vec<PathBuf>,
    manifest: Option<PathBuf>,
    min_pass_percent: Option<f64>,
    verbose: bool,
}

fn usage() -> String {
    "usage: promql-conformance PATH... [--manifest MANIFEST.tsv] [--min-pass-percent P] [--verbose]"
        .to_string()
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        paths: Vec::new(),
        manifest: None,
        min_pass_percent: None,
        verbose: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--manifest" => {
                args.manifest = Some(it.next().ok_or_else(usage)?.into());
            }
            "--min-pass-percent" => {
                let v = it.next().ok_or_else(usage)?;
                args.min_pass_percent = Some(
                    v.parse()
                        .map_err(|_| format!("--min-pass-percent: not a number: {v:?}"))?,
                );
            }
            "--verbose" | "-v" => args.verbose = true,
            "-h" | "--help" => return Err(usage()),
            s if s.starts_with("--") => return Err(format!("unknown option {s}\n{}", usage())),
            _ => args.paths.push(a.into()),
        }
    }
    if args.paths.is_empty() {
        return Err(usage());
    }
    Ok(args)
}

/// MANIFEST.tsv: file, line, kind, tier, … keyed by (file name, line).
fn load_manifest(path: &Path) -> Result<HashMap<(String, usize), String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read manifest {}: {e}", path.display()))?;
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        if cols.len() < 4 {
            continue;
        }
        let n: usize = cols[1].parse().map_err(|_| {
            format!(
                "{}:{}: bad line number {:?}",
                path.display(),
                i + 1,
                cols[1]
            )
        })?;
        out.insert((cols[0].to_string(), n), cols[3].to_string());
    }
    Ok(out)
}

fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| format!("cannot read {}: {e}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "test"))
                .collect();
            entries.sort();
            files.extend(entries);
        } else if p.is_file() {
            files.push(p.clone());
        } else {
            return Err(format!("no such file or directory: {}", p.display()));
        }
    }
    Ok(files)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let manifest = match &args.manifest {
        Some(p) => match load_manifest(p) {
            Ok(m) => Some(m),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let files = match collect_files(&args.paths) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let (mut passed, mut failed, mut skipped) = (0usize, 0usize, 0usize);
    for file in &files {
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("cannot read {}: {e}", file.display());
                return ExitCode::from(2);
            }
        };
        let fname = file
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let skip = |line: usize, _e: &EvalCmd, touches_nh: bool| -> Option<String> {
            match &manifest {
                Some(m) => match m.get(&(fname.clone(), line)) {
                    Some(tier) if tier == "X" => Some("tier X".to_string()),
                    _ => None,
                },
                None => touches_nh.then(|| "needs native histograms".to_string()),
            }
        };
        for o in run_script(&text, conformance_options(), &skip) {
            match o.verdict {
                Verdict::Pass => passed += 1,
                Verdict::Skip(_) => skipped += 1,
                Verdict::Fail(why) => {
                    failed += 1;
                    let tier = manifest
                        .as_ref()
                        .and_then(|m| m.get(&(fname.clone(), o.line)))
                        .map(|t| format!(" [tier {t}]"))
                        .unwrap_or_default();
                    println!("{}:{}: {} — {why}{tier}", file.display(), o.line, o.expr);
                }
            }
            if args.verbose {
                eprintln!("{}:{} done", file.display(), o.line);
            }
        }
    }
    println!("{passed} passed, {failed} failed, {skipped} skipped");
    if let Some(p) = args.min_pass_percent {
        let total = passed + failed;
        let pct = if total == 0 {
            100.0
        } else {
            passed as f64 * 100.0 / total as f64
        };
        if pct < p {
            eprintln!("pass rate {pct:.2}% is below {p}%");
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
}
