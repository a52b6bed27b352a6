//! Feeds arbitrary text to the conf.d file parser (`kennel_parsers::confd::parse_file`), the
//! whole of what the runner does with a file's text, and checks what it promises:
//! - an error names a line of the file (or just past its end) and never quotes the file:
//!   `=hunter2`, which the committed corpus plants in values and keys, never reaches a message
//!   (a key is shown only when it looks like one, and no key name holds a `=`);
//! - an accepted file's reserved keys are within their ranges, each instance is a mapping, and
//!   the `%%` stand-in used for unquoted template variables never leaks into a value;
//! - what it accepted, written back as JSON (which is YAML, once the line breaks JSON leaves
//!   unescaped are escaped), parses to the same configuration:
//!   the same instances, their reserved keys as the runner read them (YAML may read a scalar
//!   as a number for a typed key and as a string for the plugin's view: `07`).

#![no_main]

use std::path::Path;

use kennel_parsers::confd::{CheckConfig, MIN_INTERVAL_SECS, ReservedKeys, parse_file};
use kennel_parsers::yaml_bounds::MAX_FILE_BYTES;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

const SECRET: &str = "=hunter2";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("conf.d/fuzz.d/conf.yaml");
    let config = match parse_file("fuzz", path, text) {
        Ok(Some(config)) => config,
        Ok(None) => return,
        Err(error) => {
            if let Some(line) = error.line {
                assert!(line >= 1 && line <= yaml_lines(text) + 1, "{error}");
            }
            assert!(!error.message.is_empty());
            assert!(!error.message.contains(SECRET), "quotes the file: {error}");
            return;
        }
    };
    check_accepted(&config, text);

    // Written back without comments, anchors or `%%` trouble, the same file parses the same.
    let instances: Vec<Value> = config
        .instances
        .iter()
        .map(|(raw, keys)| {
            let mut written = without_reserved(raw);
            let Value::Object(keys) = serde_json::to_value(keys).unwrap() else {
                unreachable!("reserved keys serialize as a map")
            };
            written.as_object_mut().unwrap().extend(keys);
            written
        })
        .collect();
    let again = json!({
        "init_config": config.init_config,
        "instances": instances,
        "ad_identifiers": config.ad_identifiers,
        "ignore_autodiscovery_tags": config.ignore_autodiscovery_tags,
    })
    .to_string()
    // JSON leaves these unescaped, and YAML reads them as line breaks.
    .replace('\u{85}', "\\u0085")
    .replace('\u{2028}', "\\u2028")
    .replace('\u{2029}', "\\u2029");
    if again.len() > MAX_FILE_BYTES {
        return;
    }
    let reparsed = parse_file("fuzz", path, &again)
        .unwrap_or_else(|e| panic!("its own JSON is refused: {e}\n{again}"))
        .expect("its own JSON has instances");
    assert_eq!(reparsed.instances.len(), config.instances.len());
    for ((raw, keys), (raw_again, keys_again)) in config.instances.iter().zip(&reparsed.instances) {
        assert_eq!(keys_again, keys);
        assert_eq!(without_reserved(raw_again), without_reserved(raw));
    }
    assert_eq!(reparsed.ad_identifiers, config.ad_identifiers);
});

fn check_accepted(config: &CheckConfig, text: &str) {
    assert!(!config.instances.is_empty());
    for (raw, keys) in &config.instances {
        assert!(raw.is_object(), "{raw}");
        if let Some(interval) = keys.min_collection_interval {
            assert!((MIN_INTERVAL_SECS..=86_400.0).contains(&interval));
        }
        if let Some(timeout) = keys.timeout {
            assert!((0.001..=3600.0).contains(&timeout));
        }
        for path in keys.allowed_paths.iter().flatten() {
            assert!(path.is_absolute(), "{}", path.display());
        }
        if !text.contains('\u{2030}') {
            assert!(!raw.to_string().contains('\u{2030}'), "the stand-in leaked: {raw}");
        }
    }
    if !text.contains('\u{2030}') {
        assert!(!config.init_config.to_string().contains('\u{2030}'));
    }
}

/// An instance without its reserved keys: what is the check's alone.
fn without_reserved(raw: &Value) -> Value {
    let mut raw = raw.clone();
    if let Some(map) = raw.as_object_mut() {
        for name in ReservedKeys::NAMES {
            map.remove(name);
        }
    }
    raw
}

/// The lines of `text` as YAML counts them: `\r\n`, a lone `\r`, `\n`, NEL, LS and PS each
/// end one.
fn yaml_lines(text: &str) -> usize {
    let breaks = text.replace("\r\n", "\n");
    1 + breaks
        .chars()
        .filter(|c| matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}'))
        .count()
}
