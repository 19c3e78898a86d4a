//! PromQL parse and evaluate, instant and range, over a small tsdb.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../harness.rs"]
mod harness;

fuzz_target!(|data: &[u8]| harness::promql(data));
