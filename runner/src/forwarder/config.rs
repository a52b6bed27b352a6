//! The forwarder's settings, read from the runner's config file with the Datadog Agent's own
//! key names (`api_key`, `site`, `dd_url`, `additional_endpoints`, `forwarder_*`), so a
//! `datadog.yaml` carries over, plus `remote_write` for Prometheus remote-write endpoints.
//!
//! Where Kennel's defaults differ from the Agent's, on purpose:
//! - the disk spill is on by default (the Agent's `forwarder_storage_max_size_in_bytes` is 0),
//!   under the runner's state directory and bounded to 50 MB: a dead intake should cost
//!   data only after a long outage, not after the 15 MB memory queue fills in minutes;
//! - `forwarder_health_timeout` (30 s) is Kennel's own: how long an endpoint may deliver
//!   nothing while it has data to send before `/health` turns red.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::config::RunnerConfig;

/// `use_v2_api`: which series API the Datadog intake gets.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct UseV2Api {
    /// `/api/v2/series` (protobuf) when true, `/api/v1/series` (JSON) when false. Defaults to
    /// true.
    pub series: bool,
}

impl Default for UseV2Api {
    fn default() -> Self {
        Self { series: true }
    }
}

/// One Prometheus remote-write endpoint.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RemoteWriteEndpoint {
    /// The whole address, e.g. `http://prometheus:9090/api/v1/write`.
    pub url: String,
    /// The endpoint's name in health, status and telemetry. Defaults to
    /// `remote_write:<host>:<port>`.
    #[serde(default)]
    pub name: Option<String>,
    /// Headers sent with every request (e.g. `X-Scope-OrgID`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub basic_auth: Option<BasicAuth>,
    /// Sent as `Authorization: Bearer <token>`.
    #[serde(default)]
    pub bearer_token: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    #[serde(default)]
    pub password: String,
}

/// What kind of intake an endpoint is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// The Datadog intake, with this API key.
    Datadog { api_key: String },
    /// A Prometheus remote-write receiver, with these extra headers (auth included).
    RemoteWrite { headers: Vec<(String, String)> },
}

/// One destination: a base URL, a protocol and its own queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EndpointConfig {
    /// In health (`forwarder:<name>`), status, telemetry and the spill directory's name.
    pub(crate) name: String,
    /// The base URL (Datadog) or the whole address (remote write).
    pub(crate) url: String,
    pub(crate) protocol: Protocol,
}

impl EndpointConfig {
    /// The URL without credentials, for status and logs.
    pub(crate) fn display_url(&self) -> String {
        match url::Url::parse(&self.url) {
            Ok(mut url) if !url.username().is_empty() || url.password().is_some() => {
                let _ = url.set_username("");
                let _ = url.set_password(None);
                url.to_string().trim_end_matches('/').to_owned()
            }
            _ => self.url.clone(),
        }
    }
}

