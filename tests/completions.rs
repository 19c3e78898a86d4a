//! `rearguard completions SHELL` and `rearguard man` cover every subcommand the CLI has. The list
//! of subcommands comes from `--help` (clap's own listing), so a new subcommand is covered
//! without editing this test.

use std::collections::BTreeSet;
use std::process::Command;

fn rearguard(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_rearguard"))
        .args(args)
        .output()
        .expect("run rearguard");
    assert!(
        out.status.success(),
        "rearguard {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// The names under "Commands:" in `rearguard PATH... --help`, without `help`.
fn subcommands_of(path: &[&str]) -> Vec<String> {
    let mut args = path.to_vec();
    args.push("--help");
    let help = rearguard(&args);
    help.lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

/// Every (sub)command path, depth first: ["run"], ["silence"], ["silence", "add"], …
fn all_command_paths() -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let mut todo: Vec<Vec<String>> = vec![vec![]];
    while let Some(path) = todo.pop() {
        let refs: Vec<&str> = path.iter().map(String::as_str).collect();
        for name in subcommands_of(&refs) {
            let mut child = path.clone();
            child.push(name);
            paths.push(child.clone());
            todo.push(child);
        }
    }
    paths
}

fn names() -> BTreeSet<String> {
    let names: BTreeSet<String> = all_command_paths()
        .into_iter()
        .filter_map(|p| p.last().cloned())
        .collect();
    // A floor, so a change in clap's help layout cannot make this test vacuous.
    for known in [
        "run",
        "check",
        "test",
        "rules",
        "query",
        "probes",
        "silence",
        "add",
        "alerts",
        "rollback",
        "history",
        "hold",
        "unhold",
        "completions",
        "man",
    ] {
        assert!(names.contains(known), "{known} missing from {names:?}");
    }
    names
}

fn mentions_word(text: &str, word: &str) -> bool {
    let re = regex::Regex::new(&format!(
        r"(^|[^A-Za-z0-9]){}([^A-Za-z0-9]|$)",
        regex::escape(word)
    ))
    .expect("valid regex");
    re.is_match(text)
}

#[test]
fn completion_scripts_cover_every_subcommand() {
    let names = names();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = rearguard(&["completions", shell]);
        for name in &names {
            assert!(
                mentions_word(&script, name),
                "{shell} completions do not mention {name}"
            );
        }
    }
}

#[test]
fn man_page_covers_every_subcommand() {
    let page = rearguard(&["man"]);
    assert!(page.contains(".TH rearguard 1"), "not a man page:\n{page}");
    for path in all_command_paths().iter().filter(|p| p.len() == 1) {
        assert!(
            page.contains(&format!("rearguard\\-{}", path[0])),
            "the man page does not list {}",
            path[0]
        );
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let listed = rearguard(&["man", "--dir", &dir.path().to_string_lossy()]);
    for path in all_command_paths() {
        let file = dir.path().join(format!("rearguard-{}.1", path.join("-")));
        assert!(file.is_file(), "no {} (wrote:\n{listed})", file.display());
        assert!(listed.contains(&file.display().to_string()));
    }
    assert!(dir.path().join("rearguard.1").is_file());
}
