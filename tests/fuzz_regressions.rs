//! Every input a fuzzer once crashed on stays a test: the files under
//! `tests/fixtures/fuzz/<target>/` go through the same code as the fuzz
//! target of that name (`fuzz/harness.rs`). A crash here is a panic or abort.

#[path = "../fuzz/harness.rs"]
mod harness;

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fuzz")
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return 0;
    };
    let mut replayed = 0;
    for entry in entries {
        let path = entry.unwrap().path();
        run(&std::fs::read(&path).unwrap());
        replayed += 1;
    }
    replayed
}

#[test]
fn inputs_that_crashed_a_fuzzer_no_longer_do() {
    let replayed = replay("promql", harness::promql)
        + replay("config", harness::config)
        + replay("rule_file", harness::rule_file)
        + replay("template", harness::template)
        + replay("google_json", harness::google_json)
        + replay("api_bodies", harness::api_bodies);
    // The promql crash of 2026-12-05 at least: an empty folder must not pass silently.
    assert!(replayed >= 1, "no fuzz regression inputs found");
}
