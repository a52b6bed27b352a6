//! Feeds arbitrary text to the conf.d bounds check, then, for a text it lets through, to the
//! YAML parser the conf.d loader runs next, and checks the promise the bounds make: whatever
//! passes expands to at most about twice its length (one per node, one per byte of string),
//! plus the alias allowance, so that no accepted file can cost more than a small multiple of
//! its size. And a text the check finds a syntax error in is no YAML to serde either.

#![no_main]

use kennel_parsers::yaml_bounds::{ALIAS_ALLOWANCE, Breach, MAX_DEPTH, check};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match check(text) {
        Ok(()) => {}
        Err(breach) => {
            // A breach names a line inside the file, or just past its end (libyaml's mark for
            // what it found missing at the end of the stream), when it names one.
            if let Some(line) = breach.line() {
                assert!(line >= 1 && line <= yaml_lines(text) + 1, "{breach:?}");
            }
            assert!(!breach.to_string().is_empty());
            // A syntax error the check found is one serde finds too.
            if matches!(breach, Breach::Syntax { .. }) {
                assert!(serde_norway::from_str::<Value>(text).is_err(), "{breach:?}");
            }
            return;
        }
    }
    // Within the bounds, serde builds at most what the bounds allow.
    let Ok(value) = serde_norway::from_str::<Value>(text) else {
        return;
    };
    let (weight, depth) = measure(&value, 1);
    let limit = 2 * text.len() as u64 + ALIAS_ALLOWANCE + 8;
    assert!(
        weight <= limit,
        "{} bytes of YAML expand to {weight} (limit {limit})",
        text.len()
    );
    assert!(depth <= MAX_DEPTH + 1, "nested {depth} deep");
});

/// The lines of `text` as YAML counts them: `\r\n`, a lone `\r`, `\n`, NEL, LS and PS each
/// end one.
fn yaml_lines(text: &str) -> usize {
    let breaks = text.replace("\r\n", "\n");
    1 + breaks
        .chars()
        .filter(|c| matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}'))
        .count()
}

/// One per node plus the bytes of every string (keys included), and the deepest nesting.
fn measure(value: &Value, depth: usize) -> (u64, usize) {
    match value {
        Value::String(s) => (1 + s.len() as u64, depth),
        Value::Array(items) => items.iter().fold((1, depth), |(w, d), item| {
            let (iw, id) = measure(item, depth + 1);
            (w + iw, d.max(id))
        }),
        Value::Object(map) => map.iter().fold((1, depth), |(w, d), (key, item)| {
            let (iw, id) = measure(item, depth + 1);
            (w + 1 + key.len() as u64 + iw, d.max(id))
        }),
        _ => (1, depth),
    }
}
