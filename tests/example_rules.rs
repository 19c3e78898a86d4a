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
