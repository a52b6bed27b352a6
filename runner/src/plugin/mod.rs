//! The plugin host: loads check plugins (WebAssembly components) and runs them in a sandbox.
//!
//! One wasmtime [`Engine`] for the process, with Cranelift, the pooling allocator and epoch
//! interruption. Each plugin is compiled once (see [`cache`]) and pre-linked into an
//! `InstancePre`; each *run* gets a fresh `Store` and instance and throws them away afterwards.
//! That costs a few tens of microseconds per run and buys perfect isolation: no state leaks from
//! one run to the next, memory never creeps up, and a trap poisons nothing that outlives it.
//! Stateful maths (rates, monotonic counters) lives in the host instead (see
//! [`crate::aggregator::CheckSampler`]), and so does anything a check must remember (the `kv`
//! capability).
//!
//! Runs are async: [`PluginHost::run`] is a future that the scheduler awaits on the tokio
//! runtime, and the I/O capabilities (`http`, `sql`) are async host functions, so thousands of
//! instances share the runtime's few threads and nothing blocks a thread while a check waits
//! on the network. Wasm code yields to the runtime at every epoch tick, so a busy plugin cannot
//! hold a worker thread for more than a tick at a time either.
//!
//! Limits, per run:
//! - a deadline (instance `timeout`, else `plugins.default_timeout`): wasm code is interrupted
//!   at the first epoch tick (10 ms) past it, and a run blocked in a host call (a WASI sleep, a
//!   slow capability) is dropped [`HOST_CALL_GRACE`] after it;
//! - a cap on the linear memory of the whole component (`plugins.memory_limit_mb`);
//! - caps on what a run submits, and on each field (see [`imports`]);
//! - what it says (log lines, errors, panic messages, names in warnings) reaches the log and
//!   `/status` escaped, cut at 2 KiB, and within a per-instance rate of log lines (see [`logs`]);
//! - no ambient authority: the WASI context has no environment, arguments, stdin or network,
//!   and sees only the directories of the instance's `allowed_paths`, read-only; stdout is
//!   discarded and stderr is kept only to explain a crash.
//!
//! A trap (panic, deadline, memory cap, flood, malformed values at the ABI) fails that run
//! alone, with the reason in its [`RunReport`]; the host and every other run carry on. A trapped
//! run's output and key-value changes are dropped: they are the half-done work of a crashed
//! program. A run that *returns* an error keeps both.

mod cache;
pub mod http;
mod imports;
pub(crate) mod kv;
pub(crate) mod logs;
pub(crate) mod sql;
mod stderr;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap,
    UpdateDeadline,
};
use wasmtime_wasi::WasiCtxBuilder;

use crate::check::{self, Instance, RunError, RunReport};
use crate::config::PluginConfig;
use crate::telemetry::Telemetry;
use cache::ComponentCache;
use http::{Grant, HttpClient};
use imports::{MemoryLimiter, RunCtx, RunState};
use kv::{KvStores, RunStore};
use logs::{LogBudgets, SHOWN_MAX, shown};
use sql::SqlConnections;
use stderr::StderrCapture;

pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        world: "check",
        path: "../wit",
        imports: {
            "kennel:check/http.send": async | trappable,
            "kennel:check/sql.query": async | trappable,
            default: trappable,
        },
        exports: { default: async },
    });
}

use bindings::kennel::check::types as wit;

/// How often the epoch advances: the granularity of deadlines and of yielding to the runtime.
const EPOCH_TICK: Duration = Duration::from_millis(10);
/// How long past its deadline a run blocked in a host call is given before it is dropped.
pub(crate) const HOST_CALL_GRACE: Duration = Duration::from_millis(100);
/// Kept of a plugin's stderr to explain a crash.
const STDERR_CAP: usize = 8 * 1024;
/// Core instances, memories and tables one component may have: a Rust `wasm32-wasip2` check
/// has a handful; these leave room for components from other toolchains.
const MAX_CORE_INSTANCES_PER_COMPONENT: u32 = 32;
const MAX_MEMORIES_PER_COMPONENT: u32 = 2;
const MAX_TABLES_PER_COMPONENT: u32 = 8;

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
    /// SHA-256 of the wasm, hex.
    pub digest: String,
    pre: bindings::CheckPre<RunState>,
}

/// The process's plugin host. Share it behind an `Arc`; runs may go on concurrently.
pub struct PluginHost {
    engine: Engine,
    linker: Linker<RunState>,
    cache: ComponentCache,
    plugins_dir: PathBuf,
    loaded: Mutex<HashMap<String, Arc<Plugin>>>,
    http: Arc<HttpClient>,
    sql: Arc<SqlConnections>,
    kv: KvStores,
    logs: LogBudgets,
    hostname: String,
    memory_limit: usize,
    max_items: u32,
    _ticker: EpochTicker,
}

