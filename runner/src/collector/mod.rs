//! The built-in collector: every container's resource use, read from its cgroup ([`cgroup`])
//! and its network namespace ([`net`]), and the host's own metrics ([`host`]), every
//! `container_collection_interval`. It is one more input of the pipeline: each pass is a
//! [`RunReport`] of the pseudo-check `container`, through the same report channel as check
//! runs, so it is aggregated, tagged and forwarded like them.
//!
//! Per container, in the families `container_metric_families` asks for ([`names`]): CPU
//! (usage, user, system, throttled time and periods as rates; the limit; shares), memory
//! (usage, RSS, cache, swap, working set, limit, soft limit, kernel, peak, page faults, OOM
//! kills; `docker.mem.in_use` = usage / limit and `docker.mem.sw_in_use` = (swap + RSS) /
//! memory+swap limit, the two the seed asks to watch before the OOM killer comes), IO per
//! device, threads and their limit, open files, pressure stall rates where the kernel has PSI,
//! and network per interface (`container.net.*` tagged `interface`, `docker.net.*` tagged
//! `docker_network`). Each carries the container's tags at `checks_tag_cardinality`.
//!
//! Counters are submitted raw (`rate`, `monotonic_count`) and turned into per-second rates by
//! the collector's own [`CheckSampler`] across passes, as a check's are: the first pass sets
//! the baseline, a restarted container's counters starting again from zero are a reset, not a
//! negative rate.
//!
//! What cannot be read is counted in `kennel.collector.read_errors{reader}` and said once per
//! problem (a permission problem names the path); a container gone between the list and the
//! read is normal and silent. The collector runs on its own thread: a pass is blocking file
//! I/O (and `statvfs`, which can block on a dead network filesystem), which must not hold up
//! the runtime's workers.
//!
//! Missing: `container.uptime` (the store does not keep a start time yet), and open files are
//! counted for the container's main process only, not every process in its cgroup.

pub(crate) mod cgroup;
pub mod host;
pub(crate) mod names;
pub(crate) mod net;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;
use tokio::sync::mpsc;

use self::cgroup::{CgroupFs, CgroupStats, DeviceNames, ReadError};
use self::host::HostReader;
use self::names::Reading;
use self::net::{NetPass, NetReader};
use crate::aggregator::CheckSampler;
use crate::check::{MetricSample, MetricType, ReportKind, RunReport, unix_seconds};
use crate::containers::{Cardinality, Container, ContainerStore};
use crate::health::{self, Reporter};
use crate::telemetry::{Counter, Gauge, InternalMetric, Telemetry};

/// The instance the collector's passes are reported as: their results' origin, and what
/// `runner status` names "the container collector".
pub(crate) const INSTANCE_ID: &str = "container";

/// A family of container metric names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// The Agent's generic container check: `container.cpu.usage`, `container.memory.usage`, ...
    Container,
    /// The Agent's Docker check: `docker.cpu.usage`, `docker.mem.rss`, `docker.mem.in_use`, ...
    Docker,
}

/// What the collector reads, and how it reports.
#[derive(Debug, Clone)]
pub(crate) struct CollectorConfig {
    pub(crate) interval: Duration,
    pub(crate) families: Vec<Family>,
    pub(crate) cardinality: Cardinality,
    pub(crate) hostname: String,
    pub(crate) procfs_root: PathBuf,
    pub(crate) cgroup_root: PathBuf,
    pub(crate) sysfs_root: PathBuf,
    pub(crate) host_metrics: bool,
}

/// The running collector; [`CollectorHandle::stop`] ends it.
pub(crate) struct CollectorHandle {
    stop: Sender<()>,
    thread: JoinHandle<Option<()>>,
}

