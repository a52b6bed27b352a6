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
//! | `timeout` | seconds, fractions allowed; `init_config.timeout`, else 10. The runner reserves the instance's `timeout` as the run's deadline and hands it to the check apart (`Ctx::timeout`): the request may take all of it, less the 50 ms the runner keeps to report a failure |
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
//! The options are a typed serde struct, [`Options`], whose values are checked as they are read
//! (the url's scheme, the regexes, a positive `init_config.timeout`): a bad one fails the run with its key
//! named, through `HttpCheck::config_error`, which still emits the CRITICAL service check.
//! Configs written for the Datadog Agent keep working: booleans also accept
//! `"yes"`/`"no"`/`"on"`/`"off"`/`"1"`/`"0"` (PyYAML 1.1 reads a bare `yes` as true, and
//! Datadog's `is_affirmative` accepts the strings), and numbers and strings are accepted where
//! Datadog calls `int()`/`str()` on the value (the sdk's `options` types). Unknown keys are
//! ignored, as Datadog's check ignores them (the runner's reserved keys never reach it).
//!
//! Not supported (the runner's HTTP capability has no way to express them): client certificates
//! (`tls_cert`, `tls_private_key`), custom CAs (`tls_ca_cert`, `ca_certs`), `check_hostname`,
//! `ssl_server_name`, proxies, authentication schemes (`auth_type`, `username`, `password`; set an
//! `Authorization` header instead) and `stream`. They are ignored like any unknown key.

use std::fmt;
use std::time::Duration;

use kennel_sdk::options::{Flag, Number, Text};
use regex_lite::Regex;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::Value;

/// Datadog's default `http_response_status_code`.
const DEFAULT_EXPECTED_CODE: &str = r"(1|2|3)\d\d";
/// How the CRITICAL message words [`DEFAULT_EXPECTED_CODE`], as Datadog's does.
const DEFAULT_EXPECTED_CODE_TEXT: &str = "1xx or 2xx or 3xx";
/// Datadog sends a body only for these methods, whatever `data` says.
const DATA_METHODS: [&str; 5] = ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"];
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_DAYS_WARNING: f64 = 14.0;
const DEFAULT_DAYS_CRITICAL: f64 = 7.0;
pub const SECONDS_PER_DAY: f64 = 86_400.0;

/// One instance's options, as written; [`Config::new`] applies the defaults.
#[derive(Debug, Deserialize)]
pub struct Options {
    url: Url,
    name: Option<Text>,
    method: Option<Text>,
    data: Option<Data>,
    headers: Option<Headers>,
    extra_headers: Option<Headers>,
    include_default_headers: Option<Flag>,
    http_response_status_code: Option<StatusPattern>,
    content_match: Option<Pattern>,
    reverse_content_match: Option<Flag>,
    include_content: Option<Flag>,
    collect_response_time: Option<Flag>,
    check_certificate_expiration: Option<Flag>,
    days_warning: Option<NonNegative>,
    days_critical: Option<NonNegative>,
    seconds_warning: Option<NonNegative>,
    seconds_critical: Option<NonNegative>,
    tls_verify: Option<Flag>,
    disable_ssl_validation: Option<Flag>,
    allow_redirects: Option<Flag>,
}

impl Options {
    /// The tags on everything the instance emits; see [`tags`].
    pub fn tags(&self) -> Vec<String> {
        tags(Some(&self.url.0), self.name.as_ref().map(Text::as_str))
    }
}

/// The `init_config` options.
#[derive(Debug, Deserialize)]
pub struct InitConfig {
    /// The instances' default `timeout`.
    timeout: Option<Seconds>,
}