impl PluginHost {
    /// Builds the engine for up to `concurrency` simultaneous runs.
    pub fn new(
        config: &PluginConfig,
        hostname: String,
        concurrency: usize,
    ) -> anyhow::Result<Self> {
        let memory_limit = usize::try_from(config.memory_limit_mb)? << 20;
        let engine = build_engine(memory_limit, concurrency)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(to_anyhow)?;
        bindings::Check::add_to_linker::<RunState, HasSelf<RunState>>(&mut linker, |s| s)
            .map_err(to_anyhow)?;
        let body_limit = usize::try_from(config.http_body_limit_kb)? << 10;
        Ok(Self {
            cache: ComponentCache::new(&engine, config.cache_path.clone()),
            _ticker: EpochTicker::start(engine.clone())?,
            engine,
            linker,
            plugins_dir: config.path.clone(),
            loaded: Mutex::new(HashMap::new()),
            http: Arc::new(HttpClient::new(body_limit)?),
            sql: Arc::new(SqlConnections::new(
                config.sql_row_limit,
                usize::try_from(config.sql_result_limit_kb)? << 10,
            )),
            kv: KvStores::new(config.state_path.clone()),
            logs: LogBudgets::new(
                config.log_lines_per_second,
                config.log_lines_burst,
                Arc::new(Telemetry::new()),
            ),
            hostname,
            memory_limit,
            max_items: config.max_items_per_run,
        })
    }

    /// Counts what the host suppresses (plugin log lines past their budget) in `telemetry`,
    /// the runner's own metrics; without it the counts show only in each instance's status.
    pub fn with_telemetry(mut self, telemetry: Arc<Telemetry>) -> Self {
        self.logs.set_telemetry(telemetry);
        self
    }

    /// Reads the instances' key-value stores from disk but keeps their changes in memory: for
    /// one-off runs (`runner test-check`) that must not consume what the running runner has
    /// yet to process, such as the chef check's reports.
    pub(crate) fn with_read_only_state(mut self) -> Self {
        self.kv.read_only();
        self
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
        let plugin = Arc::new(Plugin { digest, pre });
        self.lock_loaded().insert(check.to_owned(), plugin.clone());
        Ok(plugin)
    }

    /// Lets go of what the host keeps for an instance that is no longer scheduled (its
    /// database connection). Its key-value store stays on disk.
    pub(crate) fn forget(&self, instance_id: &str) {
        self.sql.forget(instance_id);
        self.logs.forget(instance_id);
    }

    /// Whether a line about `instance` may be written to the log now, within its budget of
    /// log lines (see [`logs`]); a line refused is counted there.
    pub(crate) fn admit_log_line(&self, instance: &Instance) -> bool {
        self.logs.admit_line(&instance.check, &instance.id)
    }