impl CollectorHandle {
    pub(crate) fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

struct Stats {
    pass_seconds: Gauge,
    containers: Gauge,
    errors: [Counter; 3],
}

/// The most distinct problems remembered as said.
const SAID_MAX: usize = 1024;

const CGROUP: usize = 0;
const NETWORK: usize = 1;
const HOST: usize = 2;

/// The collector's state between passes.
struct Collector {
    config: CollectorConfig,
    store: Option<ContainerStore>,
    cgroups: Option<CgroupFs>,
    devices: DeviceNames,
    net: NetReader,
    host: Option<HostReader>,
    sampler: CheckSampler,
    reports: mpsc::Sender<RunReport>,
    health: Reporter,
    stats: Stats,
    /// Problems already said, so each is logged once.
    said: HashSet<String>,
}

/// Starts the collector on its own thread: containers from `store` (none when containers are
/// off), reports into `reports`.
pub(crate) fn start(
    config: CollectorConfig,
    store: Option<ContainerStore>,
    reports: mpsc::Sender<RunReport>,
    telemetry: &Telemetry,
    health: Reporter,
) -> std::io::Result<CollectorHandle> {
    let (stop, stopped) = std::sync::mpsc::channel();
    let errors =
        |reader: &str| telemetry.counter(InternalMetric::CollectorReadErrors, Some(reader));
    let stats = Stats {
        pass_seconds: telemetry.gauge(InternalMetric::CollectorPassSeconds, None),
        containers: telemetry.gauge(InternalMetric::CollectorContainers, None),
        errors: [errors("cgroup"), errors("network"), errors("host")],
    };
    let thread = health::spawn_thread("kennel-collector", health.clone(), move || {
        let mut collector = Collector::new(config, store, reports, health, stats);
        collector.run(&stopped);
    })?;
    Ok(CollectorHandle { stop, thread })
}

impl Collector {
    fn new(
        config: CollectorConfig,
        store: Option<ContainerStore>,
        reports: mpsc::Sender<RunReport>,
        health: Reporter,
        stats: Stats,
    ) -> Self {
        let cgroups = store.as_ref().and_then(|_| {
            match CgroupFs::detect(&config.cgroup_root, &config.procfs_root) {
                Ok(cgroups) => Some(cgroups),
                Err(error) => {
                    tracing::warn!(%error, "container resource metrics are off");
                    health.degraded(format!("container resource metrics are off: {error}"));
                    None
                }
            }
        });
        Self {
            devices: DeviceNames::new(&config.sysfs_root),
            net: NetReader::new(config.procfs_root.clone()),
            host: config.host_metrics.then(|| {
                HostReader::new(
                    &config.procfs_root,
                    &config.sysfs_root,
                    config.hostname.clone(),
                )
            }),
            cgroups,
            store,
            sampler: CheckSampler::new(),
            reports,
            health,
            stats,
            said: HashSet::new(),
            config,
        }
    }

