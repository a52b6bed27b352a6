//! When each check instance runs.
//!
//! Every scheduled instance gets one tokio task that sleeps until its next run, awaits the run
//! (bounded by `check_runners` permits across all instances) and hands the report to the
//! pipeline input. Because one task owns one instance, two runs of an instance
//! can never overlap: a run still going when the next is due makes that next run *skipped*,
//! counted in the instance's stats and logged, never queued up behind it.
//!
//! Spreading the load: an instance's runs are phase-shifted by a random offset within its
//! interval, so thousands of instances with the same interval do not all fire in the same
//! instant. Its first run comes within [`FIRST_RUN_SPREAD`] (at `offset mod FIRST_RUN_SPREAD`),
//! so a newly scheduled instance (a container just started, a config just saved) reports at
//! once, while a start-up with thousands of instances is still spread out, and bounded by the
//! runners, rather than one burst.
//!
//! Failures back off: after [`BACKOFF_AFTER`] consecutive sandbox failures, the next run waits
//! `interval × 2^(failures − BACKOFF_AFTER + 1)`, capped at [`MAX_BACKOFF`], like Envoy's
//! reload back-off for crashing plugins. One success resets it.
//!
//! Sharing the runners: a run holds one of the `check_runners` (each one a slot of the plugin
//! host's instance pool) from start to end, also while it waits on the network, so whoever
//! holds them all holds up every check. conf.d is written by the operator and takes from all
//! of them; container labels are written by whoever starts a container, so an instance from a
//! container's labels also takes one of its container's share (`label_checks.max_runners`, 2
//! by default) and one of all labels' share (`label_checks.max_runners_total`, half of the
//! runners by default), in that order, before one of all. A container whose label instances
//! hang can thus hold 2 runners at most, all containers together half, and conf.d checks keep
//! the other half, whatever labels ask for; among containers, a free runner goes to the one
//! that waited longest (tokio's semaphores are fair), and each container has at most its share
//! waiting, so one container's many instances do not queue ahead of another's. (Bounding the
//! label `timeout` as well, see [`crate::discovery::labels`], bounds how long a runner is
//! held.) Why two shares, and not one fair queue over every source: a fair queue decides only
//! who gets the next free runner, and when labels' runs hold every runner for their whole
//! timeout, conf.d waits that long anyway; a share that labels cannot take is what keeps
//! conf.d checks on time.
//!
//! A run that cannot start on time is visible while it waits: each slot that passes while it
//! waits for a runner is counted as skipped at once, with why (which share is used up), in its
//! stats and in `runner status`, not only once it finally runs.
//!
//! The pipeline input is a bounded channel; a full channel makes the instance's task wait
//! (and runs whose slot passes meanwhile are skipped and counted) rather than drop a report.
//!
//! Only sandbox failures (crash, deadline, memory, flood) back off. A check that returns an
//! error is doing its job (its target is down) and keeps its interval, so recovery shows at
//! once.
//!
//! A run is a future owned by the instance's task: unscheduling the instance, or shutting
//! down, drops it, which stops the plugin at once and frees its runner.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt as _;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::aggregator::CheckSampler;
use crate::check::{Instance, RunError, RunReport, unix_seconds};
use crate::discovery::labels::LabelChecksConfig;
use crate::health::Reporter;
use crate::plugin::{Plugin, PluginHost};

