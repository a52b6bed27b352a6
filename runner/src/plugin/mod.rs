//! The plugin host: loads check plugins (WebAssembly components) and runs them in a sandbox.
//!
//! One wasmtime [`Engine`] for the process, with Cranelift, the pooling allocator and epoch
//! interruption. Each plugin is compiled once (see [`cache`]) and pre-linked into an
//! `InstancePre`; each *run* gets a fresh `Store` and instance and throws them away afterwards.
//! That costs a few tens of microseconds per run and buys perfect isolation: no state leaks from
//! one run to the next, memory never creeps up, and a trap poisons nothing that outlives it.
//! Stateful maths (rates, monotonic counters) lives in the host instead (see
//! [`crate::aggregator::CheckSampler`]).
//!
//! Limits, per run:
//! - a deadline (instance `timeout`, else `plugins.default_timeout`), enforced by epoch
//!   interruption with one 10 ms ticker thread: a looping plugin traps within a tick of it;
//! - a cap on linear memory (`plugins.memory_limit_mb`), enforced by a `ResourceLimiter`;
//! - a cap on submitted items (`plugins.max_items_per_run`): past it the run traps at once;
//! - no ambient authority: the WASI context has no environment, arguments, stdin, network or
//!   files; stdout is discarded and stderr is kept only to explain a crash.
//!
//! A trap (panic, deadline, memory cap, flood, malformed values at the ABI) fails that run alone,
//! with the reason in its [`RunReport`]; the host and every other run carry on. Runs are
//! synchronous: call [`PluginHost::run`] from a blocking thread (`spawn_blocking`), where the
//! `http` capability can wait on the tokio runtime. Async wasmtime bindings would let thousands
//! of runs share a few threads, but they cost a fiber stack per run and a slower call path; with
//! runs bounded by `check_runners`, blocking threads are the simpler and faster design.

mod cache;
pub mod http;
mod stderr;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::check::{self, Instance, MetricSample, RunError, RunReport};
use crate::config::PluginConfig;
use cache::ComponentCache;
use http::{Grant, HttpClient};
use stderr::StderrCapture;

pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        world: "check",
        path: "../wit",
        imports: { default: trappable },
    });
}

use bindings::kennel::check::{emit, http as wit_http, log as wit_log, types as wit};

/// How often the epoch advances: the granularity of run deadlines.
const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Kept of a plugin's stderr to explain a crash.
const STDERR_CAP: usize = 8 * 1024;
/// Longest log line taken from a plugin.
const MAX_LOG_LINE: usize = 4 * 1024;
/// Longest metric name accepted (Datadog's limit).
const MAX_NAME_LEN: usize = 200;

/// A plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "no plugin for check `{check}`: {path} does not exist (build the first-party checks with `make plugins`, or set `plugins.path`)"
    )]
    NotFound { check: String, path: PathBuf },
    #[error("cannot read plugin {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("plugin {path} is not a usable Kennel check: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// A loaded plugin, ready to instantiate.
pub struct Plugin {
    pub name: String,
    /// SHA-256 of the wasm, hex.
    pub digest: String,
    pre: bindings::CheckPre<RunState>,
}

/// The process's plugin host. Cheap to share behind an `Arc`; `run` may be called from many
/// threads at once.
pub struct PluginHost {
    engine: Engine,
    linker: Linker<RunState>,
    cache: ComponentCache,
    plugins_dir: PathBuf,
    loaded: Mutex<HashMap<String, Arc<Plugin>>>,
    http: Arc<HttpClient>,
    hostname: String,
    memory_limit: usize,
    max_items: u32,
    _ticker: EpochTicker,
}

impl PluginHost {
    /// Builds the engine for up to `concurrency` simultaneous runs. `runtime` is where the
    /// `http` capability does its I/O.
    pub fn new(
        config: &PluginConfig,
        hostname: String,
        concurrency: usize,
        runtime: tokio::runtime::Handle,
    ) -> anyhow::Result<Self> {
        let memory_limit = usize::try_from(config.memory_limit_mb)? << 20;
        let engine = build_engine(memory_limit, concurrency)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(to_anyhow)?;
        bindings::Check::add_to_linker::<RunState, HasSelf<RunState>>(&mut linker, |s| s)
            .map_err(to_anyhow)?;
        let body_limit = usize::try_from(config.http_body_limit_kb)? << 10;
        Ok(Self {
            cache: ComponentCache::new(&engine, config.cache_path.clone()),
            _ticker: EpochTicker::start(engine.clone()),
            engine,
            linker,
            plugins_dir: config.path.clone(),
            loaded: Mutex::new(HashMap::new()),
            http: Arc::new(HttpClient::new(runtime, body_limit)?),
            hostname,
            memory_limit,
            max_items: config.max_items_per_run,
        })
    }

