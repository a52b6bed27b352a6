//! What a conf.d error may say about the file: key names and positions, never values.
//!
//! serde quotes what it could not use (`invalid type: string "root:$6$…", expected …`) and an
//! unknown key whole, and the errors go to the log and to `/status`, which any local user may
//! read: a file its writer could not read otherwise (a symlink to `/etc/shadow`, when
//! `confd_follow_external_symlinks` allows one) or a password under the wrong key would be
//! copied there. Cutting known quotations out of a message is not enough, since a quoted value
//! can imitate the words around it. So a message is kept only when the whole of it parses as one
//! of the forms serde, serde_json and serde_norway produce (or the loader's own), with each
//! value replaced by its kind; a key or path is kept only when it looks like one (letters,
//! digits, `_`, `-`, `.`, at most 64 to a key); any other message becomes "invalid value",
//! and the line still says where. A new form of message is withheld until it is added here.

use std::sync::LazyLock;

use regex::Regex;

/// What stands for a message that cannot be shown.
pub(crate) const WITHHELD: &str =
    "invalid value (the parser's message is withheld: it would quote the file)";

/// `path: rest`, with a path made only of key-like names, `?`, and `[index]`.
static PATH: LazyLock<Regex> = LazyLock::new(|| regex(r"^([A-Za-z0-9_.?\[\]-]{1,256}): (.*)$"));
static INVALID: LazyLock<Regex> = LazyLock::new(|| {
    regex(concat!(
        r"^invalid (type|value): ",
        r#"(?:(string) "(?:[^"\\]|\\.)*""#,
        r"|(integer|floating point|boolean|character) `[^`]*`(?: as [iu]128)?",
        r"|(byte array|unit value|Option value|newtype struct|sequence|map|enum|unit variant|newtype variant|tuple variant|struct variant))",
        r", (expected .+)$",
    ))
});
static LENGTH: LazyLock<Regex> = LazyLock::new(|| regex(r"^invalid length \d+, expected .+$"));
// Greedy: the last "`, expected " is serde's own, since what follows it lists field names.
static UNKNOWN: LazyLock<Regex> = LazyLock::new(|| {
    regex(r"^unknown (field|variant) `(.*)`, (expected .+|there are no (?:fields|variants))$")
});
static NAMED: LazyLock<Regex> =
    LazyLock::new(|| regex(r"^(?:missing|duplicate) field `[A-Za-z0-9_.-]{1,64}`$"));
/// The loader's own messages about reserved keys (see `confd.rs`).
static RESERVED: LazyLock<Regex> = LazyLock::new(|| {
    regex(concat!(
        r"^`[a-z_]{1,64}` is out of range: give seconds between [0-9.]+ and [0-9.]+$",
        r"|^allowed_paths\[\d+\] is not an absolute path$",
    ))
});
static KEY: LazyLock<Regex> = LazyLock::new(|| regex(r"^[A-Za-z0-9_.-]{1,64}$"));

/// serde_norway's messages that carry nothing from the file.
const FIXED: &[&str] = &[
    "recursion limit exceeded",
    "repetition limit exceeded",
    "unknown anchor",
    "EOF while parsing a value",
    "deserializing from YAML containing more than one document is not supported",
    "expected a mapping or list of mappings for merging, but found scalar",
    "unexpected tagged value in merge",
    "expected a mapping for merging, but found scalar",
    "expected a mapping for merging, but found sequence",
    "empty YAML tag is not allowed",
    "failed to parse YAML number",
];

fn regex(pattern: &str) -> Regex {
    match Regex::new(pattern) {
        Ok(regex) => regex,
        // The patterns are constants, proven by the tests below.
        Err(error) => panic!("invalid pattern {pattern}: {error}"),
    }
}

/// `message` (a deserializer's, without its position) with no value from the file in it.
pub(crate) fn message(message: &str) -> String {
    if let Some(kept) = form(message) {
        return kept;
    }
    match PATH.captures(message) {
        Some(parts) => match form(&parts[2]) {
            Some(kept) => format!("{}: {kept}", &parts[1]),
            None => format!("{}: {WITHHELD}", &parts[1]),
        },
        None => WITHHELD.to_owned(),
    }
}