/// The first run of a new instance comes within this long.
pub(crate) const FIRST_RUN_SPREAD: Duration = Duration::from_millis(200);
/// Consecutive failures before runs back off.
pub(crate) const BACKOFF_AFTER: u32 = 3;
/// The longest a failing instance waits between runs.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// What the scheduler knows of one instance, for status output.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct InstanceStats {
    pub(crate) check: String,
    pub instance_id: String,
    pub(crate) source: String,
    pub runs: u64,
    pub errors: u64,
    /// Runs not started on time: the previous one was still going, or no runner was free.
    pub skipped: u64,
    /// Of the skipped runs, those not started because no runner was free.
    #[serde(default)]
    pub skipped_waiting: u64,
    /// Why the last skipped run was skipped.
    #[serde(default)]
    pub(crate) last_skip: Option<String>,
    /// Log lines its runs caused past its log budget, not written.
    #[serde(default)]
    pub log_lines_suppressed: u64,
    pub consecutive_failures: u32,
    pub(crate) last_duration_ms: f64,
    pub(crate) last_error: Option<RunError>,
    pub(crate) last_warnings: Vec<String>,
    /// Seconds since the Unix epoch.
    pub(crate) last_run: Option<f64>,
    /// Seconds since the Unix epoch.
    pub(crate) last_success: Option<f64>,
    pub(crate) metric_samples: u64,
    pub(crate) service_checks: u64,
    pub(crate) events: u64,
    /// The service checks of the last run that sent any, at most [`SHOWN_SERVICE_CHECKS`].
    #[serde(default)]
    pub(crate) last_service_checks: Vec<LastServiceCheck>,
    /// The SHA-256 of the plugin its last run ran, hex.
    #[serde(default)]
    pub(crate) plugin: String,
}

/// One service check of an instance's last run, as `runner status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct LastServiceCheck {
    pub(crate) name: String,
    /// `OK`, `WARNING`, `CRITICAL` or `UNKNOWN`.
    pub(crate) status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) message: String,
}

/// Service checks kept per instance for `runner status`, at most.
const SHOWN_SERVICE_CHECKS: usize = 10;

type Stats = Arc<Mutex<HashMap<String, InstanceStats>>>;

/// A read-only view of the scheduler's per-instance stats, for status output.
#[derive(Clone)]
pub struct StatsView(Stats);

impl StatsView {
    /// Every scheduled instance's stats, ordered by instance id.
    pub fn snapshot(&self) -> Vec<InstanceStats> {
        let mut stats: Vec<_> = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        stats.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        stats
    }

    /// How many instances are scheduled, and how many of them failed their last run, without
    /// copying their stats: what `/health` reports at every probe.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let stats = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let failing = stats.values().filter(|s| s.last_error.is_some()).count();
        (stats.len(), failing)
    }
}

/// The runners, and the shares of them that container labels may take.
struct Runners {
    all: Arc<Semaphore>,
    all_count: usize,
    labels: Arc<Semaphore>,
    labels_count: usize,
    per_container: usize,
    /// Each container's share, while it has label instances scheduled.
    containers: HashMap<String, Arc<Semaphore>>,
}

impl Runners {
    fn new(all: usize, labels: &LabelChecksConfig) -> Self {
        let all = all.max(1);
        let labels_count = labels.runners_total(all);
        Self {
            all: Arc::new(Semaphore::new(all)),
            all_count: all,
            labels: Arc::new(Semaphore::new(labels_count)),
            labels_count,
            per_container: labels.max_runners.max(1),
            containers: HashMap::new(),
        }
    }

    /// What a run of `instance` takes.
    fn for_instance(&mut self, instance: &Instance) -> TaskRunners {
        let label = instance.label_container.as_ref().map(|container| {
            let per_container = self.per_container;
            let share = self
                .containers
                .entry(container.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(per_container)))
                .clone();
            LabelShares {
                container: share,
                container_count: per_container,
                labels: self.labels.clone(),
                labels_count: self.labels_count,
            }
        });
        TaskRunners {
            all: self.all.clone(),
            all_count: self.all_count,
            label,
        }
    }

    /// Forgets the shares of containers with no instance left.
    fn prune(&mut self) {
        self.containers
            .retain(|_, share| Arc::strong_count(share) > 1);
    }
}

/// The runners one instance's runs take.
struct TaskRunners {
    all: Arc<Semaphore>,
    all_count: usize,
    label: Option<LabelShares>,
}

struct LabelShares {
    container: Arc<Semaphore>,
    container_count: usize,
    labels: Arc<Semaphore>,
    labels_count: usize,
}

/// A run's runners, given back when dropped.
struct Held {
    _shares: Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)>,
    _runner: OwnedSemaphorePermit,
}

impl TaskRunners {
    /// Waits for a runner: the container's share, the labels' share, then one of all, in this
    /// order for every instance, so no two waits can deadlock. `None` once closed.
    async fn acquire(&self) -> Option<Held> {
        let shares = match &self.label {
            Some(label) => {
                let container = label.container.clone().acquire_owned().await.ok()?;
                let labels = label.labels.clone().acquire_owned().await.ok()?;
                Some((container, labels))
            }
            None => None,
        };
        let runner = self.all.clone().acquire_owned().await.ok()?;
        Some(Held {
            _shares: shares,
            _runner: runner,
        })
    }

