//! A throwaway VictoriaMetrics (Debian's `victoria-metrics`, 1.79.5): a real server that takes
//! both of the forwarder's protocols, Datadog's v1 series JSON under `/datadog` and Prometheus
//! remote write, and gives back what it stored.
//!
//! It runs `/usr/bin/victoria-metrics` on a free loopback port with its storage in a temporary
//! directory. [`VictoriaMetrics::stop`] and [`VictoriaMetrics::restart`] make an outage: the
//! port is closed in between, and the restarted server, on the same port and storage, still has
//! everything it had accepted.
//!
//! What 1.79.5 does, as checked by hand (and by this module's tests where it matters):
//! - `POST /datadog/api/v1/series` takes JSON plain or with `Content-Encoding: deflate` (zlib)
//!   or `gzip`, and answers 400 to `zstd`; `/datadog/api/v2/series` and
//!   `/datadog/api/beta/sketches` are 400 ("unsupported path"). `/datadog/api/v1/validate`
//!   answers `{"valid":true}` to any key or none, `/datadog/api/v1/check_run` 202 and
//!   `/datadog/intake/` 200, storing nothing.
//! - A v1 series becomes `__name__` = the metric (dots, spaces and capitals kept), one label
//!   per `key:value` tag (split at the first colon), a tag without a value becomes
//!   `key="no_label_value"`, and the host becomes `host` (none if empty; a `host:` tag then
//!   becomes `exported_host`). Two tags with one key keep only the last, where Datadog keeps
//!   both. Its `type`, `interval`, `device` and `source_type_name` are dropped, and values are
//!   stored as sent (a count is not turned into a rate or back). Timestamps may be fractional
//!   seconds; they are stored in milliseconds.
//! - A sample older than the retention (the default month) is dropped with only a warning in
//!   the log, though the request is answered 202.
//! - Nothing is deduplicated (no `-dedup.minScrapeInterval`): the same sample sent twice is
//!   exported twice, which is how a test sees a payload delivered twice.
//! - Samples are searchable only after the in-memory buffers are flushed, about 5 s after
//!   they arrive; [`VictoriaMetrics::export`] and [`VictoriaMetrics::query`] force that flush
//!   first. An export then has every sample, because the fixture asks for the time range up
//!   to 3 days ahead (by default it ends at the current whole second, which hides a
//!   millisecond remote-write sample of this second, and any sample from a clock ahead). An
//!   instant query at "now" still misses a sample for about a second after its timestamp,
//!   even with `-search.latencyOffset=0` and `-search.disableCache` (without them it is 30 s),
//!   so a test polls a query (`wait::until`) as it would any delivery. A SIGKILL
//!   loses what was not flushed; a SIGTERM (what [`VictoriaMetrics::stop`] sends) flushes it.
//! - Above 30 labels a series loses the rest silently (`-maxLabelsPerTimeseries`), which the
//!   fixture raises to 200 so a test with many tags sees all of them.
//!
//! The fixture's HTTP client is `reqwest`'s blocking one: call it from a plain `#[test]` (or
//! `spawn_blocking`), not from inside an async runtime.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::http_server::closed_port;
use crate::prometheus::{Labels, api_get, client, instant_vector};

/// Where Debian's package puts the server.
const BIN: &str = "/usr/bin/victoria-metrics";

/// One series as `/api/v1/export` gives it: every stored sample, in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportedSeries {
    /// `__name__` included.
    pub labels: BTreeMap<String, String>,
    pub values: Vec<f64>,
    /// Milliseconds since the Unix epoch.
    pub timestamps_ms: Vec<i64>,
}

/// A running VictoriaMetrics; killed when dropped.
pub struct VictoriaMetrics {
    host: String,
    port: u16,
    dir: tempfile::TempDir,
    /// `None` between [`VictoriaMetrics::stop`] and [`VictoriaMetrics::restart`].
    child: Option<Child>,
    client: reqwest::blocking::Client,
}

impl VictoriaMetrics {
    /// Starts a server with empty storage on loopback and waits until it answers `/health`.
    pub fn start() -> Self {
        Self::start_on("127.0.0.1")
    }

    /// The same, listening on `host` (such as Docker's bridge gateway, for a runner in a
    /// container).
    pub fn start_on(host: &str) -> Self {
        assert!(
            std::path::Path::new(BIN).exists(),
            "{BIN} is missing: install Debian's `victoria-metrics` (tests/prepare-machine, run by `make test`, does)"
        );
        let mut victoria = Self {
            host: host.to_owned(),
            port: closed_port(),
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
            client: client(),
        };
        victoria.spawn();
        victoria
    }

