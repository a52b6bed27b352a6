//! `runner run` as a child process, driven through its status API and `/metrics` page.
//!
//! Each runner gets its own conf.d and config in a temporary directory, free loopback ports,
//! no DogStatsD listener and no Docker unless asked for, and its log in a file the test can read.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::http_server::closed_port;
use crate::{plugins_dir, runner_bin};

/// What a runner is started with, besides its conf.d.
#[derive(Default)]
pub struct Options {
    /// Follow the Docker daemon at this socket.
    pub docker: Option<String>,
    /// Serve DogStatsD on this Unix datagram socket.
    pub dogstatsd_socket: Option<PathBuf>,
    /// Serve DogStatsD on this UDP port; 0 (the default) for none.
    pub dogstatsd_port: u16,
    /// More runner config, YAML (keys not set above).
    pub extra: String,
    /// The plugins directory; the built plugins' when not given.
    pub plugins: Option<PathBuf>,
    /// The log filter (`RUST_LOG`); `runner=debug` when not given, so tests can read every run
    /// in the log.
    pub log: Option<&'static str>,
}

/// A running `runner run`, stopped (SIGKILL) when dropped.
pub struct RunnerProcess {
    child: Child,
    dir: tempfile::TempDir,
    pub status_port: u16,
    pub metrics_port: u16,
    client: reqwest::blocking::Client,
}

impl RunnerProcess {
    /// Starts a runner on the conf.d files given as (relative path, text), and waits for its
    /// status API.
    pub fn start(options: Options, files: &[(&str, &str)]) -> Self {
        let runner = Self::launch(options, files);
        runner.wait_for("the status API", Duration::from_secs(20), |r| {
            r.try_status().is_some()
        });
        runner
    }

    /// Starts a runner as [`Self::start`] does, without waiting for it to serve anything: for
    /// a runner expected to refuse to start (see [`Self::exit_status`]).
    pub fn launch(options: Options, files: &[(&str, &str)]) -> Self {
        runner::plugin::http::install_crypto_provider();
        let dir = tempfile::tempdir().expect("temp dir");
        let confd = dir.path().join("conf.d");
        std::fs::create_dir_all(&confd).expect("conf.d");
        for (name, text) in files {
            write_file(&confd.join(name), text);
        }
        let (status_port, metrics_port) = (closed_port(), closed_port());
        let docker = match &options.docker {
            Some(socket) => socket.clone(),
            None => "null".to_owned(),
        };
        let dogstatsd = match &options.dogstatsd_socket {
            Some(path) => path.display().to_string(),
            None => "null".to_owned(),
        };
        let config = format!(
            "status_listen: 127.0.0.1:{status_port}\nopenmetrics_listen: 127.0.0.1:{metrics_port}\n\
             dogstatsd_port: {}\ndogstatsd_socket: {dogstatsd}\ndocker_socket: {docker}\n\
             plugins:\n  path: {}\n  cache_path: null\n  state_path: null\n{}",
            options.dogstatsd_port,
            options.plugins.unwrap_or_else(plugins_dir).display(),
            options.extra
        );
        std::fs::write(dir.path().join("kennel.yaml"), config).expect("config");
        let log = std::fs::File::create(dir.path().join("runner.log")).expect("log file");
        let child = Command::new(runner_bin())
            .args(["run", "--config"])
            .arg(dir.path().join("kennel.yaml"))
            .arg("--confd")
            .arg(&confd)
            .env("RUST_LOG", options.log.unwrap_or("runner=debug"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("runner starts");
        Self {
            child,
            dir,
            status_port,
            metrics_port,
            client: reqwest::blocking::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(5))
                // The runner closes a connection idle for 10 s (its header-read timeout): one
                // kept longer would race that close at the next request.
                .pool_idle_timeout(Duration::from_secs(5))
                .build()
                .expect("http client"),
        }
    }

    /// How the runner exited by itself, waiting up to `timeout`; `None` if it is still running.
    pub fn exit_status(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        crate::wait::until(
            timeout,
            || self.child.try_wait().ok().flatten(),
            Option::is_some,
        )
    }

    /// The runner's config file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("kennel.yaml")
    }