    /// Why a run waiting for a runner is waiting.
    fn busy(&self) -> String {
        if let Some(label) = &self.label {
            if label.container.available_permits() == 0 {
                return format!(
                    "no runner free: the container's label instances hold all {} of its share \
                     (`label_checks.max_runners`)",
                    label.container_count
                );
            }
            if label.labels.available_permits() == 0 {
                return format!(
                    "no runner free: instances from container labels hold all {} of their \
                     share (`label_checks.max_runners_total`)",
                    label.labels_count
                );
            }
        }
        format!(
            "no runner free: all {} runners are busy (`check_runners`)",
            self.all_count
        )
    }
}

/// Runs scheduled instances until shut down.
pub struct Scheduler {
    health: Reporter,
    host: Arc<PluginHost>,
    runners: Runners,
    output: mpsc::Sender<RunReport>,
    stats: Stats,
    tasks: HashMap<String, JoinHandle<()>>,
    /// The plugin of each check with scheduled instances, which they read at each run.
    plugins: HashMap<String, watch::Sender<Arc<Plugin>>>,
}

impl Scheduler {
    /// A scheduler running at most `concurrency` runs at once, sending every report to `output`.
    /// Its health is reported on `health`.
    pub fn new(
        host: Arc<PluginHost>,
        concurrency: usize,
        output: mpsc::Sender<RunReport>,
        health: Reporter,
    ) -> Self {
        Self {
            health,
            host,
            runners: Runners::new(concurrency, &LabelChecksConfig::default()),
            output,
            stats: Arc::default(),
            tasks: HashMap::new(),
            plugins: HashMap::new(),
        }
    }

    /// Sets the shares of the runners that instances from container labels may take (the
    /// defaults are `label_checks`' defaults). Call before scheduling anything.
    pub fn with_label_runners(mut self, labels: &LabelChecksConfig) -> Self {
        self.runners = Runners::new(self.runners.all_count, labels);
        self
    }

    /// Starts running `instance` with `plugin`; an instance with the same id is replaced. All
    /// the instances of a check run one plugin: another `plugin` replaces it for the check's
    /// other instances too (see [`Scheduler::set_plugin`]).
    pub fn schedule(&mut self, instance: Instance, plugin: Arc<Plugin>) {
        self.unschedule(&instance.id);
        self.set_plugin(&instance.check, plugin.clone());
        let plugin = self
            .plugins
            .entry(instance.check.clone())
            .or_insert_with(|| watch::Sender::new(plugin))
            .subscribe();
        let id = instance.id.clone();
        self.lock_stats().insert(
            id.clone(),
            InstanceStats {
                check: instance.check.clone(),
                instance_id: id.clone(),
                source: instance.source.clone(),
                ..InstanceStats::default()
            },
        );
        tracing::info!(check = %instance.check, instance = %id, source = %instance.source, interval_s = instance.interval.as_secs_f64(), "scheduled");
        let task = InstanceTask {
            host: self.host.clone(),
            runners: self.runners.for_instance(&instance),
            output: self.output.clone(),
            stats: self.stats.clone(),
            instance: Arc::new(instance),
            plugin,
            sampler: CheckSampler::new(),
        };
        let health = self.health.clone();
        let check = task.instance.check.clone();
        let instance_id = id.clone();
        // An instance's task ends only when it is unscheduled or the runner stops; a panic
        // there is a bug in the runner, never the plugin's doing (plugins trap in their own
        // sandbox), and it must not pass silently.
        let run = async move {
            if let Err(panic) = AssertUnwindSafe(task.run()).catch_unwind().await {
                let message = crate::health::panic_message(panic.as_ref());
                tracing::error!(check = %check, instance = %instance_id, panic = %message, "an instance's task panicked: it no longer runs");
                health.failed(format!("the task of {instance_id} panicked: {message}"));
            }
        };
        self.tasks.insert(id, tokio::spawn(run));
    }

