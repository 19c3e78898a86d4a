//! Runs the `promtool test rules` examples of ../shared/conformance/promtool
//! (never copied into the project) and checks each gets promtool 3.x's verdict.

use std::path::{Path, PathBuf};

use rearguard::rules::unittest::{run_test_file, TestOptions};

/// The conformance files must be there: `../shared` sits beside the checkout.
fn dir() -> Option<PathBuf> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance/promtool");
    assert!(
        d.is_dir(),
        "{} not found: put shared/ beside the checkout",
        d.display()
    );
    Some(d)
}

fn run(
    file: &str,
    run: &[&str],
    ignore_unknown_fields: bool,
) -> rearguard::rules::unittest::FileResult {
    let d = dir().expect("conformance folder");
    let opts = TestOptions {
        run: run.iter().map(|r| regex::Regex::new(r).unwrap()).collect(),
        ignore_unknown_fields,
    };
    run_test_file(&d.join(file), &opts)
}

#[test]
fn promtool_verdicts() {
    if dir().is_none() {
        return;
    }
    // (file, --run, --ignore-unknown-fields, promtool 3.x passes)
    let cases: &[(&str, &[&str], bool, bool)] = &[
        ("long-period.yml", &[], false, true),
        ("no-test-group-interval.yml", &[], false, true),
        ("at-modifier-test.yml", &[], false, true),
        ("negative-offset-test.yml", &[], false, true),
        ("start-time-test.yml", &[], false, true),
        ("rules_run.yml", &[], false, false),
        ("rules_run.yml", &["correct"], false, true),
        ("rules_run.yml", &["wrong"], false, false),
        ("rules_run_extrafields.yml", &[], true, true),
        ("rules_run_extrafields.yml", &[], false, false),
        ("rules_run_fuzzy.yml", &[], false, false),
        ("rules_run_fuzzy.yml", &["correct"], false, true),
        ("rules_run_fuzzy.yml", &["wrong"], false, false),
        ("rules_run_no_fuzzy.yml", &[], false, false),
        ("failing.yml", &[], false, false),
        ("bad-input-series.yml", &[], false, false),
        ("bad-promql.yml", &[], false, false),
        ("bad-rules-error-test.yml", &[], false, false),
        ("bad-rules-syntax-test.yml", &[], false, false),
        ("docs-example/test.yml", &[], false, true),
    ];
    let mut wrong = Vec::new();
    for (file, runs, ignore, pass) in cases {
        let r = run(file, runs, *ignore);
        if r.passed() != *pass {
            wrong.push(format!("{file} --run {runs:?} ignore_unknown_fields={ignore}: expected pass={pass}, errors:\n{}", r.errors.join("\n")));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}

/// unittest.yml passes on promtool 3.x; rearguard has no native histograms,
/// so exactly its three histogram expectations fail and nothing else.
#[test]
fn unittest_yml_fails_only_on_native_histograms() {
    if dir().is_none() {
        return;
    }
    let r = run("unittest.yml", &[], false);
    assert_eq!(
        r.histogram_failures,
        r.errors.len(),
        "non-histogram failures:\n{}",
        r.errors.join("\n")
    );
    assert_eq!(r.errors.len(), 3, "{}", r.errors.join("\n"));
}
