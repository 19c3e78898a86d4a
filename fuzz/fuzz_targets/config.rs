//! The config loader (YAML, environment expansion, validation, rule files it names).
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../harness.rs"]
mod harness;

fuzz_target!(|data: &[u8]| harness::config(data));
