//! The config loader (YAML, environment expansion, validation, rule files it names).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = rearguard::config::load_str(
        std::path::Path::new("/nonexistent/fuzz.yaml"),
        text,
        |name| (name == "SET").then(|| "value".to_string()),
    );
});
