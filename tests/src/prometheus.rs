//! A throwaway Prometheus server (Debian's `prometheus`, 2.42) that receives remote write: the
//! real receiver the forwarder's remote-write output is tested against.
//!
//! It runs `/usr/bin/prometheus` with `--web.enable-remote-write-receiver`, a config that scrapes
//! nothing (not even itself, so every series a test reads is one it sent), its TSDB in a
//! temporary directory and its web API on a free loopback port; it is killed when dropped.
//!
//! Written samples are in the head block and answer queries at once. What Prometheus itself
//! rejects is worth knowing when reading a test: a sample older than the newest one of its
//! series ("out of order sample", answered 400) or at the same timestamp with another value
//! ("duplicate sample for timestamp", 400), since the config leaves the TSDB's out-of-order
//! window at its default of 0; the very same sample again is taken (204) and stored once. A
//! sample more than an hour older than the newest one it holds, of any series, is "out of
//! bounds" (400): a backlog replayed after a long outage is refused. Names are not checked
//! (`kennel.test.gauge` is stored as sent), nor is the label order; a body that is not snappy
//! is 400 ("snappy: corrupt input"). Instant queries see a series for 5 minutes after its last
//! sample (the default lookback).
//!
//! The fixture's HTTP client is `reqwest`'s blocking one: call it from a plain `#[test]` (or
//! `spawn_blocking`), not from inside an async runtime.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::http_server::closed_port;

/// Where Debian's package puts the server.
const BIN: &str = "/usr/bin/prometheus";

/// A series' labels, `__name__` included.
pub type Labels = BTreeMap<String, String>;

/// A running Prometheus; killed when dropped.
pub struct Prometheus {
    port: u16,
    dir: tempfile::TempDir,
    child: Child,
    client: reqwest::blocking::Client,
}

impl Prometheus {
    /// Starts a server with an empty TSDB and waits until it is ready (`/-/ready`).
    pub fn start() -> Self {
        assert!(
            std::path::Path::new(BIN).exists(),
            "{BIN} is missing: install Debian's `prometheus` (tests/prepare-machine, run by `make test`, does)"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("prometheus.yml");
        // No scrape configs: the only series are the ones written to it.
        std::fs::write(&config, "scrape_configs: []\n").expect("write the config");
        let port = closed_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new(BIN)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-remote-write-receiver")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"));
        let mut prometheus = Self {
            port,
            dir,
            child,
            client: client(),
        };
        prometheus.wait_ready();
        prometheus
    }

    /// The base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The remote-write receiver, `<base>/api/v1/write`.
    pub fn remote_write_url(&self) -> String {
        format!("{}/api/v1/write", self.url())
    }

    /// What the server has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The instant vector of `promql` evaluated now: each series' labels and value.
    pub fn query(&self, promql: &str) -> Vec<(Labels, f64)> {
        let body = api_get(
            &self.client,
            &self.url(),
            "/api/v1/query",
            &[("query", promql)],
            &self.log_path(),
        );
        instant_vector(&body)
    }

    /// The labels of every series that `selector` matches (`/api/v1/series`), over all time.
    pub fn series(&self, selector: &str) -> Vec<Labels> {
        let body = api_get(
            &self.client,
            &self.url(),
            "/api/v1/series",
            &[("match[]", selector)],
            &self.log_path(),
        );
        body["data"]
            .as_array()
            .unwrap_or_else(|| panic!("/api/v1/series answered no list: {body}"))
            .iter()
            .map(labels)
            .collect()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("prometheus.log")
    }

    fn wait_ready(&mut self) {
        let url = format!("{}/-/ready", self.url());
        let ready = crate::wait::until(
            Duration::from_secs(30),
            || {
                if let Ok(Some(status)) = self.child.try_wait() {
                    panic!("prometheus exited ({status}); log:\n{}", self.log());
                }
                self.client
                    .get(&url)
                    .send()
                    .is_ok_and(|r| r.status().is_success())
            },
            |ready| *ready,
        );
        assert!(
            ready,
            "prometheus is not ready after 30 s; log:\n{}",
            self.log()
        );
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The fixtures' HTTP client: no proxy, and a timeout so a hung server fails the test.
pub(crate) fn client() -> reqwest::blocking::Client {
    runner::plugin::http::install_crypto_provider();
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client")
}

/// GETs a Prometheus HTTP API path (which VictoriaMetrics serves too) and returns its JSON,
/// panicking with the server's answer (and log) unless it says `success`.
pub(crate) fn api_get(
    client: &reqwest::blocking::Client,
    base: &str,
    path: &str,
    params: &[(&str, &str)],
    log: &std::path::Path,
) -> serde_json::Value {
    let mut url = reqwest::Url::parse(&format!("{base}{path}")).expect("a URL");
    url.query_pairs_mut().extend_pairs(params);
    let log = || std::fs::read_to_string(log).unwrap_or_default();
    let response = client
        .get(url.clone())
        .send()
        .unwrap_or_else(|e| panic!("GET {url}: {e}; log:\n{}", log()));
    let status = response.status();
    let text = response.text().unwrap_or_default();
    let body: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("GET {url} answered {status}, not JSON ({e}): {text}"));
    assert_eq!(
        body["status"], "success",
        "GET {url} answered {status}: {text}"
    );
    body
}

