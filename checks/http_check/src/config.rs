//! The instance options of `http_check`, read the way Datadog's check reads them.
//!
//! | key | meaning; default |
//! |---|---|
//! | `url` | required; `http://` or `https://` |
//! | `name` | the `instance:` tag, normalised like Datadog's; defaults to the url, as is |
//! | `method` | sent upper-cased; `get` |
//! | `data` | for POST, PUT, DELETE, PATCH and OPTIONS only: a mapping is sent as JSON (`Content-Type: application/json`), a string as is (`application/x-www-form-urlencoded`), unless `headers` sets a `Content-Type`; none |
//! | `headers`, `extra_headers` | mappings of header names to values, over the defaults; none |
//! | `include_default_headers` | send `User-Agent: Kennel/<version>` and `Accept: */*`; true |
//! | `timeout` | seconds, fractions allowed; `init_config.timeout`, else 10 |
//! | `http_response_status_code` | regex matched at the start of the status code; `(1\|2\|3)\d\d` |
//! | `content_match` | regex searched in the body; none |
//! | `reverse_content_match` | finding `content_match` is the failure; false |
//! | `include_content` | add the body's first 200 characters to a CRITICAL message; false |
//! | `collect_response_time` | send `network.http.response_time`; true |
//! | `check_certificate_expiration` | check `https://` certificates; true |
//! | `days_warning`, `days_critical` | certificate thresholds; 14 and 7 |
//! | `seconds_warning`, `seconds_critical` | override the day thresholds when above 0; none |
//! | `tls_verify` | verify the certificate chain and name; true, or the inverse of the legacy `disable_ssl_validation` |
//! | `allow_redirects` | follow redirects (each hop must be granted); true |
//!
//! The instance arrives as raw JSON and each known key is read by hand rather than through a
//! derived struct, for three reasons: a bad value must fail with a message naming the key (serde's
//! own errors do not say which field), the run must still emit its CRITICAL service check when
//! the configuration is wrong (a derived `Check::Config` fails before the check runs), and
//! configs written for the Datadog Agent must keep working. The last one is why booleans also
//! accept `"yes"`/`"no"`/`"on"`/`"off"`/`"1"`/`"0"` (PyYAML 1.1 reads a bare `yes` as true, and
//! Datadog's `is_affirmative` accepts the strings), and numbers and strings are accepted where
//! Datadog calls `int()`/`str()` on the value. Unknown keys, such as the runner's reserved
//! `tags`, `service`, `min_collection_interval` and `allowed_hosts`, are ignored.
//!
//! Not supported (the runner's HTTP capability has no way to express them): client certificates
//! (`tls_cert`, `tls_private_key`), custom CAs (`tls_ca_cert`, `ca_certs`), `check_hostname`,
//! `ssl_server_name`, proxies, authentication schemes (`auth_type`, `username`, `password`; set an
//! `Authorization` header instead) and `stream`. They are ignored like any unknown key.

use std::time::Duration;

use kennel_sdk::options::{flag, number, scalar_text, text};
use regex_lite::Regex;
use serde_json::{Map, Value};

/// Datadog's default `http_response_status_code`.
const DEFAULT_EXPECTED_CODE: &str = r"(1|2|3)\d\d";
/// Datadog sends a body only for these methods, whatever `data` says.
const DATA_METHODS: [&str; 5] = ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"];
const DEFAULT_TIMEOUT_SECONDS: f64 = 10.0;
const DEFAULT_DAYS_WARNING: f64 = 14.0;
const DEFAULT_DAYS_CRITICAL: f64 = 7.0;
pub const SECONDS_PER_DAY: f64 = 86_400.0;

/// One instance's options, validated.
#[derive(Debug)]
pub struct Config {
    pub url: String,
    /// Upper-cased.
    pub method: String,
    /// Sent only for the methods in `DATA_METHODS`.
    pub body: Option<Vec<u8>>,
    /// User headers over the defaults; a `Content-Type` matching `body` unless the user set one.
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    pub status_code: Regex,
    /// What the status-code message says was expected: the pattern, or Datadog's wording for
    /// the default one.
    pub expected_code: String,
    /// The pattern as written (for messages) and compiled.
    pub content_match: Option<(String, Regex)>,
    pub reverse_content_match: bool,
    pub include_content: bool,
    pub collect_response_time: bool,
    pub check_certificate_expiration: bool,
    pub seconds_warning: f64,
    pub seconds_critical: f64,
    pub tls_verify: bool,
    pub allow_redirects: bool,
}