    /// The plugin `check`'s scheduled instances run, if any instance of it is scheduled.
    pub(crate) fn plugin_of(&self, check: &str) -> Option<Arc<Plugin>> {
        let plugin = self.plugins.get(check)?;
        (plugin.receiver_count() > 0).then(|| plugin.borrow().clone())
    }

    /// Runs `check`'s scheduled instances with `plugin` from their next run on; a run in
    /// progress finishes with the plugin it started with. Whether any instance runs `check`.
    pub(crate) fn set_plugin(&mut self, check: &str, plugin: Arc<Plugin>) -> bool {
        self.plugins.retain(|_, plugin| plugin.receiver_count() > 0);
        match self.plugins.get(check) {
            Some(current) => {
                if current.borrow().digest != plugin.digest {
                    current.send_replace(plugin);
                }
                true
            }
            None => false,
        }
    }

    /// Stops running the instance `id`; a run in progress is stopped too.
    /// Its series and service checks leave the outputs that keep them (see
    /// [`crate::check::ReportKind::Unscheduled`]).
    pub(crate) fn unschedule(&mut self, id: &str) -> bool {
        let stats = self.lock_stats().remove(id);
        self.host.forget(id);
        match self.tasks.remove(id) {
            Some(task) => {
                task.abort();
                self.runners.prune();
                tracing::info!(instance = %id, "unscheduled");
                let check = stats.map(|s| s.check).unwrap_or_default();
                let gone = RunReport::unscheduled(id, &check);
                // Behind the instance's last reports; waiting only when the queue is full.
                if let Err(mpsc::error::TrySendError::Full(gone)) = self.output.try_send(gone) {
                    let output = self.output.clone();
                    tokio::spawn(async move { output.send(gone).await });
                }
                true
            }
            None => false,
        }
    }

    /// A view of every scheduled instance's stats that outlives borrows of the scheduler.
    pub fn stats(&self) -> StatsView {
        StatsView(self.stats.clone())
    }

    /// Stops every instance, and any run in progress with it.
    pub async fn shutdown(mut self) {
        let tasks: Vec<_> = self.tasks.drain().map(|(_, task)| task).collect();
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
    }

    fn lock_stats(&self) -> std::sync::MutexGuard<'_, HashMap<String, InstanceStats>> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How many slots of the grid `slot + k × interval` lie in `slot..=until`.
fn slots_through(slot: Instant, until: Instant, interval: Duration) -> u32 {
    let span = until.saturating_duration_since(slot).as_nanos();
    u32::try_from(span / interval.as_nanos().max(1) + 1).unwrap_or(u32::MAX)
}

struct InstanceTask {
    host: Arc<PluginHost>,
    runners: TaskRunners,
    output: mpsc::Sender<RunReport>,
    stats: Stats,
    instance: Arc<Instance>,
    /// The check's plugin, replaced when its file changes.
    plugin: watch::Receiver<Arc<Plugin>>,
    sampler: CheckSampler,
}

impl InstanceTask {
    async fn run(mut self) {
        let interval = self.instance.interval;
        let phase =
            rand::rng().random_range(Duration::ZERO..interval.max(Duration::from_millis(1)));
        let start = Instant::now();
        // Runs follow the grid `slot + k × interval`; the first run comes early.
        let mut slot = start + phase;
        let first = phase.as_nanos() % FIRST_RUN_SPREAD.as_nanos();
        let mut due = start + Duration::from_nanos(first as u64);
        let mut failures = 0u32;
        loop {
            tokio::time::sleep_until(due).await;
            if slot <= due {
                slot += interval * slots_through(slot, due, interval);
            }
            // Each slot that passes while no runner is free is a skipped run, counted as it
            // passes, so a starved instance shows as such while it waits.
            let held = {
                let acquire = self.runners.acquire();
                tokio::pin!(acquire);
                let mut said = false;
                loop {
                    tokio::select! {
                        held = &mut acquire => break held,
                        () = tokio::time::sleep_until(slot) => {
                            slot += interval;
                            let why = self.runners.busy();
                            // Once per wait: the count says how long it lasted.
                            if !std::mem::replace(&mut said, true) {
                                tracing::warn!(check = %self.instance.check, instance = %self.instance.id, "run skipped: {why}");
                            }
                            self.update(|s| {
                                s.skipped += 1;
                                s.skipped_waiting += 1;
                                s.last_skip = Some(why);
                            });
                        }
                    }
                }
            };
            let Some(held) = held else {
                return;
            };
            // Boxed: a run's future is large, and an idle instance should not carry it.
            let plugin = self.plugin.borrow_and_update().clone();
            let mut report = Box::pin(self.host.run(&plugin, &self.instance)).await;
            drop(held);
            self.sampler.process(&mut report);
            // Only sandbox failures back off: a check that returns an error (its target is
            // down) must keep looking, so recovery is seen at the next interval.
            failures = match &report.error {
                Some(RunError::Check(_)) | None => 0,
                Some(_) => failures + 1,
            };
            self.record(&report, &plugin, failures);

            // The next slot after this run's start; the slots that passed while it was going
            // (or waiting for a runner) are skipped, and counted.
            let now = Instant::now();
            let skipped = if slot <= now {
                let missed = slots_through(slot, now, interval);
                slot += interval * missed;
                u64::from(missed)
            } else {
                0
            };
            if skipped > 0 {
                tracing::warn!(check = %self.instance.check, instance = %self.instance.id, skipped, "run took longer than the interval: skipped runs");
                self.update(|s| {
                    s.skipped += skipped;
                    s.last_skip = Some("the previous run was still going".to_owned());
                });
            }
            due = slot;
            if failures >= BACKOFF_AFTER {
                let backoff = interval
                    .saturating_mul(1 << (failures - BACKOFF_AFTER + 1).min(16))
                    .min(MAX_BACKOFF);
                // Off the grid: the slots a back-off spans are waited out, not skipped.
                due = due.max(now + backoff);
                tracing::warn!(check = %self.instance.check, instance = %self.instance.id, failures, backoff_s = backoff.as_secs_f64(), "failing repeatedly: backing off");
            }

            if self.output.send(report).await.is_err() {
                return;
            }
        }
    }