    /// The runner's conf.d directory.
    pub fn confd(&self) -> PathBuf {
        self.dir.path().join("conf.d")
    }

    /// Writes (or replaces, atomically) a conf.d file.
    pub fn write_confd(&self, name: &str, text: &str) {
        let path = self.confd().join(name);
        let temporary = path.with_extension("tmp~");
        write_file(&temporary, text);
        std::fs::rename(&temporary, &path).expect("rename into place");
    }

    /// What the runner has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("runner.log")).unwrap_or_default()
    }

    /// `/status`, as JSON.
    pub fn status(&self) -> serde_json::Value {
        self.try_status()
            .unwrap_or_else(|| panic!("the status API answers; log:\n{}", self.log()))
    }

    fn try_status(&self) -> Option<serde_json::Value> {
        let url = format!("http://127.0.0.1:{}/status", self.status_port);
        self.client.get(url).send().ok()?.json().ok()
    }

    /// Every scheduled instance whose source mentions `needle`.
    pub fn instances_from(&self, needle: &str) -> Vec<serde_json::Value> {
        self.status()["instances"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|i| i["source"].as_str().is_some_and(|s| s.contains(needle)))
            .collect()
    }

    /// The current config errors.
    pub fn config_errors(&self) -> Vec<String> {
        self.status()["config_errors"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|e| e.as_str().map(str::to_owned))
            .collect()
    }

    /// `/health`: its status code and body.
    pub fn health(&self) -> (u16, String) {
        let url = format!("http://127.0.0.1:{}/health", self.status_port);
        self.client
            .get(url)
            .send()
            .and_then(|r| Ok((r.status().as_u16(), r.text()?)))
            .unwrap_or_else(|e| panic!("/health answers: {e}; log:\n{}", self.log()))
    }

    /// The `/metrics` page.
    pub fn metrics(&self) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics_port);
        self.client
            .get(url)
            .send()
            .and_then(|r| r.text())
            .unwrap_or_else(|e| panic!("/metrics answers: {e}; log:\n{}", self.log()))
    }

    /// Polls `condition` until it holds and returns how long that took; panics with the log
    /// after `timeout`.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut condition: impl FnMut(&Self) -> bool,
    ) -> Duration {
        let started = Instant::now();
        let held = crate::wait::until(timeout, || condition(self), |held| *held);
        assert!(
            held,
            "timed out after {timeout:?} waiting for {what}; log:\n{}",
            self.log()
        );
        started.elapsed()
    }

    /// The runner's resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.proc_status_kib("VmRSS:")
    }

    /// How many threads the runner has.
    pub fn threads(&self) -> u64 {
        self.proc_status_kib("Threads:")
    }

    /// The most resident memory the runner has had since it started or since
    /// [`Self::reset_peak_rss`], in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.proc_status_kib("VmHWM:")
    }

    /// Starts the peak RSS over from the current RSS (the kernel's `clear_refs`), so that what
    /// comes next is measured from here.
    pub fn reset_peak_rss(&self) {
        std::fs::write(format!("/proc/{}/clear_refs", self.child.id()), "5")
            .expect("the runner's peak RSS can be reset");
    }

    /// The CPU time the runner has used over all its threads, user and system, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .expect("the runner is alive");
        // After the command name, which is in parentheses and may hold spaces, utime and stime
        // are the 12th and 13th fields, in ticks of USER_HZ (100 on Linux, whatever the kernel's
        // own tick).
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks: u64 =
            fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
        ticks as f64 / 100.0
    }

    /// A number in `/proc/<pid>/status`, without its `kB` unit if it has one.
    fn proc_status_kib(&self, key: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the runner is alive");
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{key} in /proc/<pid>/status"))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the runner as a service manager does (SIGTERM) and waits for it to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let exited = crate::wait::until(
            Duration::from_secs(30),
            || self.child.try_wait().ok().flatten(),
            Option::is_some,
        );
        exited.unwrap_or_else(|| panic!("the runner did not stop on SIGTERM; log:\n{}", self.log()))
    }
}

impl Drop for RunnerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_file(path: &Path, text: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("conf.d subdirectory");
    }
    std::fs::write(path, text).expect("write conf.d file");
}