impl Config {
    /// Reads `instance`, falling back to `init_config` for `timeout`.
    pub fn parse(
        instance: &Value,
        init_config: Option<&Map<String, Value>>,
    ) -> Result<Self, String> {
        let Value::Object(instance) = instance else {
            return Err(format!(
                "the instance must be a mapping of options, got {instance}"
            ));
        };
        let url = text(instance, "url")?.ok_or(
            "`url` is required: set it to the address to check, e.g. https://example.com/health",
        )?;
        if !is_http(&url) {
            return Err(format!(
                "`url` must start with http:// or https://, got {url:?}"
            ));
        }
        let method = text(instance, "method")?
            .unwrap_or_else(|| "get".to_owned())
            .to_uppercase();

        let (body, content_type) = match instance.get("data") {
            None | Some(Value::Null) => (None, None),
            Some(Value::Object(object)) => (
                Some(Value::Object(object.clone()).to_string().into_bytes()),
                Some("application/json"),
            ),
            Some(Value::String(form)) => (
                Some(form.clone().into_bytes()),
                Some("application/x-www-form-urlencoded"),
            ),
            Some(other) => {
                return Err(format!(
                    "`data` must be a mapping (sent as JSON) or a string (sent as is, \
                     form-encoded), got {other}"
                ));
            }
        };
        let (body, content_type) = if DATA_METHODS.contains(&method.as_str()) {
            (body, content_type)
        } else {
            (None, None)
        };

        let mut headers = Vec::new();
        if flag(instance, "include_default_headers")?.unwrap_or(true) {
            set_header(
                &mut headers,
                "User-Agent",
                concat!("Kennel/", env!("CARGO_PKG_VERSION")),
            );
            set_header(&mut headers, "Accept", "*/*");
        }
        for (name, value) in string_map(instance, "headers")?
            .into_iter()
            .chain(string_map(instance, "extra_headers")?)
        {
            set_header(&mut headers, &name, &value);
        }
        if let Some(content_type) = content_type
            && !headers
                .iter()
                .any(|(name, _)| name.eq_ignore_ascii_case("Content-Type"))
        {
            headers.push(("Content-Type".to_owned(), content_type.to_owned()));
        }

        let timeout = match number(instance, "timeout")? {
            Some(seconds) => seconds_to_duration("timeout", seconds)?,
            None => match init_config
                .map(|init| number(init, "timeout").map_err(|e| format!("init_config: {e}")))
                .transpose()?
            {
                Some(Some(seconds)) => seconds_to_duration("init_config.timeout", seconds)?,
                _ => Duration::from_secs_f64(DEFAULT_TIMEOUT_SECONDS),
            },
        };

        let status_pattern = text(instance, "http_response_status_code")?
            .unwrap_or_else(|| DEFAULT_EXPECTED_CODE.to_owned());
        // Datadog uses Python's `re.match`, anchored at the start only: `2` accepts 200-299.
        let status_code = compile(
            "http_response_status_code",
            &format!("^(?:{status_pattern})"),
        )?;
        let expected_code = if status_pattern == DEFAULT_EXPECTED_CODE {
            "1xx or 2xx or 3xx".to_owned()
        } else {
            status_pattern
        };

        let content_match = match text(instance, "content_match")? {
            // Datadog skips an empty pattern, which would match everything anyway.
            Some(pattern) if !pattern.is_empty() => {
                let regex = compile("content_match", &pattern)?;
                Some((pattern, regex))
            }
            _ => None,
        };

        // Thresholds in seconds take precedence over days; as in Datadog, 0 means "not set".
        let threshold = |seconds_key: &str, days_key: &str, default_days: f64| {
            let seconds = non_negative(instance, seconds_key)?.filter(|s| *s > 0.0);
            let days = non_negative(instance, days_key)?.filter(|d| *d > 0.0);
            Ok::<_, String>(seconds.unwrap_or(days.unwrap_or(default_days) * SECONDS_PER_DAY))
        };
        let seconds_warning = threshold("seconds_warning", "days_warning", DEFAULT_DAYS_WARNING)?;
        let seconds_critical =
            threshold("seconds_critical", "days_critical", DEFAULT_DAYS_CRITICAL)?;

        // `tls_verify` wins over the legacy, inverted `disable_ssl_validation`.
        let tls_verify = match flag(instance, "tls_verify")? {
            Some(verify) => verify,
            None => !flag(instance, "disable_ssl_validation")?.unwrap_or(false),
        };

        Ok(Self {
            url,
            method,
            body,
            headers,
            timeout,
            status_code,
            expected_code,
            content_match,
            reverse_content_match: flag(instance, "reverse_content_match")?.unwrap_or(false),
            include_content: flag(instance, "include_content")?.unwrap_or(false),
            collect_response_time: flag(instance, "collect_response_time")?.unwrap_or(true),
            check_certificate_expiration: flag(instance, "check_certificate_expiration")?
                .unwrap_or(true),
            seconds_warning,
            seconds_critical,
            tls_verify,
            allow_redirects: flag(instance, "allow_redirects")?.unwrap_or(true),
        })
    }