    fn lock_loaded(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Plugin>>> {
        self.loaded.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `plugin` once for `instance`, in a fresh sandbox. Dropping the future stops the run
    /// at once.
    pub async fn run(&self, plugin: &Plugin, instance: &Instance) -> RunReport {
        let started = SystemTime::now();
        let clock = Instant::now();
        let deadline = clock + instance.timeout;
        let stderr = StderrCapture::new(STDERR_CAP);
        let log_budget = self.logs.of(&instance.check, &instance.id);
        let suppressed_before = log_budget
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .suppressed;
        let mut store = self.store(instance, started, deadline, &stderr, log_budget.clone());

        let context = wit::Context {
            check_name: instance.check.clone(),
            instance_id: instance.id.clone(),
            init_config: instance.init_config.to_string(),
            instance: instance.config.clone(),
            tags: instance.tags.clone(),
        };
        let call = async {
            let check = plugin.pre.instantiate_async(&mut store).await?;
            check.call_run(&mut store, &context).await
        };
        let outcome = tokio::time::timeout(instance.timeout + HOST_CALL_GRACE, call).await;
        let duration = clock.elapsed();
        let mut state = store.into_data();
        let error = match outcome {
            Ok(Ok(Ok(()))) => None,
            Ok(Ok(Err(message))) => Some(RunError::Check(shown(&message, SHOWN_MAX))),
            Ok(Err(trap)) => Some(explain(&trap, &state, instance, &stderr)),
            Err(_) => Some(RunError::Deadline(format!(
                "did not finish within its {:.3} s deadline (instance `timeout`) and was stopped while waiting in a host call",
                instance.timeout.as_secs_f64()
            ))),
        };
        let warnings = state.run.take_warnings();
        let log_lines_suppressed = log_budget
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .suppressed
            - suppressed_before;
        let RunCtx {
            mut metrics,
            mut service_checks,
            mut events,
            kv,
            ..
        } = state.run;
        if matches!(error, None | Some(RunError::Check(_))) {
            if kv.changed {
                self.kv.save(&instance.id, kv.store);
            }
        } else {
            // A crashed run's output and bookkeeping are both suspect, and keeping one without
            // the other would break exactly-once processing: drop both.
            metrics.clear();
            service_checks.clear();
            events.clear();
        }
        RunReport {
            instance_id: instance.id.clone(),
            check: instance.check.clone(),
            started,
            duration,
            metrics,
            service_checks,
            events,
            warnings,
            log_lines_suppressed,
            error,
            kind: check::ReportKind::Run,
        }
    }

    /// A fresh Store for one run: its WASI context, limits and capabilities.
    fn store(
        &self,
        instance: &Instance,
        started: SystemTime,
        deadline: Instant,
        stderr: &StderrCapture,
        log_budget: logs::SharedBudget,
    ) -> Store<RunState> {
        let mut wasi = WasiCtxBuilder::new();
        wasi.stderr(stderr.clone());
        let mut warnings = Vec::new();
        for path in &instance.allowed_paths {
            let guest = path.to_string_lossy();
            if let Err(error) = wasi.preopened_dir(path, &*guest, wasmtime_wasi::FsPerms::ReadOnly)
            {
                warnings.push(format!(
                    "allowed path {} cannot be opened: {error:#}",
                    path.display()
                ));
            }
        }
        let mut table = ResourceTable::new();
        table.set_max_capacity(imports::MAX_HANDLES);
        let state = RunState {
            wasi: wasi.build(),
            table,
            limiter: MemoryLimiter::new(self.memory_limit),
            run: RunCtx {
                check: instance.check.clone(),
                instance_id: instance.id.clone(),
                instance_tags: instance.tags.clone(),
                default_host: if instance.empty_default_hostname {
                    String::new()
                } else {
                    self.hostname.clone()
                },
                timestamp: check::unix_seconds(started),
                items: 0,
                max_items: self.max_items,
                bytes: 0,
                flooded: None,
                metrics: Vec::new(),
                service_checks: Vec::new(),
                events: Vec::new(),
                warnings,
                dropped_warnings: 0,
                log_budget,
                http: self.http.clone(),
                grant: Grant {
                    who: format!("{} instance {}", instance.check, instance.id),
                    hosts: instance.allowed_hosts.clone(),
                },
                deadline,
                timeout_key: instance.timeout_key,
                sql: self.sql.clone(),
                postgres: instance.postgres.clone(),
                kv: RunStore::new(&self.kv.load(&instance.id)),
            },
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        store.set_hostcall_fuel(imports::HOSTCALL_BYTES);
        // At every tick: interrupt the run once past its deadline, else yield to the runtime so
        // a busy plugin shares its thread.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            Ok(if Instant::now() >= deadline {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });
        store
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
        .total_core_instances(slots.saturating_mul(MAX_CORE_INSTANCES_PER_COMPONENT))
        .total_memories(slots.saturating_mul(MAX_MEMORIES_PER_COMPONENT))
        .total_tables(slots.saturating_mul(MAX_TABLES_PER_COMPONENT))
        .total_stacks(slots)
        .max_core_instances_per_component(MAX_CORE_INSTANCES_PER_COMPONENT)
        .max_memories_per_component(MAX_MEMORIES_PER_COMPONENT)
        .max_tables_per_component(MAX_TABLES_PER_COMPONENT)
        .max_memory_size(memory_limit)
        // Memories are reset with madvise, not memset: a Rust check touches a few pages around
        // its stack top and heap start, 1 MiB in, so a memset of the start would clear
        // untouched pages and keep them resident in every slot ever used. Measured on 2 cores,
        // madvise costs no throughput here (the bench prints the figures).
        .linear_memory_keep_resident(0)
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

/// Why a run trapped, in the words a user needs.
fn explain(
    trap: &wasmtime::Error,
    state: &RunState,
    instance: &Instance,
    stderr: &StderrCapture,
) -> RunError {
    if let Some(reason) = &state.run.flooded {
        return RunError::Flood(format!("{reason}; the run was stopped"));
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
    // The panic message is the plugin's own text.
    let message = if output.is_empty() {
        format!("crashed: {cause}")
    } else {
        format!("crashed: {} ({cause})", output.join(" "))
    };
    RunError::Crash(shown(&message, SHOWN_MAX))
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine) -> anyhow::Result<Self> {
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
            .map_err(|e| anyhow::anyhow!("cannot start the deadline ticker thread: {e}"))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
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
