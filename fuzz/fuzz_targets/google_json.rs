//! Answers from Cloud Monitoring, Logging and Run: decoding and what the
//! sources read from them.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rearguard::gcp::{logging, monitoring, run};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = serde_json::from_slice::<monitoring::ListTimeSeriesResponse>(data) {
        for ts in &r.time_series {
            for p in &ts.points {
                let _ = p.value.as_f64();
                if let Some(d) = &p.value.distribution_value {
                    if let Some(b) = &d.bucket_options {
                        let _ = b.upper_bounds();
                    }
                }
            }
        }
    }
    if let Ok(r) = serde_json::from_slice::<logging::ListLogEntriesResponse>(data) {
        for e in &r.entries {
            let _ = (e.severity(), e.revision_name(), e.message());
        }
    }
    if let Ok(s) = serde_json::from_slice::<run::Service>(data) {
        let _ = (s.is_ready(), s.serving_revisions());
    }
});