/// One instance's options, with the defaults applied.
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
    pub expected_status: ExpectedStatus,
    /// Not set for an empty pattern, which Datadog skips (it would match everything anyway).
    pub content_match: Option<Pattern>,
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
    /// Applies the defaults to `options`, `init_config`'s `timeout` among them; `timeout` is
    /// the instance's own (`Ctx::timeout`), which the runner keeps out of `options`.
    pub fn new(
        options: Options,
        init_config: Option<InitConfig>,
        timeout: Option<Duration>,
    ) -> Self {
        let method = options
            .method
            .map_or_else(|| "GET".to_owned(), |Text(method)| method.to_uppercase());
        let (body, content_type) = match options.data {
            Some(data) if DATA_METHODS.contains(&method.as_str()) => match data {
                Data::Json(json) => (Some(json.into_bytes()), Some("application/json")),
                Data::Form(form) => (
                    Some(form.into_bytes()),
                    Some("application/x-www-form-urlencoded"),
                ),
            },
            _ => (None, None),
        };

        let mut headers = Vec::new();
        if on(options.include_default_headers, true) {
            set_header(
                &mut headers,
                "User-Agent",
                concat!("Kennel/", env!("CARGO_PKG_VERSION")),
            );
            set_header(&mut headers, "Accept", "*/*");
        }
        let configured = options.headers.into_iter().chain(options.extra_headers);
        for (name, value) in configured.flat_map(|Headers(headers)| headers) {
            set_header(&mut headers, &name, &value);
        }
        if let Some(content_type) = content_type
            && !headers
                .iter()
                .any(|(name, _)| name.eq_ignore_ascii_case("Content-Type"))
        {
            headers.push(("Content-Type".to_owned(), content_type.to_owned()));
        }

        let timeout = timeout
            .or(init_config
                .and_then(|init| init.timeout)
                .map(|Seconds(t)| t))
            .unwrap_or(DEFAULT_TIMEOUT);

        // Thresholds in seconds take precedence over days; as in Datadog, 0 means "not set".
        let threshold = |seconds: Option<NonNegative>, days: Option<NonNegative>, default: f64| {
            let set = |value: Option<NonNegative>| value.map(|v| v.0).filter(|v| *v > 0.0);
            set(seconds).unwrap_or(set(days).unwrap_or(default) * SECONDS_PER_DAY)
        };
        let seconds_warning = threshold(
            options.seconds_warning,
            options.days_warning,
            DEFAULT_DAYS_WARNING,
        );
        let seconds_critical = threshold(
            options.seconds_critical,
            options.days_critical,
            DEFAULT_DAYS_CRITICAL,
        );

        // `tls_verify` wins over the legacy, inverted `disable_ssl_validation`.
        let tls_verify = match options.tls_verify {
            Some(Flag(verify)) => verify,
            None => !on(options.disable_ssl_validation, false),
        };

        Self {
            url: options.url.0,
            method,
            body,
            headers,
            timeout,
            expected_status: options
                .http_response_status_code
                .map_or(ExpectedStatus::Datadog, ExpectedStatus::Pattern),
            content_match: options
                .content_match
                .filter(|pattern| !pattern.text.is_empty()),
            reverse_content_match: on(options.reverse_content_match, false),
            include_content: on(options.include_content, false),
            collect_response_time: on(options.collect_response_time, true),
            check_certificate_expiration: on(options.check_certificate_expiration, true),
            seconds_warning,
            seconds_critical,
            tls_verify,
            allow_redirects: on(options.allow_redirects, true),
        }
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

/// The status codes that count as up.
#[derive(Debug)]
pub enum ExpectedStatus {
    /// Datadog's default, `(1|2|3)\d\d`: 100 to 399, the only three-digit codes it matches.
    Datadog,
    /// `http_response_status_code`.
    Pattern(StatusPattern),
}

impl ExpectedStatus {
    pub fn accepts(&self, status: u16) -> bool {
        match self {
            Self::Datadog => (100..400).contains(&status),
            Self::Pattern(pattern) => pattern.regex.is_match(&status.to_string()),
        }
    }

    /// What the status-code message says was expected: the pattern, or Datadog's wording for
    /// the default one.
    pub fn describe(&self) -> &str {
        match self {
            Self::Pattern(pattern) if pattern.text != DEFAULT_EXPECTED_CODE => &pattern.text,
            _ => DEFAULT_EXPECTED_CODE_TEXT,
        }
    }
}

/// The tags on everything the instance emits, `url:<url>` and `instance:<name>`, from what
/// could be read of `url` and `name`.
///
/// Datadog requires `name`; here the url stands in when it is absent, as is (the tag normaliser
/// would turn `https://a/b` into an unreadable `https:_a_b`). A url's credentials
/// (`https://user:password@host/`) never reach a tag: tags are shown and sent everywhere.
pub fn tags(url: Option<&str>, name: Option<&str>) -> Vec<String> {
    let url = url.map(without_userinfo);
    let name = match name {
        Some(name) if !name.is_empty() => Some(normalize_tag(name)),
        _ => url.clone(),
    };
    let url = url.map(|url| format!("url:{url}"));
    url.into_iter()
        .chain(name.map(|name| format!("instance:{name}")))
        .collect()
}

/// `url` without the `user:password@` of its authority.
pub fn without_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// [`tags`] read leniently from an instance that did not deserialize, so that its CRITICAL
/// service check is tagged like any other.
pub fn raw_tags(instance: &Value) -> Vec<String> {
    let url = instance.get("url").and_then(Value::as_str);
    let name = instance
        .get("name")
        .and_then(|name| Text::deserialize(name).ok());
    tags(url, name.as_ref().map(Text::as_str))
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

/// A flag's value, or `default` when it is not set.
fn on(flag: Option<Flag>, default: bool) -> bool {
    flag.map_or(default, |Flag(on)| on)
}

/// Replaces a header of the same name (case-insensitive), as Datadog's `CaseInsensitiveDict`.
fn set_header(headers: &mut Vec<(String, String)>, name: &str, value: &str) {
    headers.retain(|(existing, _)| !existing.eq_ignore_ascii_case(name));
    headers.push((name.to_owned(), value.to_owned()));
}

/// `url`: an `http://` or `https://` address.
#[derive(Debug, Deserialize)]
#[serde(try_from = "Text")]
struct Url(String);

impl TryFrom<Text> for Url {
    type Error = String;

    fn try_from(Text(url): Text) -> Result<Self, String> {
        let is_http = ["http://", "https://"].iter().any(|scheme| {
            url.get(..scheme.len())
                .is_some_and(|start| start.eq_ignore_ascii_case(scheme))
        });
        if is_http {
            Ok(Self(url))
        } else {
            Err(format!("must start with http:// or https://, got {url:?}"))
        }
    }
}

/// A positive number of seconds, fractions allowed.
#[derive(Debug, Deserialize)]
#[serde(try_from = "Number")]
struct Seconds(Duration);

impl TryFrom<Number> for Seconds {
    type Error = String;

    fn try_from(Number(seconds): Number) -> Result<Self, String> {
        if seconds > 0.0 {
            // Beyond u32 milliseconds the capability cannot express it anyway.
            let seconds = seconds.min(f64::from(u32::MAX) / 1000.0);
            Ok(Self(Duration::from_secs_f64(seconds)))
        } else {
            Err(format!(
                "must be a positive number of seconds, got {seconds}"
            ))
        }
    }
}

/// A number of at least 0.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "Number")]
struct NonNegative(f64);

impl TryFrom<Number> for NonNegative {
    type Error = String;

    fn try_from(Number(n): Number) -> Result<Self, String> {
        if n >= 0.0 {
            Ok(Self(n))
        } else {
            Err(format!("must be a non-negative number, got {n}"))
        }
    }
}

/// A regular expression, as written (for messages) and compiled.
#[derive(Debug, Deserialize)]
#[serde(try_from = "Text")]
pub struct Pattern {
    pub text: String,
    pub regex: Regex,
}

impl TryFrom<Text> for Pattern {
    type Error = String;

    fn try_from(Text(text): Text) -> Result<Self, String> {
        let regex = compile(&text)?;
        Ok(Self { text, regex })
    }
}

/// `http_response_status_code`: a regular expression matched at the start of the status code.
#[derive(Debug, Deserialize)]
#[serde(try_from = "Text")]
pub struct StatusPattern {
    text: String,
    regex: Regex,
}

impl TryFrom<Text> for StatusPattern {
    type Error = String;

    fn try_from(Text(text): Text) -> Result<Self, String> {
        // Datadog uses Python's `re.match`, anchored at the start only: `2` accepts 200-299.
        let regex = compile(&format!("^(?:{text})"))?;
        Ok(Self { text, regex })
    }
}

fn compile(pattern: &str) -> Result<Regex, String> {
    Regex::new(pattern).map_err(|e| format!("not a valid regular expression: {e}"))
}

/// `data`: a mapping, sent as JSON, or a string, sent as is.
#[derive(Debug)]
enum Data {
    Json(String),
    Form(String),
}

impl<'de> Deserialize<'de> for Data {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DataVisitor)
    }
}

struct DataVisitor;

impl<'de> Visitor<'de> for DataVisitor {
    type Value = Data;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping (sent as JSON) or a string (sent as is, form-encoded)")
    }

    fn visit_str<E: de::Error>(self, form: &str) -> Result<Data, E> {
        Ok(Data::Form(form.to_owned()))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Data, A::Error> {
        let object = serde_json::Map::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(Data::Json(Value::Object(object).to_string()))
    }
}

/// `headers` and `extra_headers`: names to values, in order.
#[derive(Debug)]
struct Headers(Vec<(String, String)>);

impl<'de> Deserialize<'de> for Headers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(HeadersVisitor)
    }
}

struct HeadersVisitor;

impl<'de> Visitor<'de> for HeadersVisitor {
    type Value = Headers;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping of header names to values")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Headers, A::Error> {
        let mut headers = Vec::new();
        while let Some((name, Text(value))) = map.next_entry::<String, Text>()? {
            headers.push((name, value));
        }
        Ok(Headers(headers))
    }
}
