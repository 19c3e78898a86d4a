//! Answers from Cloud Monitoring, Logging and Run: decoding and what the
//! sources read from them.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../harness.rs"]
mod harness;

fuzz_target!(|data: &[u8]| harness::google_json(data));