/// A message of a known form, its values replaced by their kinds.
fn form(message: &str) -> Option<String> {
    if FIXED.contains(&message)
        || LENGTH.is_match(message)
        || NAMED.is_match(message)
        || RESERVED.is_match(message)
    {
        return Some(message.to_owned());
    }
    if let Some(parts) = INVALID.captures(message) {
        let kind = (2..=4).find_map(|group| parts.get(group))?.as_str();
        return Some(format!("invalid {}: {kind}, {}", &parts[1], &parts[5]));
    }
    let parts = UNKNOWN.captures(message)?;
    let name = &parts[2];
    Some(match KEY.is_match(name) {
        true => format!("unknown {} `{name}`, {}", &parts[1], &parts[3]),
        false => format!(
            "unknown {} (not shown: it is not a key name), {}",
            &parts[1], &parts[3]
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHADOW: &str = "root:$6$Zq1xXyZ$kT0pSecretHash";

    #[test]
    fn values_become_their_kinds_and_names_stay() {
        let cases = [
            (
                format!(r#"instances[0].tags: invalid type: string "{SHADOW}", expected a sequence"#),
                "instances[0].tags: invalid type: string, expected a sequence".to_owned(),
            ),
            (
                "invalid value: integer `-3`, expected u16".to_owned(),
                "invalid value: integer, expected u16".to_owned(),
            ),
            (
                "invalid type: integer `340282366920938463463374607431768211455` as u128, expected any valid JSON value".to_owned(),
                "invalid type: integer, expected any valid JSON value".to_owned(),
            ),
            (
                "instances: invalid type: map, expected a sequence".to_owned(),
                "instances: invalid type: map, expected a sequence".to_owned(),
            ),
            (
                "unknown field `instance`, expected one of `init_config`, `instances`".to_owned(),
                "unknown field `instance`, expected one of `init_config`, `instances`".to_owned(),
            ),
            (
                format!("unknown field `{SHADOW}:19000:0:99999:7::`, expected one of `a`, `b`"),
                "unknown field (not shown: it is not a key name), expected one of `a`, `b`"
                    .to_owned(),
            ),
            (
                "missing field `url`".to_owned(),
                "missing field `url`".to_owned(),
            ),
            (
                "instances[1]: `timeout` is out of range: give seconds between 0.001 and 3600"
                    .to_owned(),
                "instances[1]: `timeout` is out of range: give seconds between 0.001 and 3600"
                    .to_owned(),
            ),
            (
                "repetition limit exceeded".to_owned(),
                "repetition limit exceeded".to_owned(),
            ),
        ];
        for (raw, shown) in cases {
            assert_eq!(message(&raw), shown, "{raw}");
        }
    }

    #[test]
    fn a_value_imitating_the_message_around_it_is_not_shown() {
        let cases = [
            // A string value that closes its own quotation and adds an `expected`.
            (
                r#"invalid type: string "x\", expected SECRET", expected a sequence"#,
                "invalid type: string, expected a sequence".to_owned(),
            ),
            // An unknown key that imitates serde's tail.
            (
                "unknown field `SECRET one`, expected `x`, expected one of `a`",
                "unknown field (not shown: it is not a key name), expected one of `a`".to_owned(),
            ),
            // A key in the path that is not a name.
            (
                "SECRET value: invalid type: map, expected a string",
                WITHHELD.to_owned(),
            ),
            (
                "a.b: SECRET: invalid type: map, expected a string",
                format!("a.b: {WITHHELD}"),
            ),
            // Forms not known here, whatever they hold.
            (
                "deserializing nested enum in !SECRET from YAML is not supported yet",
                WITHHELD.to_owned(),
            ),
            (
                "invalid type: character ```, expected SECRET`, expected a string",
                WITHHELD.to_owned(),
            ),
        ];
        for (raw, shown) in cases {
            assert_eq!(message(raw), shown, "{raw}");
        }
    }
}