    /// The plugin for `check`: `<plugins.path>/<check>.wasm`.
    pub fn load(&self, check: &str) -> Result<Arc<Plugin>, LoadError> {
        let path = self.plugins_dir.join(format!("{check}.wasm"));
        self.load_file(check, &path)
    }

    /// The plugin in `path`, run under the name `check`. A file whose content did not change
    /// since the last load is not compiled again.
    pub fn load_file(&self, check: &str, path: &Path) -> Result<Arc<Plugin>, LoadError> {
        let wasm = std::fs::read(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => LoadError::NotFound {
                check: check.to_owned(),
                path: path.to_owned(),
            },
            _ => LoadError::Read {
                path: path.to_owned(),
                source,
            },
        })?;
        let digest = hex::encode(Sha256::digest(&wasm));
        if let Some(plugin) = self.lock_loaded().get(check)
            && plugin.digest == digest
        {
            return Ok(plugin.clone());
        }
        let invalid = |error: wasmtime::Error| LoadError::Invalid {
            path: path.to_owned(),
            reason: format!("{error:#}"),
        };
        let component = self
            .cache
            .component(&self.engine, &wasm, &digest)
            .map_err(invalid)?;
        let pre = self.linker.instantiate_pre(&component).map_err(invalid)?;
        let pre = bindings::CheckPre::new(pre).map_err(invalid)?;
        let plugin = Arc::new(Plugin {
            name: check.to_owned(),
            digest,
            pre,
        });
        self.lock_loaded().insert(check.to_owned(), plugin.clone());
        Ok(plugin)
    }

    fn lock_loaded(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Plugin>>> {
        self.loaded.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `plugin` once for `instance`, in a fresh sandbox. Blocks until the run ends; call it
    /// from a blocking thread.
    pub fn run(&self, plugin: &Plugin, instance: &Instance) -> RunReport {
        let started = SystemTime::now();
        let clock = Instant::now();
        let stderr = StderrCapture::new(STDERR_CAP);
        let mut wasi = WasiCtxBuilder::new();
        wasi.stderr(stderr.clone());
        let default_host = if instance.empty_default_hostname {
            String::new()
        } else {
            self.hostname.clone()
        };
        let state = RunState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                cap: self.memory_limit,
                denied: None,
            },
            run: RunCtx {
                check: instance.check.clone(),
                instance_id: instance.id.clone(),
                instance_tags: instance.tags.clone(),
                default_host,
                timestamp: check::unix_seconds(started),
                items: 0,
                max_items: self.max_items,
                flooded: false,
                metrics: Vec::new(),
                service_checks: Vec::new(),
                events: Vec::new(),
                warnings: Vec::new(),
                http: self.http.clone(),
                grant: Grant {
                    who: format!("{} instance {}", instance.check, instance.id),
                    hosts: instance.allowed_hosts.clone(),
                },
                deadline: clock + instance.timeout,
            },
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        store.set_epoch_deadline(deadline_ticks(instance.timeout));
        store.epoch_deadline_trap();

        let context = wit::Context {
            check_name: instance.check.clone(),
            instance_id: instance.id.clone(),
            init_config: instance.init_config.to_string(),
            instance: instance.config.clone(),
            tags: instance.tags.clone(),
        };
        let outcome = plugin
            .pre
            .instantiate(&mut store)
            .and_then(|check| check.call_run(&mut store, &context));
        let duration = clock.elapsed();
        let state = store.into_data();
        let error = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(message)) => Some(RunError::Check(message)),
            Err(trap) => Some(explain(&trap, &state, instance, &stderr)),
        };
        let RunCtx {
            metrics,
            service_checks,
            events,
            warnings,
            ..
        } = state.run;
        RunReport {
            instance_id: instance.id.clone(),
            check: instance.check.clone(),
            started,
            duration,
            metrics,
            service_checks,
            events,
            warnings,
            error,
        }
    }
}

