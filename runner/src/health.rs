//! Every long-lived part of the runner says how it is: ok, degraded or failed, with a reason
//! and since when. `/health` is red (503) while any *required* part has failed, naming it;
//! `/status` and `runner status` show every part.
//!
//! The failure this exists for is the silent one: a thread that panicked, a task that ended, a
//! loop that stopped making progress, while everything else looks fine. So:
//! - long-lived threads and tasks are started through [`spawn_thread`] and [`spawn_task`],
//!   which catch a panic or an unexpected end, log it with the component's name and mark the
//!   component failed; nothing ends without a word;
//! - a component that must keep turning (the aggregation loop) beats a heartbeat; if it stops
//!   beating for its stall limit, it reads as failed ("no progress for N s") even though its
//!   thread is alive;
//! - components set their own state for what only they know (a sink whose output fails, Docker
//!   unreachable), and set it back to ok when they recover.
//!
//! Required or not is the component's registration: the aggregation loop, the listeners, the
//! scheduler and the sinks are required (without them data is lost); the Docker and conf.d
//! watchers are not (without them, what runs keeps running, and they say so as degraded).
//!
//! Once [`Health::stop`] is called, ends are expected and no longer count as failures.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

/// How a component is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum State {
    Ok,
    /// Working, but not fully: what it delivers may be late or partial.
    Degraded,
    /// Not working: what goes through it is being lost or held.
    Failed,
}

/// One component's state, as `/status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ComponentState {
    pub(crate) name: String,
    pub(crate) state: State,
    /// Why it is not ok; absent when ok.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
    /// Unix seconds since which it has been in this state.
    pub(crate) since: f64,
    /// Whether `/health` turns red when it fails.
    pub(crate) required: bool,
}

#[derive(Debug)]
struct Component {
    name: String,
    required: bool,
    state: State,
    reason: Option<String>,
    since: SystemTime,
    /// Milliseconds since [`Health`]'s start at the last beat, for components with a stall limit.
    beat: Arc<AtomicU64>,
    stall_after: Option<Duration>,
}

#[derive(Debug)]
struct Inner {
    components: Mutex<Vec<Component>>,
    started: Instant,
    stopping: AtomicBool,
}