    fn record(&self, report: &RunReport, plugin: &Plugin, failures: u32) {
        // The error is the plugin's text (escaped and cut by the host): its line takes from the
        // instance's log budget like the plugin's own lines.
        let mut suppressed = 0;
        match &report.error {
            Some(_) if !self.host.admit_log_line(&self.instance) => suppressed = 1,
            Some(error) => {
                tracing::warn!(check = %report.check, instance = %report.instance_id, duration_ms = report.duration.as_secs_f64() * 1000.0, %error, "run failed")
            }
            None => {
                tracing::debug!(check = %report.check, instance = %report.instance_id, duration_ms = report.duration.as_secs_f64() * 1000.0, metrics = report.metrics.len(), service_checks = report.service_checks.len(), events = report.events.len(), "run")
            }
        }
        self.update(|s| {
            s.runs += 1;
            if s.plugin != plugin.digest {
                s.plugin.clone_from(&plugin.digest);
            }
            s.consecutive_failures = failures;
            s.last_duration_ms = report.duration.as_secs_f64() * 1000.0;
            s.last_run = Some(unix_seconds(report.started));
            s.last_warnings = report.warnings.clone();
            s.metric_samples += report.metrics.len() as u64;
            s.service_checks += report.service_checks.len() as u64;
            s.events += report.events.len() as u64;
            if !report.service_checks.is_empty() {
                s.last_service_checks = report
                    .service_checks
                    .iter()
                    .take(SHOWN_SERVICE_CHECKS)
                    .map(|sc| LastServiceCheck {
                        name: sc.name.clone(),
                        status: sc.status.as_str().to_owned(),
                        message: sc.message.clone(),
                    })
                    .collect();
            }
            s.log_lines_suppressed += report.log_lines_suppressed + suppressed;
            match &report.error {
                Some(error) => {
                    s.errors += 1;
                    s.last_error = Some(error.clone());
                }
                None => {
                    s.last_error = None;
                    s.last_success = Some(unix_seconds(report.started));
                }
            }
        });
    }

    fn update(&self, change: impl FnOnce(&mut InstanceStats)) {
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = stats.get_mut(&self.instance.id) {
            change(entry);
        }
    }
}
