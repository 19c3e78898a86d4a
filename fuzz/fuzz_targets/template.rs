//! The Go-template engine: parse, then execute with alert-like data.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rearguard::template::{Funcs, Template, Value};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(t) = Template::parse("fuzz", text, &["$labels", "$value"]) else {
        return;
    };
    let json: serde_json::Value =
        serde_json::from_str(r#"{"job":"api","severity":"critical"}"#).unwrap_or_default();
    let labels = Value::from(&json);
    let vars = vec![
        ("$labels".to_string(), labels.clone()),
        ("$value".to_string(), Value::Float(0.25)),
    ];
    let _ = t.execute(labels.clone(), vars.clone(), &Funcs::default());
    let _ = t.execute_html(labels, vars, &Funcs::default());
});