    /// The request's timeout for the HTTP capability, which counts in whole milliseconds.
    pub fn timeout_ms(&self) -> u32 {
        u32::try_from(self.timeout.as_millis())
            .unwrap_or(u32::MAX)
            .max(1)
    }

    pub fn is_https(&self) -> bool {
        self.url
            .get(..8)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
    }
}

/// The tags on everything the instance emits, `url:<url>` and `instance:<name>`, read leniently
/// so that a run whose configuration is rejected can still tag its service check.
///
/// Datadog requires `name`; here the url stands in when it is absent, as is (the tag normaliser
/// would turn `https://a/b` into an unreadable `https:_a_b`).
pub fn tags(instance: &Value) -> Vec<String> {
    let Value::Object(instance) = instance else {
        return Vec::new();
    };
    let url = instance.get("url").and_then(Value::as_str);
    let name = match text(instance, "name") {
        Ok(Some(name)) if !name.is_empty() => Some(normalize_tag(&name)),
        _ => url.map(str::to_owned),
    };
    let url = url.map(|url| format!("url:{url}"));
    url.into_iter()
        .chain(name.map(|name| format!("instance:{name}")))
        .collect()
}

/// Datadog's `AgentCheck.normalize_tag`: `, + * - / ( ) [ ] { }` and whitespace become `_`, runs
/// of `_` collapse, `_` next to `.` is dropped, and leading and trailing `_` are trimmed.
fn normalize_tag(tag: &str) -> String {
    let mut out = String::with_capacity(tag.len());
    for c in tag.chars() {
        let c = match c {
            ',' | '+' | '*' | '-' | '/' | '(' | ')' | '[' | ']' | '{' | '}' => '_',
            ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c' => '_',
            c => c,
        };
        match c {
            '_' if out.ends_with('_') || out.ends_with('.') => {}
            '.' => {
                while out.ends_with('_') {
                    out.pop();
                }
                out.push('.');
            }
            c => out.push(c),
        }
    }
    out.trim_matches('_').to_owned()
}

fn is_http(url: &str) -> bool {
    ["http://", "https://"].iter().any(|scheme| {
        url.get(..scheme.len())
            .is_some_and(|start| start.eq_ignore_ascii_case(scheme))
    })
}

fn compile(key: &str, pattern: &str) -> Result<Regex, String> {
    Regex::new(pattern).map_err(|e| format!("`{key}` is not a valid regular expression: {e}"))
}

fn seconds_to_duration(key: &str, seconds: f64) -> Result<Duration, String> {
    if seconds.is_finite() && seconds > 0.0 {
        // Beyond u32 milliseconds the capability cannot express it anyway.
        Ok(Duration::from_secs_f64(
            seconds.min(f64::from(u32::MAX) / 1000.0),
        ))
    } else {
        Err(format!(
            "`{key}` must be a positive number of seconds, got {seconds}"
        ))
    }
}

/// Replaces a header of the same name (case-insensitive), as Datadog's `CaseInsensitiveDict`.
fn set_header(headers: &mut Vec<(String, String)>, name: &str, value: &str) {
    headers.retain(|(existing, _)| !existing.eq_ignore_ascii_case(name));
    headers.push((name.to_owned(), value.to_owned()));
}

fn non_negative(map: &Map<String, Value>, key: &str) -> Result<Option<f64>, String> {
    match number(map, key)? {
        Some(n) if n < 0.0 || !n.is_finite() => {
            Err(format!("`{key}` must be a non-negative number, got {n}"))
        }
        n => Ok(n),
    }
}

fn string_map(map: &Map<String, Value>, key: &str) -> Result<Vec<(String, String)>, String> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Object(entries)) => entries
            .iter()
            .map(|(name, value)| {
                scalar_text(value)
                    .map(|value| (name.clone(), value))
                    .ok_or_else(|| format!("`{key}.{name}` must be a string, got {value}"))
            })
            .collect(),
        Some(other) => Err(format!(
            "`{key}` must be a mapping of names to values, got {other}"
        )),
    }
}
