//! A throwaway Prometheus node exporter (Debian's `prometheus-node-exporter`, 1.5): the
//! established reader of the same `/proc` and `statvfs` figures that Kennel's host metrics are
//! compared with, and measured against.
//!
//! It runs `/usr/bin/prometheus-node-exporter` on a free loopback port with every collector off
//! but the ones that read what Kennel's host metrics read (`cpu`, `loadavg`, `meminfo`,
//! `netdev`, `diskstats`, `filesystem`, `stat`): no textfile collector, no `time` or `uname`,
//! so a scrape costs what those readings cost. Killed when dropped.
//!
//! Scrapes are plain HTTP/1.0 over a `TcpStream`, so a scrape adds nothing but the request to
//! the exporter's own CPU time.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::http_server::closed_port;

/// Where Debian's package puts the exporter.
const BIN: &str = "/usr/bin/prometheus-node-exporter";

/// The collectors left on.
pub const COLLECTORS: &[&str] = &[
    "cpu",
    "loadavg",
    "meminfo",
    "netdev",
    "diskstats",
    "filesystem",
    "stat",
];

/// One exposition line: the metric name, its labels and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A running exporter; killed when dropped.
pub struct NodeExporter {
    port: u16,
    child: Child,
}

impl NodeExporter {
    /// Starts the exporter and waits until it answers a scrape.
    pub fn start() -> Self {
        assert!(
            std::path::Path::new(BIN).exists(),
            "{BIN} is missing: install Debian's `prometheus-node-exporter` (tests/prepare-machine, run by `make test`, does)"
        );
        let port = closed_port();
        let mut command = Command::new(BIN);
        command
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--collector.disable-defaults");
        for collector in COLLECTORS {
            command.arg(format!("--collector.{collector}"));
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"));
        let mut exporter = Self { port, child };
        let answered = crate::wait::until(
            Duration::from_secs(20),
            || {
                if let Ok(Some(status)) = exporter.child.try_wait() {
                    panic!("{BIN} exited ({status}) before answering");
                }
                exporter.try_scrape_text().is_some()
            },
            |answered| *answered,
        );
        assert!(answered, "{BIN} did not answer on port {port} within 20 s");
        exporter
    }

    /// The exporter's process id, to read its CPU time from `/proc/<pid>/stat`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The `/metrics` page's text.
    pub fn scrape_text(&self) -> String {
        self.try_scrape_text()
            .unwrap_or_else(|| panic!("{BIN} on port {} did not answer a scrape", self.port))
    }

    /// Every sample of one scrape (comments and `# TYPE` lines left out).
    pub fn scrape(&self) -> Vec<Sample> {
        parse(&self.scrape_text())
    }

    fn try_scrape_text(&self) -> Option<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        let ok = head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200");
        ok.then(|| body.to_owned())
    }
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The samples of a Prometheus text exposition.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("not an exposition line: {line}"));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|e| panic!("{line}: value: {e}"));
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, labels.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (key, value) = pair
                        .split_once("=\"")
                        .unwrap_or_else(|| panic!("{line}: label {pair}"));
                    (key.to_owned(), value.trim_end_matches('"').to_owned())
                })
                .collect();
            Sample {
                name: name.to_owned(),
                labels,
                value,
            }
        })
        .collect()
}