    fn run(&mut self, stopped: &Receiver<()>) {
        loop {
            let started = Instant::now();
            let report = self.pass();
            self.stats.pass_seconds.set(started.elapsed().as_secs_f64());
            if self.reports.blocking_send(report).is_err() {
                return;
            }
            let wait = self.config.interval.saturating_sub(started.elapsed());
            match stopped.recv_timeout(wait) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// One reading of everything.
    fn pass(&mut self) -> RunReport {
        let started = SystemTime::now();
        let mut report = RunReport {
            instance_id: INSTANCE_ID.to_owned(),
            check: INSTANCE_ID.to_owned(),
            started,
            duration: Duration::ZERO,
            metrics: Vec::new(),
            service_checks: Vec::new(),
            events: Vec::new(),
            warnings: Vec::new(),
            log_lines_suppressed: 0,
            error: None,
            kind: ReportKind::Run,
        };
        let timestamp = unix_seconds(started);
        let containers = self
            .store
            .as_ref()
            .map(ContainerStore::all)
            .unwrap_or_default();
        self.stats.containers.set(containers.len() as f64);
        let mut problems = 0;
        for container in &containers {
            let readings = self.container(container);
            problems += usize::from(readings.is_none());
            for reading in readings.into_iter().flatten() {
                self.emit(&mut report.metrics, container, reading, timestamp);
            }
        }
        if !containers.is_empty() {
            match self.net.read(&containers) {
                Ok(pass) => self.network(pass, &mut report.metrics, timestamp),
                Err(error) => {
                    self.stats.errors[NETWORK].increment(1);
                    self.say(format!("container network metrics: {error}"));
                }
            }
        }
        if let Some(host) = &mut self.host {
            report.metrics.extend(host.read());
            let new: Vec<String> = host
                .problems()
                .iter()
                .filter(|p| p.first)
                .map(ToString::to_string)
                .collect();
            self.stats.errors[HOST].increment(host.problems().len() as u64);
            for problem in new {
                self.say(problem);
            }
        }
        if problems == 0 && self.cgroups.is_some() {
            self.health.ok();
        }
        self.sampler.process(&mut report);
        report.duration = started.elapsed().unwrap_or_default();
        report
    }

    /// One container's cgroup readings; `None` when its cgroup could not be read (and not
    /// because it is gone).
    fn container(&mut self, container: &Container) -> Option<Vec<Reading>> {
        let cgroups = self.cgroups.as_ref()?;
        let path = container.cgroup.as_deref()?;
        let stats = match cgroups.read(path) {
            Ok(stats) => stats,
            Err(ReadError::Gone) => return Some(Vec::new()),
            Err(error) => {
                self.stats.errors[CGROUP].increment(1);
                let problem = format!("container {}: {error}", container.display());
                self.health.degraded(problem.clone());
                // Said once per kind of problem, not per container.
                self.say_keyed(error.to_string(), problem);
                return None;
            }
        };
        let mut readings = readings(&stats, &mut self.devices);
        if let Some(fds) = open_files(&self.config.procfs_root, container.pid) {
            readings.push(Reading::new(
                "container.pid.open_files",
                MetricType::Gauge,
                fds as f64,
            ));
        }
        Some(readings)
    }

    fn network(&mut self, pass: NetPass, out: &mut Vec<MetricSample>, timestamp: f64) {
        for (container, error) in &pass.failures {
            self.stats.errors[NETWORK].increment(1);
            self.say_keyed(
                error.to_string(),
                format!("container {} network: {error}", container.display()),
            );
        }
        for reading in pass.readings {
            for interface in &reading.interfaces {
                let stats = &interface.stats;
                let tag = vec![format!("interface:{}", stats.name)];
                let network = interface
                    .docker_network
                    .clone()
                    .unwrap_or_else(|| stats.name.clone());
                let docker_tag = vec![format!("docker_network:{network}")];
                for r in [
                    Reading::new(
                        "container.net.sent",
                        MetricType::Rate,
                        stats.tx_bytes as f64,
                    ),
                    Reading::new(
                        "container.net.sent.packets",
                        MetricType::Rate,
                        stats.tx_packets as f64,
                    ),
                    Reading::new(
                        "container.net.rcvd",
                        MetricType::Rate,
                        stats.rx_bytes as f64,
                    ),
                    Reading::new(
                        "container.net.rcvd.packets",
                        MetricType::Rate,
                        stats.rx_packets as f64,
                    ),
                ] {
                    self.emit(out, &reading.container, r.tagged(tag.clone()), timestamp);
                }
                for r in [
                    Reading::new(
                        "docker.net.bytes_sent",
                        MetricType::Rate,
                        stats.tx_bytes as f64,
                    ),
                    Reading::new(
                        "docker.net.bytes_rcvd",
                        MetricType::Rate,
                        stats.rx_bytes as f64,
                    ),
                ] {
                    self.emit(
                        out,
                        &reading.container,
                        r.tagged(docker_tag.clone()),
                        timestamp,
                    );
                }
            }
        }
    }

    /// Turns a reading into a sample in each configured family that has it.
    fn emit(
        &self,
        out: &mut Vec<MetricSample>,
        container: &Container,
        reading: Reading,
        timestamp: f64,
    ) {
        for family in &self.config.families {
            let (name, value, runtime) = match family {
                Family::Container if names::generic(reading.name) => {
                    (reading.name, reading.value, false)
                }
                Family::Docker => match names::docker(reading.name) {
                    Some((name, factor)) => (name, reading.value * factor, true),
                    None => continue,
                },
                Family::Container => continue,
            };
            let mut tags = container.tags.at(self.config.cardinality);
            tags.extend(reading.tags.iter().cloned());
            if runtime {
                tags.push("runtime:docker".to_owned());
            }
            tags.sort();
            tags.dedup();
            out.push(MetricSample {
                name: name.to_owned(),
                kind: reading.kind,
                value,
                tags,
                host: self.config.hostname.clone(),
                timestamp,
            });
        }
    }

    fn say(&mut self, problem: String) {
        self.say_keyed(problem.clone(), problem);
    }

    /// Logs `problem` unless one with the same `key` was said before.
    fn say_keyed(&mut self, key: String, problem: String) {
        // Keys can name a container's path: with churn they would grow without end, so past a
        // bound the memory of what was said starts again (a problem may be said once more).
        if self.said.len() >= SAID_MAX {
            self.said.clear();
        }
        if self.said.insert(key) {
            tracing::warn!(%problem, "the collector cannot read everything");
        }
    }
}

/// A container's cgroup stats as readings by generic name.
fn readings(stats: &CgroupStats, devices: &mut DeviceNames) -> Vec<Reading> {
    use MetricType::{Gauge, MonotonicCount, Rate};
    let mut out = Vec::with_capacity(40);
    let mut put = |name: &'static str, kind: MetricType, value: Option<f64>| {
        if let Some(value) = value {
            out.push(Reading::new(name, kind, value));
        }
    };
    let cpu = &stats.cpu;
    let f = |v: Option<u64>| v.map(|v| v as f64);
    put("container.cpu.usage", Rate, f(cpu.usage_ns));
    put("container.cpu.user", Rate, f(cpu.user_ns));
    put("container.cpu.system", Rate, f(cpu.system_ns));
    put("container.cpu.throttled", Rate, f(cpu.throttled_ns));
    put(
        "container.cpu.throttled.periods",
        Rate,
        f(cpu.throttled_periods),
    );
    // The Agent's limit is in nanoseconds of CPU per second: cores × 1e9.
    let limit = match (cpu.limit_cores, cpu.cpus) {
        (Some(quota), Some(cpus)) => Some(quota.min(f64::from(cpus))),
        (quota, _) => quota,
    };
    put("container.cpu.limit", Gauge, limit.map(|cores| cores * 1e9));
    put("docker.cpu.shares", Gauge, f(cpu.shares.or(cpu.weight)));

    let memory = &stats.memory;
    put("container.memory.usage", Gauge, f(memory.usage));
    put("container.memory.kernel", Gauge, f(memory.kernel));
    put("container.memory.limit", Gauge, f(memory.limit));
    put("container.memory.soft_limit", Gauge, f(memory.soft_limit));
    put("container.memory.rss", Gauge, f(memory.rss));
    put("container.memory.cache", Gauge, f(memory.cache));
    put("container.memory.swap", Gauge, f(memory.swap));
    // OOM kills where the kernel counts them (v1 `memory.oom_control`, 4.13+; v2
    // `memory.events`), else the Agent's v1 `memory.failcnt`: the limit being hit is not an
    // OOM kill, and a kernel may kill without counting a failure (6.x v1 does).
    put(
        "container.memory.oom_events",
        Gauge,
        f(memory.oom_kills.or(memory.oom_events)),
    );
    put("container.memory.working_set", Gauge, f(memory.working_set));
    put("container.memory.usage.peak", Gauge, f(memory.peak));
    put(
        "container.memory.page_faults",
        MonotonicCount,
        f(memory.page_faults),
    );
    put(
        "container.memory.major_page_faults",
        MonotonicCount,
        f(memory.major_page_faults),
    );
    put("docker.mem.sw_limit", Gauge, f(memory.memsw_limit));
    if let (Some(usage), Some(limit)) = (memory.usage, memory.limit.filter(|l| *l > 0)) {
        put(
            "docker.mem.in_use",
            Gauge,
            Some(usage as f64 / limit as f64),
        );
    }
    if let (Some(rss), Some(limit)) = (memory.rss, memory.memsw_limit.filter(|l| *l > 0)) {
        let swap = memory.swap.unwrap_or(0);
        put(
            "docker.mem.sw_in_use",
            Gauge,
            Some((rss + swap) as f64 / limit as f64),
        );
    }

    put("container.pid.thread_count", Gauge, f(stats.pids.current));
    put("container.pid.thread_limit", Gauge, f(stats.pids.limit));

    let us_to_ns = |p: Option<cgroup::Pressure>| p.map(|p| p.some.total_us as f64 * 1e3);
    put(
        "container.cpu.partial_stall",
        Rate,
        us_to_ns(stats.pressure.cpu),
    );
    put(
        "container.memory.partial_stall",
        Rate,
        us_to_ns(stats.pressure.memory),
    );
    put(
        "container.io.partial_stall",
        Rate,
        us_to_ns(stats.pressure.io),
    );

    for io in &stats.io {
        let name = devices
            .name(io.device)
            .map_or_else(|| io.device.to_string(), str::to_owned);
        let tags = vec![format!("device:{name}"), format!("device_name:{name}")];
        for (metric, value) in [
            ("container.io.read", io.read_bytes),
            ("container.io.read.operations", io.read_ops),
            ("container.io.write", io.write_bytes),
            ("container.io.write.operations", io.write_ops),
        ] {
            if let Some(value) = value {
                out.push(Reading::new(metric, Rate, value as f64).tagged(tags.clone()));
            }
        }
    }
    out
}

/// How many files the container's main process has open; `None` when it cannot be read.
fn open_files(procfs_root: &Path, pid: u32) -> Option<usize> {
    if pid == 0 {
        return None;
    }
    std::fs::read_dir(procfs_root.join(pid.to_string()).join("fd"))
        .ok()
        .map(Iterator::count)
}

/// What the pipeline needs from the runner's config.
pub(crate) fn config(
    config: &crate::config::RunnerConfig,
    hostname: &str,
) -> Option<CollectorConfig> {
    (config.container_collection_interval > 0.0).then(|| CollectorConfig {
        interval: Duration::from_secs_f64(config.container_collection_interval),
        families: config.container_metric_families.clone(),
        cardinality: config.checks_tag_cardinality,
        hostname: hostname.to_owned(),
        procfs_root: config.procfs_root.clone(),
        cgroup_root: config.cgroup_root.clone(),
        sysfs_root: config.sysfs_root.clone(),
        host_metrics: config.collect_host_metrics,
    })
}