    /// The base URL, `http://HOST:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }

    /// The Datadog API root, `<base>/datadog`: what the runner's `dd_url` points at.
    pub fn datadog_url(&self) -> String {
        format!("{}/datadog", self.url())
    }

    /// The Prometheus remote-write receiver, `<base>/api/v1/write`.
    pub fn remote_write_url(&self) -> String {
        format!("{}/api/v1/write", self.url())
    }

    /// What the server has logged so far, across restarts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Stops the server (SIGTERM, so what it accepted is flushed to its storage) and waits
    /// for it to exit: its port refuses connections until [`VictoriaMetrics::restart`].
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let exited = crate::wait::until(
            Duration::from_secs(20),
            || child.try_wait().ok().flatten().is_some(),
            |exited| *exited,
        );
        if !exited {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "victoria-metrics did not exit within 20 s of SIGTERM; log:\n{}",
                self.log()
            );
        }
    }

    /// Starts the server again on the same port and storage (stopping it first if it runs),
    /// and waits until it answers.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Every series `selector` matches (a series selector such as `{host="web-1"}` or a
    /// metric name), with all its samples, sorted by labels: everything stored, as soon as it
    /// was accepted.
    pub fn export(&self, selector: &str) -> Vec<ExportedSeries> {
        self.force_flush();
        let mut url = reqwest::Url::parse(&format!("{}/api/v1/export", self.url())).expect("URL");
        let ahead = std::time::SystemTime::now() + Duration::from_secs(3 * 24 * 3600);
        let ahead = ahead
            .duration_since(std::time::UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_secs();
        url.query_pairs_mut()
            .append_pair("match[]", selector)
            .append_pair("end", &ahead.to_string());
        let response = self
            .client
            .get(url.clone())
            .send()
            .unwrap_or_else(|e| panic!("GET {url}: {e}; log:\n{}", self.log()));
        let status = response.status();
        let text = response.text().unwrap_or_default();
        assert!(status.is_success(), "GET {url} answered {status}: {text}");
        // One JSON object per line and series.
        let mut series: Vec<ExportedSeries> = text
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                let series: serde_json::Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("an export line is not JSON ({e}): {line}"));
                let labels = series["metric"]
                    .as_object()
                    .unwrap_or_else(|| panic!("an exported series without labels: {line}"))
                    .iter()
                    .map(|(name, value)| {
                        (name.clone(), value.as_str().unwrap_or_default().to_owned())
                    })
                    .collect();
                let values = series["values"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    // NaN and ±Inf are exported as the strings "NaN", "Inf" and "-Inf".
                    .map(|v| {
                        v.as_f64()
                            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                            .unwrap_or_else(|| panic!("an exported value is no number: {line}"))
                    })
                    .collect();
                let timestamps_ms = series["timestamps"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| {
                        t.as_i64().unwrap_or_else(|| {
                            panic!("an exported timestamp is no integer: {line}")
                        })
                    })
                    .collect();
                ExportedSeries {
                    labels,
                    values,
                    timestamps_ms,
                }
            })
            .collect();
        series.sort_by(|a, b| a.labels.cmp(&b.labels));
        series
    }

    /// The instant vector of `promql` (MetricsQL, a superset) evaluated now: each series'
    /// labels and value. A sample shows about a second after its timestamp: poll.
    pub fn query(&self, promql: &str) -> Vec<(Labels, f64)> {
        self.force_flush();
        let body = api_get(
            &self.client,
            &self.url(),
            "/api/v1/query",
            &[("query", promql)],
            &self.log_path(),
        );
        instant_vector(&body)
    }

    /// Makes every sample received so far searchable.
    fn force_flush(&self) {
        let url = format!("{}/internal/force_flush", self.url());
        let response = self
            .client
            .get(&url)
            .send()
            .unwrap_or_else(|e| panic!("GET {url}: {e}; log:\n{}", self.log()));
        assert!(
            response.status().is_success(),
            "GET {url} answered {}",
            response.status()
        );
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("victoria-metrics.log")
    }

    fn spawn(&mut self) {
        // Appended to, so a restart keeps what the earlier run logged.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log file");
        let child = Command::new(BIN)
            .arg(format!("-httpListenAddr={}:{}", self.host, self.port))
            .arg(format!(
                "-storageDataPath={}",
                self.dir.path().join("data").display()
            ))
            // A query at "now" includes the newest samples, and nothing is answered from a
            // cache filled before the test's last write.
            .arg("-search.latencyOffset=0")
            .arg("-search.disableCache")
            .arg("-maxLabelsPerTimeseries=200")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"));
        let url = format!("{}/health", self.url());
        let client = &self.client;
        let mut child = child;
        let ready = crate::wait::until(
            Duration::from_secs(30),
            || {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(status);
                }
                Ok(client
                    .get(&url)
                    .send()
                    .is_ok_and(|r| r.status().is_success()))
            },
            |ready| !matches!(ready, Ok(false)),
        );
        match ready {
            Ok(true) => self.child = Some(child),
            Ok(false) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "victoria-metrics is not ready after 30 s; log:\n{}",
                    self.log()
                );
            }
            Err(status) => panic!("victoria-metrics exited ({status}); log:\n{}", self.log()),
        }
    }
}