/// Every endpoint to deliver to, or an error naming the key to fix.
pub(crate) fn endpoints(config: &RunnerConfig) -> Result<Vec<EndpointConfig>, String> {
    let mut endpoints = Vec::new();
    if !config.api_key.is_empty() {
        let url = match &config.dd_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("https://app.{}", config.site.trim_matches('.')),
        };
        check_url(&url, "dd_url")?;
        endpoints.push(EndpointConfig {
            name: "datadog".to_owned(),
            url,
            protocol: Protocol::Datadog {
                api_key: config.api_key.trim().to_owned(),
            },
        });
    } else if config.dd_url.is_some() {
        return Err("`dd_url` is set but `api_key` is empty: the intake needs a key".to_owned());
    }
    for (url, keys) in &config.additional_endpoints {
        check_url(url, "additional_endpoints")?;
        let host = host_port(url, true);
        for (i, key) in keys.iter().enumerate() {
            let name = if keys.len() == 1 {
                format!("datadog:{host}")
            } else {
                format!("datadog:{host}#{}", i + 1)
            };
            endpoints.push(EndpointConfig {
                name,
                url: url.trim_end_matches('/').to_owned(),
                protocol: Protocol::Datadog {
                    api_key: key.trim().to_owned(),
                },
            });
        }
    }
    for rw in &config.remote_write {
        check_url(&rw.url, "remote_write.url")?;
        for (name, value) in &rw.headers {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err()
                || reqwest::header::HeaderValue::from_str(value).is_err()
            {
                return Err(format!(
                    "`remote_write.headers`: `{name}: {value}` is not a valid HTTP header"
                ));
            }
            if name.eq_ignore_ascii_case("authorization")
                && (rw.basic_auth.is_some() || rw.bearer_token.is_some())
            {
                return Err("`remote_write`: an `Authorization` header and `basic_auth` or `bearer_token` both set".to_owned());
            }
        }
        if rw.basic_auth.is_some() && rw.bearer_token.is_some() {
            return Err("`remote_write`: `basic_auth` and `bearer_token` both set".to_owned());
        }
        let mut headers: Vec<(String, String)> = rw
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(auth) = &rw.basic_auth {
            use base64::Engine as _;
            let token = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", auth.username, auth.password).as_bytes());
            headers.push(("Authorization".to_owned(), format!("Basic {token}")));
        }
        if let Some(token) = &rw.bearer_token {
            headers.push(("Authorization".to_owned(), format!("Bearer {token}")));
        }
        endpoints.push(EndpointConfig {
            name: rw
                .name
                .clone()
                .unwrap_or_else(|| format!("remote_write:{}", host_port(&rw.url, false))),
            url: rw.url.clone(),
            protocol: Protocol::RemoteWrite { headers },
        });
    }
    let mut names: Vec<&str> = endpoints.iter().map(|e| e.name.as_str()).collect();
    names.sort_unstable();
    if let Some(pair) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!("two forwarder endpoints are named `{}`", pair[0]));
    }
    Ok(endpoints)
}

/// Refuses values no forwarder could work with.
pub(crate) fn validate(config: &RunnerConfig) -> Result<(), String> {
    let positive = [
        ("forwarder_timeout", config.forwarder_timeout),
        ("forwarder_backoff_base", config.forwarder_backoff_base),
        ("forwarder_backoff_max", config.forwarder_backoff_max),
        ("forwarder_health_timeout", config.forwarder_health_timeout),
    ];
    for (key, value) in positive {
        if !(value > 0.0 && value <= 86_400.0) {
            return Err(format!("`{key}` must be between 0 and 86400 seconds"));
        }
    }
    if !(config.forwarder_stop_timeout >= 0.0 && config.forwarder_stop_timeout <= 600.0) {
        return Err("`forwarder_stop_timeout` must be between 0 and 600 seconds".to_owned());
    }
    if !(config.forwarder_storage_max_disk_ratio > 0.0
        && config.forwarder_storage_max_disk_ratio <= 1.0)
    {
        return Err("`forwarder_storage_max_disk_ratio` must be between 0 and 1".to_owned());
    }
    endpoints(config).map(|_| ())
}

fn check_url(url: &str, key: &str) -> Result<(), String> {
    match url::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.has_host() => Ok(()),
        Ok(_) => Err(format!("`{key}`: `{url}` is not an http(s) URL")),
        Err(error) => Err(format!("`{key}`: `{url}`: {error}")),
    }
}

