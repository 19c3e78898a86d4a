//! Rule files: YAML, PromQL in `expr`, templates in labels and annotations.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = rearguard::rules::file::parse_rule_file(
        std::path::Path::new("fuzz.yaml"),
        text,
        Default::default(),
    );
});
