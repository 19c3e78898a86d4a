//! Alert and silence bodies and matcher query strings sent to the API.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../harness.rs"]
mod harness;

fuzz_target!(|data: &[u8]| harness::api_bodies(data));