/// `host[:port]` of a URL, for endpoint names, with its path if `with_path`: the path tells
/// apart two tenants of one server (`/insert/0/datadog`, `/insert/1/datadog`), which
/// `additional_endpoints` has no other way to name.
fn host_port(url: &str, with_path: bool) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| {
            let host = u.host_str()?.to_owned();
            let host = match u.port() {
                Some(port) => format!("{host}:{port}"),
                None => host,
            };
            let path = if with_path {
                u.path().trim_end_matches('/')
            } else {
                ""
            };
            Some(format!("{host}{path}"))
        })
        .unwrap_or_else(|| url.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> RunnerConfig {
        RunnerConfig::parse(text).unwrap()
    }

    #[test]
    fn nothing_is_forwarded_without_a_key_or_a_remote_write_endpoint() {
        assert!(endpoints(&RunnerConfig::default()).unwrap().is_empty());
    }

    #[test]
    fn a_datadog_yaml_carries_over() {
        let config = parse(
            "api_key: abc\nsite: datadoghq.eu\nadditional_endpoints:\n  \"https://mirror.example:8443\": [k1, k2]\n  \"http://one.example/\": [k3]\nuse_v2_api:\n  series: false\nserializer_compressor_kind: zlib\nforwarder_timeout: 5\n",
        );
        let got: Vec<(String, String, Protocol)> = endpoints(&config)
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.url, e.protocol))
            .collect();
        let dd = |key: &str| Protocol::Datadog {
            api_key: key.to_owned(),
        };
        assert_eq!(
            got,
            [
                (
                    "datadog".into(),
                    "https://app.datadoghq.eu".into(),
                    dd("abc")
                ),
                (
                    "datadog:one.example".into(),
                    "http://one.example".into(),
                    dd("k3")
                ),
                (
                    "datadog:mirror.example:8443#1".into(),
                    "https://mirror.example:8443".into(),
                    dd("k1")
                ),
                (
                    "datadog:mirror.example:8443#2".into(),
                    "https://mirror.example:8443".into(),
                    dd("k2")
                ),
            ]
        );
        assert!(!config.use_v2_api.series);
    }

    #[test]
    fn remote_write_endpoints_carry_their_headers_and_auth() {
        let config = parse(
            "remote_write:\n  - url: http://127.0.0.1:9090/api/v1/write\n    headers: {X-Scope-OrgID: team-a}\n    basic_auth: {username: u, password: p}\n  - url: https://vm.example/api/v1/write\n    name: vm\n    bearer_token: t0k\n",
        );
        let got = endpoints(&config).unwrap();
        assert_eq!(got[0].name, "remote_write:127.0.0.1:9090");
        assert_eq!(
            got[0].protocol,
            Protocol::RemoteWrite {
                headers: vec![
                    ("X-Scope-OrgID".into(), "team-a".into()),
                    ("Authorization".into(), "Basic dTpw".into()),
                ]
            }
        );
        assert_eq!(got[1].name, "vm");
        assert_eq!(
            got[1].protocol,
            Protocol::RemoteWrite {
                headers: vec![("Authorization".into(), "Bearer t0k".into())]
            }
        );
    }

    #[test]
    fn mistakes_are_refused_naming_the_key() {
        for (text, key) in [
            ("dd_url: http://x", "api_key"),
            ("api_key: a\ndd_url: ftp://x", "dd_url"),
            ("remote_write:\n  - url: nowhere", "remote_write.url"),
            ("forwarder_timeout: 0", "forwarder_timeout"),
            (
                "forwarder_storage_max_disk_ratio: 2",
                "forwarder_storage_max_disk_ratio",
            ),
            (
                "serializer_compressor_kind: lz4",
                "serializer_compressor_kind",
            ),
            (
                "remote_write:\n  - {url: 'http://a/w', name: x}\n  - {url: 'http://b/w', name: x}",
                "named `x`",
            ),
            (
                "remote_write:\n  - {url: 'http://a/w', headers: {'bad header': x}}",
                "remote_write.headers",
            ),
            (
                "remote_write:\n  - {url: 'http://a/w', bearer_token: t, headers: {Authorization: x}}",
                "Authorization",
            ),
        ] {
            let error = RunnerConfig::parse(text).unwrap_err().to_string();
            assert!(error.contains(key), "{text:?}: {error}");
        }
    }
}
