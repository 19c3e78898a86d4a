//! The example rule files in rules/ are valid and their unit tests in
//! rules/tests/ pass (CI also runs `rearguard test rules rules/tests/*.yaml`
//! and `promtool check rules rules/*.yaml`).

use std::path::{Path, PathBuf};

use rearguard::rules::unittest::{run_test_file, TestOptions};

fn files(dir: &str) -> Vec<PathBuf> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&d)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    v.sort();
    v
}

#[test]
fn example_rule_files_are_valid() {
    let rules = files("rules");
    assert!(rules.len() >= 6, "{rules:?}");
    let errors = rearguard::rules::check_files(&rules);
    assert!(errors.is_empty(), "{errors:?}");
    // Every alert carries severity, and service (or derives it from the series).
    for f in rearguard::rules::load_rule_files(&rules, Default::default()).unwrap() {
        for g in &f.groups {
            for r in g.rules.iter().filter(|r| r.is_alerting()) {
                assert!(
                    r.labels.contains_key("severity"),
                    "{} in {}",
                    r.name(),
                    f.path.display()
                );
            }
        }
    }
}

#[test]
fn example_rule_unit_tests_pass() {
    let tests = files("rules/tests");
    assert_eq!(
        tests.len(),
        files("rules").len(),
        "one test file per rule file"
    );
    for t in tests {
        let r = run_test_file(&t, &TestOptions::default());
        assert!(r.passed(), "{}:\n{}", t.display(), r.errors.join("\n"));
    }
}

/// `rearguard check` (config loading) reports rule file errors at
/// file:line:col, and groups mapped to unknown query sources.
#[test]
fn config_check_covers_rule_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n        for: 5q\n",
    )
    .unwrap();
    let cfg = dir.path().join("rearguard.yaml");
    let text = "rule_files: [bad.yaml]\nrule_group_sources: {g: nowhere}\n";
    let errs = rearguard::config::load_str(&cfg, text, |_| None).unwrap_err();
    let lines: Vec<String> = errs.0.iter().map(|e| e.to_string()).collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("bad.yaml:6:14: for: not a valid duration")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("rearguard.yaml:2:25: query source \"nowhere\"")),
        "{lines:?}"
    );
}