/// The series of a `/api/v1/query` answer whose result is an instant vector.
pub(crate) fn instant_vector(body: &serde_json::Value) -> Vec<(Labels, f64)> {
    assert_eq!(
        body["data"]["resultType"], "vector",
        "not an instant vector: {body}"
    );
    body["data"]["result"]
        .as_array()
        .unwrap_or_else(|| panic!("no result list: {body}"))
        .iter()
        .map(|series| {
            // A sample is [unix seconds, "value"]; the value is a string so NaN and ±Inf
            // survive JSON, and Rust's f64 parser reads those spellings too.
            let value = series["value"][1]
                .as_str()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("a sample without a value: {series}"));
            (labels(&series["metric"]), value)
        })
        .collect()
}

fn labels(object: &serde_json::Value) -> Labels {
    object
        .as_object()
        .unwrap_or_else(|| panic!("labels are not an object: {object}"))
        .iter()
        .map(|(name, value)| (name.clone(), value.as_str().unwrap_or_default().to_owned()))
        .collect()
}

/// A remote-write request as a client sends it: the protobuf, snappy block-compressed.
#[cfg(test)]
pub(crate) fn remote_write_body(request: &runner::forwarder::schema::WriteRequest) -> Vec<u8> {
    snap::raw::Encoder::new()
        .compress_vec(&prost::Message::encode_to_vec(request))
        .expect("snappy compresses")
}

/// POSTs a remote-write request with the headers the protocol requires.
#[cfg(test)]
pub(crate) fn post_remote_write(
    url: &str,
    request: &runner::forwarder::schema::WriteRequest,
) -> (u16, String) {
    let response = client()
        .post(url)
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(remote_write_body(request))
        .send()
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    (
        response.status().as_u16(),
        response.text().unwrap_or_default(),
    )
}

/// A one-sample remote-write request for the series `labels` (`__name__` among them).
#[cfg(test)]
pub(crate) fn one_sample(
    labels: &[(&str, &str)],
    value: f64,
    timestamp_ms: i64,
) -> runner::forwarder::schema::WriteRequest {
    use runner::forwarder::schema::{Label, Sample, TimeSeries, WriteRequest};
    let mut labels: Vec<Label> = labels
        .iter()
        .map(|(name, value)| Label {
            name: (*name).to_owned(),
            value: (*value).to_owned(),
        })
        .collect();
    labels.sort_by(|a, b| a.name.cmp(&b.name));
    WriteRequest {
        timeseries: vec![TimeSeries {
            labels,
            samples: vec![Sample {
                value,
                timestamp: timestamp_ms,
            }],
        }],
    }
}

/// Now, in milliseconds since the Unix epoch.
#[cfg(test)]
pub(crate) fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970");
    i64::try_from(now.as_millis()).expect("milliseconds fit an i64")
}

/// Has `promtool check metrics` (Prometheus's own parser and linter) read `page`: whether it
/// exited with success, and what it said (lint findings and format errors), stdout then stderr.
pub fn check_metrics(page: &str) -> (bool, String) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("metrics.txt");
    std::fs::write(&file, page).expect("the page is written");
    let out = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).expect("the page is readable"))
        .output()
        .expect("promtool runs (Debian's `prometheus`; tests/prepare-machine installs it)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// Panics, with what promtool said, unless `promtool check metrics` reads `page` without a
/// format error (lint findings pass).
pub fn assert_page_accepted(page: &str) {
    let (_, findings) = check_metrics(page);
    assert!(
        !findings.to_lowercase().contains("error"),
        "promtool refuses the page: {findings}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_written_sample_is_queryable_at_once() {
        let prometheus = Prometheus::start();
        let now = now_ms();
        let request = one_sample(
            &[("__name__", "kennel_test_gauge"), ("env", "prod")],
            42.5,
            now,
        );
        let (status, body) = post_remote_write(&prometheus.remote_write_url(), &request);
        assert_eq!(status, 204, "remote write answered {status}: {body}");

        let labels: Labels = [("__name__", "kennel_test_gauge"), ("env", "prod")]
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .into();
        assert_eq!(
            prometheus.query("kennel_test_gauge"),
            vec![(labels.clone(), 42.5)]
        );
        assert_eq!(prometheus.series("{env=\"prod\"}"), vec![labels]);

        // Prometheus keeps one sample per timestamp and only moves forward: a request
        // delivered twice is taken (and stored once), but another value at the same
        // timestamp, or an older sample, is refused.
        let write = |value, timestamp| {
            let request = one_sample(
                &[("__name__", "kennel_test_gauge"), ("env", "prod")],
                value,
                timestamp,
            );
            post_remote_write(&prometheus.remote_write_url(), &request).0
        };
        assert_eq!(
            [write(42.5, now), write(1.0, now), write(1.0, now - 60_000)],
            [204, 400, 400]
        );
    }
}