fn build_engine(memory_limit: usize, concurrency: usize) -> anyhow::Result<Engine> {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.concurrency_support(false);
    // Headroom over the scheduler's bound for `test-check` and status probes.
    let slots = u32::try_from(concurrency.saturating_add(4))?;
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(slots)
        .total_core_instances(slots.saturating_mul(16))
        .total_memories(slots.saturating_mul(4))
        .total_tables(slots.saturating_mul(8))
        .max_core_instances_per_component(32)
        .max_memories_per_component(4)
        .max_tables_per_component(8)
        .max_memory_size(memory_limit)
        // Reset memory with memset rather than madvise, in batches: per-run madvise made two
        // threads slower than one on this kind of machine.
        .linear_memory_keep_resident(2 << 20)
        .table_keep_resident(64 << 10)
        .decommit_batch_size(32);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    match Engine::new(&config) {
        Ok(engine) => Ok(engine),
        Err(error) => {
            // The pool reserves address space up front; where that is refused (small address
            // spaces, strict overcommit), fall back to allocating per instance.
            tracing::warn!(error = %format!("{error:#}"), "plugin pool unavailable, allocating per instance");
            config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
            Engine::new(&config).map_err(to_anyhow)
        }
    }
}

/// wasmtime's error type is not `std::error::Error`; keep its whole chain as text.
fn to_anyhow(error: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("{error:#}")
}

fn deadline_ticks(timeout: Duration) -> u64 {
    let ticks = timeout.as_nanos().div_ceil(EPOCH_TICK.as_nanos());
    u64::try_from(ticks).unwrap_or(u64::MAX / 2).max(1)
}

/// Why a run trapped, in the words a user needs.
fn explain(
    trap: &wasmtime::Error,
    state: &RunState,
    instance: &Instance,
    stderr: &StderrCapture,
) -> RunError {
    if state.run.flooded {
        return RunError::Flood(format!(
            "submitted more than {} items in one run (metrics, service checks, events and log lines count; runner `plugins.max_items_per_run`); the run was stopped",
            state.run.max_items
        ));
    }
    if let Some(desired) = state.limiter.denied {
        return RunError::Memory(format!(
            "tried to grow its memory to {} MiB, past the cap of {} MiB (runner `plugins.memory_limit_mb`); the run was stopped",
            desired.div_ceil(1 << 20),
            state.limiter.cap >> 20
        ));
    }
    if trap.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        return RunError::Deadline(format!(
            "did not finish within its {:.3} s deadline (instance `timeout`) and was interrupted",
            instance.timeout.as_secs_f64()
        ));
    }
    let cause = trap.root_cause().to_string();
    // A Rust plugin's panic message, without the hint about RUST_BACKTRACE (which a sandboxed
    // plugin cannot be given).
    let output = stderr.text();
    let output: Vec<&str> = output
        .lines()
        .filter(|line| !line.starts_with("note: run with `RUST_BACKTRACE"))
        .collect();
    RunError::Crash(if output.is_empty() {
        format!("crashed: {cause}")
    } else {
        format!("crashed: {} ({cause})", output.join(" "))
    })
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("kennel-epoch".to_owned())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .ok();
        Self { stop, thread }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Everything one run's Store holds.
struct RunState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
    run: RunCtx,
}

impl WasiView for RunState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