/// The registry every component reports to; cheap to clone.
#[derive(Debug, Clone)]
pub struct Health(Arc<Inner>);

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    pub fn new() -> Self {
        Self(Arc::new(Inner {
            components: Mutex::new(Vec::new()),
            started: Instant::now(),
            stopping: AtomicBool::new(false),
        }))
    }

    /// Registers a component, ok from now; the same name twice gives two entries (a component
    /// is registered once, by whoever starts it).
    pub fn register(&self, name: impl Into<String>, required: bool) -> Reporter {
        let beat = Arc::new(AtomicU64::new(self.elapsed_ms()));
        let mut components = self.lock();
        components.push(Component {
            name: name.into(),
            required,
            state: State::Ok,
            reason: None,
            since: SystemTime::now(),
            beat: beat.clone(),
            stall_after: None,
        });
        Reporter {
            health: self.clone(),
            index: components.len() - 1,
            beat,
        }
    }

    /// Every component's state now.
    pub(crate) fn components(&self) -> Vec<ComponentState> {
        let now_ms = self.elapsed_ms();
        self.lock()
            .iter()
            .map(|c| {
                let stalled = c.stall_after.and_then(|limit| {
                    let quiet = now_ms.saturating_sub(c.beat.load(Ordering::Relaxed));
                    (c.state != State::Failed && quiet > limit.as_millis() as u64)
                        .then_some(Duration::from_millis(quiet))
                });
                match stalled {
                    Some(quiet) => ComponentState {
                        name: c.name.clone(),
                        state: State::Failed,
                        reason: Some(format!("no progress for {:.0} s", quiet.as_secs_f64())),
                        since: unix(SystemTime::now() - quiet),
                        required: c.required,
                    },
                    None => ComponentState {
                        name: c.name.clone(),
                        state: c.state,
                        reason: c.reason.clone(),
                        since: unix(c.since),
                        required: c.required,
                    },
                }
            })
            .collect()
    }

    /// The required components that have failed.
    pub(crate) fn failed(&self) -> Vec<ComponentState> {
        self.components()
            .into_iter()
            .filter(|c| c.required && c.state == State::Failed)
            .collect()
    }

    /// From now on, components ending is the shutdown, not a failure.
    pub(crate) fn stop(&self) {
        self.0.stopping.store(true, Ordering::Relaxed);
    }

    pub(crate) fn stopping(&self) -> bool {
        self.0.stopping.load(Ordering::Relaxed)
    }

    fn elapsed_ms(&self) -> u64 {
        self.0.started.elapsed().as_millis() as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Component>> {
        self.0
            .components
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// One component's handle on its own entry.
#[derive(Debug, Clone)]
pub struct Reporter {
    health: Health,
    index: usize,
    beat: Arc<AtomicU64>,
}

impl Reporter {
    pub(crate) fn ok(&self) {
        self.set(State::Ok, None);
    }

    pub(crate) fn degraded(&self, reason: impl Into<String>) {
        self.set(State::Degraded, Some(reason.into()));
    }

    pub(crate) fn failed(&self, reason: impl Into<String>) {
        self.set(State::Failed, Some(reason.into()));
    }

    /// The component's name, for its log lines.
    pub(crate) fn name(&self) -> String {
        self.health.lock()[self.index].name.clone()
    }

    /// The component reads as failed once `limit` passes without a [`Self::beat`].
    pub(crate) fn stall_after(&self, limit: Duration) {
        self.beat();
        self.health.lock()[self.index].stall_after = Some(limit);
    }

    /// Progress: one relaxed store, cheap enough for a hot loop.
    pub(crate) fn beat(&self) {
        self.beat.store(self.health.elapsed_ms(), Ordering::Relaxed);
    }

    fn set(&self, state: State, reason: Option<String>) {
        let mut components = self.health.lock();
        let component = &mut components[self.index];
        if component.state != state {
            component.since = SystemTime::now();
        }
        component.state = state;
        component.reason = reason;
    }

    /// Records how a supervised thread or task ended.
    fn ended(&self, panic: Option<String>) {
        let name = self.name();
        match panic {
            Some(message) => {
                tracing::error!(component = %name, panic = %message, "a runner component panicked");
                self.failed(format!("panicked: {message}"));
            }
            None if !self.health.stopping() => {
                tracing::error!(component = %name, "a runner component stopped");
                self.failed("stopped");
            }
            None => {}
        }
    }
}

/// Starts `run` on a named thread whose panic or end is caught and reported on `reporter`.
pub(crate) fn spawn_thread<T: Send + 'static>(
    thread_name: &str,
    reporter: Reporter,
    run: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<Option<T>>> {
    std::thread::Builder::new()
        .name(thread_name.to_owned())
        .spawn(
            move || match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
                Ok(value) => {
                    reporter.ended(None);
                    Some(value)
                }
                Err(panic) => {
                    reporter.ended(Some(panic_message(panic.as_ref())));
                    None
                }
            },
        )
}

/// Spawns `task` on the runtime; its panic or end is caught and reported on `reporter`. The
/// handle yields the task's output, or `None` if it panicked or was aborted.
pub(crate) fn spawn_task<F>(
    reporter: Reporter,
    task: F,
) -> tokio::task::JoinHandle<Option<F::Output>>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let inner = tokio::spawn(task);
    // Aborting the returned handle aborts the task itself, not only its supervisor.
    let guard = AbortOnDrop(inner.abort_handle());
    tokio::spawn(async move {
        let _guard = guard;
        match inner.await {
            Ok(value) => {
                reporter.ended(None);
                Some(value)
            }
            Err(error) if error.is_panic() => {
                reporter.ended(Some(panic_message(error.into_panic().as_ref())));
                None
            }
            Err(_) => None,
        }
    })
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

pub(crate) fn unix(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_thread_fails_its_component_and_only_required_ones_count() {
        let health = Health::new();
        let required = health.register("aggregator", true);
        let optional = health.register("docker", false);
        optional.failed("no daemon");
        assert!(health.failed().is_empty(), "an optional failure is not red");
        let thread = spawn_thread("test", required, || panic!("boom")).unwrap();
        assert_eq!(thread.join().unwrap(), None);
        let failed = health.failed();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].name, "aggregator");
        assert_eq!(failed[0].reason.as_deref(), Some("panicked: boom"));
    }

    #[test]
    fn an_end_fails_until_the_runner_stops_and_recovery_clears_it() {
        let health = Health::new();
        let listener = health.register("listener", true);
        spawn_thread("test", listener.clone(), || ())
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(health.failed()[0].reason.as_deref(), Some("stopped"));
        listener.ok();
        assert!(health.failed().is_empty());
        health.stop();
        spawn_thread("test", listener, || ())
            .unwrap()
            .join()
            .unwrap();
        assert!(
            health.failed().is_empty(),
            "ends after stop are the shutdown"
        );
    }

    #[test]
    fn a_component_that_stops_beating_reads_as_failed() {
        let health = Health::new();
        let looping = health.register("aggregator", true);
        looping.stall_after(Duration::from_millis(50));
        assert!(health.failed().is_empty());
        std::thread::sleep(Duration::from_millis(120));
        let failed = health.failed();
        assert_eq!(failed.len(), 1);
        assert!(
            failed[0]
                .reason
                .as_deref()
                .unwrap_or("")
                .starts_with("no progress")
        );
        looping.beat();
        assert!(health.failed().is_empty());
    }

    #[tokio::test]
    async fn a_panicking_task_fails_its_component() {
        let health = Health::new();
        let task = spawn_task(health.register("discovery", true), async {
            panic!("lost");
        });
        assert_eq!(task.await.unwrap(), None::<()>);
        assert_eq!(health.failed()[0].reason.as_deref(), Some("panicked: lost"));
    }
}
