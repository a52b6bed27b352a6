//! Reading a check's options from its raw instance JSON, the way Datadog's Python checks read
//! theirs, with errors that name the key.
//!
//! A check that takes `serde_json::Value` as its `Config` (so that a bad option can still be
//! reported through its service check) reads each option with these. They accept what existing
//! Datadog configs hold: numbers given as strings, and the strings Datadog's `is_affirmative`
//! and PyYAML 1.1 read as booleans (`yes`, `on`, `1`, ...), which a YAML 1.2 parser leaves as
//! strings.

use serde_json::{Map, Value};

/// `true`/`false`, or a string or number Datadog reads as one. Null is false, as in Python;
/// `None` for anything else.
pub fn flag_value(value: &Value) -> Option<bool> {
    match value {
        Value::Null => Some(false),
        Value::Bool(b) => Some(*b),
        Value::Number(n) => Some(n.as_f64() != Some(0.0)),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "y" | "on" | "1" => Some(true),
            "false" | "no" | "n" | "off" | "0" | "" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// The boolean option `key`; `None` when absent or null.
pub fn flag(map: &Map<String, Value>, key: &str) -> Result<Option<bool>, String> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => flag_value(value)
            .map(Some)
            .ok_or_else(|| format!("`{key}` must be true or false, got {value}")),
    }
}

/// The finite number option `key`, also given as a numeric string; `None` when absent or null.
pub fn number(map: &Map<String, Value>, key: &str) -> Result<Option<f64>, String> {
    let value = match map.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(value) => value,
    };
    let number = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(text) => text.trim().parse::<f64>().ok(),
        _ => None,
    };
    match number {
        Some(n) if n.is_finite() => Ok(Some(n)),
        _ => Err(format!("`{key}` must be a number, got {value}")),
    }
}

/// The text option `key`: a string, or a number or boolean taken as its text (Datadog calls
/// `str()` on these); `None` when absent or null.
pub fn text(map: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => scalar_text(value)
            .map(Some)
            .ok_or_else(|| format!("`{key}` must be a string, got {value}")),
    }
}

/// A string, number or boolean as text; `None` for null, lists and mappings.
pub fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn options_read_like_datadog_and_name_the_key() {
        let m = map(json!({"a": "yes", "b": 0, "c": "8.5", "d": 12, "e": [1], "f": "maybe"}));
        assert_eq!(flag(&m, "a"), Ok(Some(true)));
        assert_eq!(flag(&m, "b"), Ok(Some(false)));
        assert_eq!(flag(&m, "missing"), Ok(None));
        assert!(flag(&m, "f").unwrap_err().contains("`f`"));
        assert_eq!(number(&m, "c"), Ok(Some(8.5)));
        assert!(
            number(&m, "f")
                .unwrap_err()
                .contains("`f` must be a number")
        );
        assert_eq!(text(&m, "d"), Ok(Some("12".to_owned())));
        assert!(text(&m, "e").unwrap_err().contains("`e` must be a string"));
        assert_eq!(flag_value(&Value::Null), Some(false));
    }
}
