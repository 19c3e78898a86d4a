//! Rule files: YAML, PromQL in `expr`, templates in labels and annotations.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../harness.rs"]
mod harness;

fuzz_target!(|data: &[u8]| harness::rule_file(data));
