//! The crate layering of docs/architecture.md, kept by reading the sources:
//! the library (every file under src/ but the binaries in src/bin/) never
//! names the simulator or the test fakes, and the simulator and the clock do
//! not depend on the library. Cargo cannot say this itself: the root package
//! depends on rearguard-sim for its binary's `demo`, and that dependency is
//! visible to the library too.

use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Crates the library must not use.
const NOT_FOR_THE_LIBRARY: [&str; 2] = ["rearguard_sim", "rearguard_testkit"];

fn rust_files(dir: &Path, skip: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a readable directory entry").path();
        if path == skip {
            continue;
        }
        if path.is_dir() {
            rust_files(&path, skip, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_library_does_not_use_the_simulator_or_the_fakes() {
    let src = Path::new(ROOT).join("src");
    let mut files = Vec::new();
    rust_files(&src, &src.join("bin"), &mut files);
    assert!(
        files.iter().any(|f| f.ends_with("src/lib.rs")),
        "the walk found no src/lib.rs: {files:?}"
    );
    let mut offending = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            if NOT_FOR_THE_LIBRARY.iter().any(|c| line.contains(c)) {
                offending.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        offending.is_empty(),
        "the library must not use the simulator or the test fakes (move the code \
         to the binary in src/bin/rearguard/ or to a test):\n{}",
        offending.join("\n")
    );
}

/// The `[dependencies]` table of a crate's Cargo.toml, as `name` lines.
fn dependency_names(manifest: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(manifest).unwrap();
    let mut in_dependencies = false;
    let mut names = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_dependencies = line == "[dependencies]";
        } else if in_dependencies && !line.starts_with('#') {
            if let Some((name, _)) = line.split_once('=') {
                names.push(name.trim().to_string());
            }
        }
    }
    names
}

#[test]
fn the_simulator_and_the_clock_do_not_depend_on_the_library() {
    for krate in ["rearguard-sim", "rearguard-clock"] {
        let manifest = Path::new(ROOT)
            .join("crates")
            .join(krate)
            .join("Cargo.toml");
        let names = dependency_names(&manifest);
        assert!(
            !names.is_empty(),
            "{}: no [dependencies]",
            manifest.display()
        );
        assert!(
            !names.iter().any(|n| n == "rearguard"),
            "{} depends on the library: {names:?}",
            manifest.display()
        );
    }
    assert!(
        dependency_names(&Path::new(ROOT).join("crates/rearguard-sim/Cargo.toml"))
            .iter()
            .any(|n| n == "rearguard-clock")
    );
}
