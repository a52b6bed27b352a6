//! The production pipeline ([`runner::pipeline::Pipeline`]) started in the test's process, with
//! a recording sink beside the real outputs: tests send real traffic to it and read back every
//! flush, its `/health` and `/status`, and can inject faults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runner::aggregator::{AggregatorConfig, Flush};
use runner::config::RunnerConfig;
use runner::pipeline::{Pipeline, Running};
use runner::sink::Sink;

/// A started pipeline and the runtime it runs on; stopped when dropped.
pub struct TestPipeline {
    runtime: tokio::runtime::Runtime,
    running: Option<Running>,
    flushes: Arc<Mutex<Vec<Flush>>>,
    /// The DogStatsD Unix datagram socket.
    pub socket: PathBuf,
    /// The DogStatsD UDP port.
    pub udp_port: u16,
    /// The status API (`/health`, `/status`).
    pub status: SocketAddr,
    /// The OpenMetrics endpoint, when the config asked for one.
    pub metrics: Option<SocketAddr>,
}

/// Records every flush.
struct Recorder(Arc<Mutex<Vec<Flush>>>);

impl Sink for Recorder {
    fn name(&self) -> &str {
        "test_recorder"
    }

    fn send(&mut self, flush: &Flush) -> Result<(), String> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(flush.clone());
        Ok(())
    }
}

/// The test config: everything under `dir` (an empty conf.d unless the test fills it), the
/// built plugins, 1 s buckets, the DogStatsD socket `dir/dsd.socket`, the status API on a free
/// loopback port, no OpenMetrics endpoint, no Docker and no collector.
pub fn config(dir: &Path) -> RunnerConfig {
    let confd = dir.join("conf.d");
    std::fs::create_dir_all(&confd).expect("conf.d is created");
    RunnerConfig {
        hostname: Some("test-host".to_owned()),
        confd_path: confd,
        status_listen: Some("127.0.0.1:0".parse().expect("an address")),
        openmetrics_listen: None,
        plugins: crate::plugin_config(),
        dogstatsd_socket: Some(dir.join("dsd.socket")),
        dogstatsd_port: 0,
        docker_socket: None,
        // The collector's tests turn it on; elsewhere its series would only be noise.
        container_collection_interval: 0.0,
        aggregator: AggregatorConfig {
            bucket_size_seconds: 1,
            ..AggregatorConfig::default()
        },
        ..RunnerConfig::default()
    }
}

impl TestPipeline {
    /// Starts `config` with UDP on a free loopback port, a recorder, and `sinks`.
    pub fn start(config: RunnerConfig, sinks: Vec<Box<dyn Sink>>) -> Self {
        runner::plugin::http::install_crypto_provider();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let flushes: Arc<Mutex<Vec<Flush>>> = Arc::default();
        let socket = config
            .dogstatsd_socket
            .clone()
            .expect("test configs have a DogStatsD socket");
        let mut pipeline = Pipeline::new(config)
            .with_udp("127.0.0.1:0".parse().expect("an address"))
            .with_sink(Box::new(Recorder(flushes.clone())));
        for sink in sinks {
            pipeline = pipeline.with_sink(sink);
        }
        let running = runtime
            .block_on(pipeline.start())
            .unwrap_or_else(|e| panic!("the pipeline starts: {e:#}"));
        Self {
            udp_port: running.udp_addr.expect("UDP is on").port(),
            status: running.status_addr.expect("the status API is on"),
            metrics: running.metrics_addr,
            socket,
            flushes,
            running: Some(running),
            runtime,
        }
    }

    /// Every flush so far.
    pub fn flushes(&self) -> Vec<Flush> {
        self.flushes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits (up to `timeout`) until `done` holds of the flushes so far; returns them either way,
    /// so the test's assertions say what was missing.
    pub fn wait_for(&self, timeout: Duration, done: impl Fn(&[Flush]) -> bool) -> Vec<Flush> {
        crate::wait::until(timeout, || self.flushes(), |flushes| done(flushes))
    }

    /// Waits until `more` flushes after the current ones have been recorded.
    pub fn wait_for_flushes(&self, more: usize) -> Vec<Flush> {
        let now = self.flushes().len();
        self.wait_for(Duration::from_secs(10), |f| f.len() >= now + more)
    }

    /// The running pipeline, for fault injection.
    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("running until dropped")
    }

    /// `GET` on the status API: the status code and the JSON body.
    pub fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let response = reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("an HTTP client")
            .get(format!("http://{}{path}", self.status))
            .send()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let code = response.status().as_u16();
        (code, response.json().expect("a JSON body"))
    }
}

impl Drop for TestPipeline {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            self.runtime.block_on(running.stop());
        }
    }
}
