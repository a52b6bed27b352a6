//! Option types that read a check's configuration the way Datadog's Python checks read theirs,
//! for configs written for the Datadog Agent to keep working in a typed [`Check::Config`].
//!
//! Datadog calls `is_affirmative()`, `int()`, `float()` or `str()` on an option, so existing
//! configs hold numbers given as strings (`timeout: "5"`), and the strings PyYAML 1.1 reads as
//! booleans (`yes`, `on`, ...), which a YAML 1.2 parser leaves as strings. [`Flag`], [`Number`]
//! and [`Text`] accept those; anything else is a serde error, which the sdk reports with the
//! key it was found under (see [`ConfigError`]).
//!
//! Wrap them in `Option` for an optional key: null is then "not set", as an absent key is.
//!
//! ```
//! use kennel_sdk::options::{Flag, Number, Text};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! struct Config {
//!     url: Text,
//!     timeout: Option<Number>,
//!     verify: Option<Flag>,
//! }
//!
//! let config: Config =
//!     serde_json::from_value(serde_json::json!({"url": "x", "timeout": "2.5", "verify": "no"}))
//!         .unwrap();
//! assert_eq!(config.timeout, Some(Number(2.5)));
//! assert_eq!(config.verify, Some(Flag(false)));
//! ```
//!
//! [`Check::Config`]: crate::Check::Config
//! [`ConfigError`]: crate::ConfigError
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, Unexpected, Visitor};

/// A boolean as Datadog's `is_affirmative` reads it: `true`/`false`, a number (0 is false), or
/// one of the strings `true`, `yes`, `y`, `on`, `1` and `false`, `no`, `n`, `off`, `0`, `""`
/// (any case). Null is false, as Python's `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flag(pub bool);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FlagVisitor)
    }
}

struct FlagVisitor;

impl<'de> Visitor<'de> for FlagVisitor {
    type Value = Flag;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("true or false")
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Flag, E> {
        Ok(Flag(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Flag, E> {
        Ok(Flag(value != 0))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Flag, E> {
        Ok(Flag(value != 0))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Flag, E> {
        Ok(Flag(value != 0.0))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Flag, E> {
        match value.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "y" | "on" | "1" => Ok(Flag(true)),
            "false" | "no" | "n" | "off" | "0" | "" => Ok(Flag(false)),
            _ => Err(E::invalid_value(Unexpected::Str(value), &self)),
        }
    }

    fn visit_unit<E: de::Error>(self) -> Result<Flag, E> {
        Ok(Flag(false))
    }

    fn visit_none<E: de::Error>(self) -> Result<Flag, E> {
        Ok(Flag(false))
    }
}

/// A finite number, also given as a numeric string (`"2.5"`), as Python's `float()` reads it.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct Number(pub f64);

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NumberVisitor)
    }
}

struct NumberVisitor;

impl<'de> Visitor<'de> for NumberVisitor {
    type Value = Number;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number")
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Number, E> {
        Ok(Number(value as f64))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Number, E> {
        Ok(Number(value as f64))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Number, E> {
        if value.is_finite() {
            Ok(Number(value))
        } else {
            Err(E::invalid_value(Unexpected::Float(value), &self))
        }
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Number, E> {
        match value.trim().parse::<f64>() {
            Ok(number) if number.is_finite() => Ok(Number(number)),
            _ => Err(E::invalid_value(Unexpected::Str(value), &self)),
        }
    }
}

/// Text as Python's `str()` gives it for the scalars a YAML file holds: a string as is, a
/// number or a boolean printed (`401`, `2.5`, `true`). Lists and mappings are errors.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Text(pub String);

impl Text {
    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<Text> for String {
    fn from(text: Text) -> Self {
        text.0
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TextVisitor)
    }
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Text;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Text, E> {
        Ok(Text(value.to_owned()))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Text, E> {
        Ok(Text(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Text, E> {
        Ok(Text(value.to_string()))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Text, E> {
        Ok(Text(value.to_string()))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Text, E> {
        // Debug keeps the `.0` of a whole float, as serde_json and Python print it.
        Ok(Text(format!("{value:?}")))
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Text, E> {
        Ok(Text(value.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn read<T: de::DeserializeOwned>(value: Value) -> Result<T, String> {
        serde_json::from_value(value).map_err(|error| error.to_string())
    }

    #[test]
    fn flags_read_like_datadog_is_affirmative() {
        let cases = [
            (json!(true), true),
            (json!("yes"), true),
            (json!(" On "), true),
            (json!(1), true),
            (json!(0.0), false),
            (json!("off"), false),
            (json!(""), false),
            (Value::Null, false),
        ];
        for (value, expected) in cases {
            assert_eq!(read::<Flag>(value.clone()), Ok(Flag(expected)), "{value}");
        }
        assert_eq!(
            read::<Flag>(json!("maybe")),
            Err("invalid value: string \"maybe\", expected true or false".to_owned())
        );
        assert_eq!(
            read::<Option<Flag>>(Value::Null),
            Ok(None),
            "null in an optional key is not set"
        );
    }

    #[test]
    fn numbers_may_be_numeric_strings_but_must_be_finite() {
        assert_eq!(read::<Number>(json!(" 8.5")), Ok(Number(8.5)));
        assert_eq!(read::<Number>(json!(12)), Ok(Number(12.0)));
        assert_eq!(
            read::<Number>(json!("inf")),
            Err("invalid value: string \"inf\", expected a number".to_owned())
        );
        assert_eq!(
            read::<Number>(json!([1])),
            Err("invalid type: sequence, expected a number".to_owned())
        );
    }

    #[test]
    fn text_is_any_scalar_printed() {
        assert_eq!(read::<Text>(json!("a")), Ok(Text("a".to_owned())));
        assert_eq!(read::<Text>(json!(401)), Ok(Text("401".to_owned())));
        assert_eq!(read::<Text>(json!(2.0)), Ok(Text("2.0".to_owned())));
        assert_eq!(read::<Text>(json!(false)), Ok(Text("false".to_owned())));
        assert_eq!(
            read::<Text>(json!({"a": 1})),
            Err("invalid type: map, expected a string".to_owned())
        );
    }
}