struct MemoryLimiter {
    cap: usize,
    /// The size a refused growth asked for.
    denied: Option<usize>,
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.cap {
            self.denied = Some(desired);
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// What the host functions of one run need, and what they collected.
struct RunCtx {
    check: String,
    instance_id: String,
    instance_tags: Vec<String>,
    default_host: String,
    timestamp: f64,
    items: u32,
    max_items: u32,
    flooded: bool,
    metrics: Vec<MetricSample>,
    service_checks: Vec<check::ServiceCheck>,
    events: Vec<check::Event>,
    warnings: Vec<String>,
    http: Arc<HttpClient>,
    grant: Grant,
    deadline: Instant,
}

impl RunCtx {
    /// Counts one submitted item; past the cap the run traps.
    fn admit(&mut self) -> wasmtime::Result<()> {
        self.items += 1;
        if self.items > self.max_items {
            self.flooded = true;
            return Err(wasmtime::Error::msg("per-run item cap exceeded"));
        }
        Ok(())
    }

    fn tags(&self, own: Vec<String>) -> Vec<String> {
        let mut tags = own;
        tags.extend(self.instance_tags.iter().cloned());
        tags.sort_unstable();
        tags.dedup();
        tags
    }

    fn host(&self, own: Option<String>) -> String {
        own.unwrap_or_else(|| self.default_host.clone())
    }

    fn warn(&mut self, warning: String) {
        tracing::warn!(check = %self.check, instance = %self.instance_id, "{warning}");
        self.warnings.push(warning);
    }
}

impl wit::Host for RunState {}

impl emit::Host for RunState {
    fn submit_metric(&mut self, m: wit::Metric) -> wasmtime::Result<()> {
        let run = &mut self.run;
        run.admit()?;
        if m.name.is_empty() || m.name.len() > MAX_NAME_LEN {
            run.warn(format!(
                "dropped a metric with an invalid name `{}`: names are 1 to {MAX_NAME_LEN} characters",
                m.name
            ));
            return Ok(());
        }
        if !m.value.is_finite() {
            run.warn(format!(
                "dropped metric `{}`: its value {} is not a finite number",
                m.name, m.value
            ));
            return Ok(());
        }
        let sample = MetricSample {
            kind: match m.kind {
                wit::MetricType::Gauge => check::MetricType::Gauge,
                wit::MetricType::Count => check::MetricType::Count,
                wit::MetricType::MonotonicCount => check::MetricType::MonotonicCount,
                wit::MetricType::Rate => check::MetricType::Rate,
                wit::MetricType::Histogram => check::MetricType::Histogram,
                wit::MetricType::Distribution => check::MetricType::Distribution,
            },
            name: m.name,
            value: m.value,
            tags: run.tags(m.tags),
            host: run.host(m.hostname),
            timestamp: run.timestamp,
        };
        run.metrics.push(sample);
        Ok(())
    }

    fn submit_service_check(&mut self, sc: wit::ServiceCheck) -> wasmtime::Result<()> {
        let run = &mut self.run;
        run.admit()?;
        let service_check = check::ServiceCheck {
            status: match sc.status {
                wit::ServiceCheckStatus::Ok => check::Status::Ok,
                wit::ServiceCheckStatus::Warning => check::Status::Warning,
                wit::ServiceCheckStatus::Critical => check::Status::Critical,
                wit::ServiceCheckStatus::Unknown => check::Status::Unknown,
            },
            name: sc.name,
            message: sc.message.unwrap_or_default(),
            tags: run.tags(sc.tags),
            host: run.host(sc.hostname),
            timestamp: run.timestamp,
        };
        run.service_checks.push(service_check);
        Ok(())
    }

    fn submit_event(&mut self, e: wit::Event) -> wasmtime::Result<()> {
        let run = &mut self.run;
        run.admit()?;
        let event = check::Event {
            title: e.title,
            text: e.text,
            alert_type: match e.alert_type {
                wit::AlertType::Error => check::AlertType::Error,
                wit::AlertType::Warning => check::AlertType::Warning,
                wit::AlertType::Info => check::AlertType::Info,
                wit::AlertType::Success => check::AlertType::Success,
            },
            priority: match e.priority {
                wit::EventPriority::Normal => check::Priority::Normal,
                wit::EventPriority::Low => check::Priority::Low,
            },
            aggregation_key: e.aggregation_key,
            source_type_name: e.source_type_name,
            tags: run.tags(e.tags),
            host: run.host(e.hostname),
            timestamp: e.timestamp.unwrap_or(run.timestamp as i64),
        };
        run.events.push(event);
        Ok(())
    }
}

impl wit_log::Host for RunState {
    fn log(&mut self, level: wit_log::Level, message: String) -> wasmtime::Result<()> {
        let run = &mut self.run;
        run.admit()?;
        let mut message = message;
        if message.len() > MAX_LOG_LINE {
            let mut end = MAX_LOG_LINE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push_str("...");
        }
        let (check, instance) = (&run.check, &run.instance_id);
        match level {
            wit_log::Level::Trace => {
                tracing::trace!(check = %check, instance = %instance, "{message}")
            }
            wit_log::Level::Debug => {
                tracing::debug!(check = %check, instance = %instance, "{message}")
            }
            wit_log::Level::Info => {
                tracing::info!(check = %check, instance = %instance, "{message}")
            }
            wit_log::Level::Warn => {
                tracing::warn!(check = %check, instance = %instance, "{message}")
            }
            wit_log::Level::Error => {
                tracing::error!(check = %check, instance = %instance, "{message}")
            }
        }
        Ok(())
    }
}

impl wit_http::Host for RunState {
    fn send(
        &mut self,
        request: wit_http::Request,
    ) -> wasmtime::Result<Result<wit_http::Response, wit_http::Error>> {
        let run = &self.run;
        Ok(run.http.send(&run.grant, request, run.deadline))
    }
}
