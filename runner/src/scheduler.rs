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
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::aggregator::CheckSampler;
use crate::check::{Instance, RunError, RunReport, unix_seconds};
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
    pub(crate) instance_id: String,
    pub(crate) source: String,
    pub runs: u64,
    pub errors: u64,
    /// Runs not started because the previous one was still going.
    pub skipped: u64,
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
}

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

/// Runs scheduled instances until shut down.
pub struct Scheduler {
    health: Reporter,
    host: Arc<PluginHost>,
    permits: Arc<Semaphore>,
    output: mpsc::Sender<RunReport>,
    stats: Stats,
    tasks: HashMap<String, JoinHandle<()>>,
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
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            output,
            stats: Arc::default(),
            tasks: HashMap::new(),
        }
    }

    /// Starts running `instance` with `plugin`; an instance with the same id is replaced.
    pub fn schedule(&mut self, instance: Instance, plugin: Arc<Plugin>) {
        self.unschedule(&instance.id);
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
            permits: self.permits.clone(),
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

    /// Stops running the instance `id`; a run in progress is stopped too.
    pub(crate) fn unschedule(&mut self, id: &str) -> bool {
        self.lock_stats().remove(id);
        self.host.forget(id);
        match self.tasks.remove(id) {
            Some(task) => {
                task.abort();
                tracing::info!(instance = %id, "unscheduled");
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
    permits: Arc<Semaphore>,
    output: mpsc::Sender<RunReport>,
    stats: Stats,
    instance: Arc<Instance>,
    plugin: Arc<Plugin>,
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
            let Ok(permit) = self.permits.clone().acquire_owned().await else {
                return;
            };
            // Boxed: a run's future is large, and an idle instance should not carry it.
            let mut report = Box::pin(self.host.run(&self.plugin, &self.instance)).await;
            drop(permit);
            self.sampler.process(&mut report);
            // Only sandbox failures back off: a check that returns an error (its target is
            // down) must keep looking, so recovery is seen at the next interval.
            failures = match &report.error {
                Some(RunError::Check(_)) | None => 0,
                Some(_) => failures + 1,
            };
            self.record(&report, failures);

            // The next slot after this run's start; the slots that passed while it was going
            // (or waiting for a runner) are skipped, and counted.
            let now = Instant::now();
            if slot <= due {
                slot += interval * slots_through(slot, due, interval);
            }
            let skipped = if slot <= now {
                let missed = slots_through(slot, now, interval);
                slot += interval * missed;
                u64::from(missed)
            } else {
                0
            };
            if skipped > 0 {
                tracing::warn!(check = %self.instance.check, instance = %self.instance.id, skipped, "run took longer than the interval: skipped runs");
                self.update(|s| s.skipped += skipped);
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

    fn record(&self, report: &RunReport, failures: u32) {
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
            s.consecutive_failures = failures;
            s.last_duration_ms = report.duration.as_secs_f64() * 1000.0;
            s.last_run = Some(unix_seconds(report.started));
            s.last_warnings = report.warnings.clone();
            s.metric_samples += report.metrics.len() as u64;
            s.service_checks += report.service_checks.len() as u64;
            s.events += report.events.len() as u64;
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