impl Drop for VictoriaMetrics {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prometheus::{now_ms, one_sample, post_remote_write};

    /// POSTs Datadog v1 series JSON, zlib-compressed as `Content-Encoding: deflate`.
    fn post_series(victoria: &VictoriaMetrics, json: &serde_json::Value) -> u16 {
        use std::io::Write;
        let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder
            .write_all(json.to_string().as_bytes())
            .expect("compress");
        let body = encoder.finish().expect("compress");
        client()
            .post(format!("{}/api/v1/series", victoria.datadog_url()))
            .header("Content-Encoding", "deflate")
            .header("Content-Type", "application/json")
            .header("DD-API-KEY", "any")
            .body(body)
            .send()
            .expect("VictoriaMetrics answers")
            .status()
            .as_u16()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn datadog_series_are_stored_with_tags_and_host_as_labels_and_survive_a_restart() {
        let mut victoria = VictoriaMetrics::start();
        let now = now_ms() / 1000;
        let series = serde_json::json!({"series": [
            {"metric": "kennel.test.gauge", "points": [[now, 42.5]], "host": "web-1",
             "tags": ["env:prod", "flag"], "type": "gauge"},
            {"metric": "kennel.test.count", "points": [[now - 10, 2.0], [now, 3.0]],
             "host": "web-1", "type": "count", "interval": 10},
        ]});
        assert_eq!(post_series(&victoria, &series), 202);

        let expected = vec![
            ExportedSeries {
                labels: labels(&[("__name__", "kennel.test.count"), ("host", "web-1")]),
                values: vec![2.0, 3.0],
                timestamps_ms: vec![(now - 10) * 1000, now * 1000],
            },
            ExportedSeries {
                labels: labels(&[
                    ("__name__", "kennel.test.gauge"),
                    ("env", "prod"),
                    ("flag", "no_label_value"),
                    ("host", "web-1"),
                ]),
                values: vec![42.5],
                timestamps_ms: vec![now * 1000],
            },
        ];
        assert_eq!(victoria.export("{host=\"web-1\"}"), expected);
        let queried = crate::wait::until(
            Duration::from_secs(10),
            || victoria.query("kennel.test.gauge"),
            |found| !found.is_empty(),
        );
        assert_eq!(queried, vec![(expected[1].labels.clone(), 42.5)]);

        victoria.stop();
        assert!(
            client().get(victoria.url()).send().is_err(),
            "a stopped server refuses connections"
        );
        victoria.restart();
        assert_eq!(victoria.export("{host=\"web-1\"}"), expected);
    }

    #[test]
    fn remote_written_samples_are_exported() {
        let victoria = VictoriaMetrics::start();
        let now = now_ms();
        let request = one_sample(&[("__name__", "kennel_test_rw"), ("env", "prod")], 7.0, now);
        let (status, body) = post_remote_write(&victoria.remote_write_url(), &request);
        assert_eq!(status, 204, "remote write answered {status}: {body}");
        // Sent twice, stored twice: VictoriaMetrics does not deduplicate here.
        post_remote_write(&victoria.remote_write_url(), &request);
        assert_eq!(
            victoria.export("kennel_test_rw"),
            vec![ExportedSeries {
                labels: labels(&[("__name__", "kennel_test_rw"), ("env", "prod")]),
                values: vec![7.0, 7.0],
                timestamps_ms: vec![now, now],
            }]
        );
    }
}
