//! Named outputs: where every flush of the aggregator goes, each off the aggregation thread.
//!
//! The aggregation loop hands each flush (one `Arc<Flush>`, shared, never copied) to every
//! sink's bounded queue and goes back to its inputs at once. Each sink runs on its own thread
//! and takes flushes from its queue in order. A sink that falls behind (a slow scrape, a dead
//! intake) fills only its own queue: when it is full, the *oldest* flush waiting for that sink
//! is dropped (the newest data is the most useful, and a restarted output catches up with the
//! present) and counted in `kennel.sink.flushes_dropped{sink:<name>}`. Nothing else waits.
//!
//! Threads rather than tokio tasks: what sinks do with a flush (update a 500,000-series page,
//! encode a payload) is CPU work measured in tens of milliseconds, which on the runtime's
//! workers would delay check runs; sinks are few, so a thread each costs little. A sink that
//! needs async I/O drives it from its thread.
//!
//! Each sink is a health component: a `send` error marks it failed with the error as the
//! reason (and `/health` red), the next success marks it ok again; a panic ends its thread and
//! marks it failed for good.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::aggregator::Flush;
use crate::aggregator::service::Output;
use crate::health::{self, Health};
use crate::telemetry::{Counter, InternalMetric, Telemetry};

/// Flushes waiting per sink before the oldest is dropped: at one flush a second, a sink may be
/// this many seconds behind.
pub(crate) const QUEUE_FLUSHES: usize = 16;

/// An output of the pipeline.
pub trait Sink: Send + 'static {
    /// A short, stable name: in logs, health and telemetry (`openmetrics`, `log_summary`).
    fn name(&self) -> &str;

    /// Takes one flush. An error says why the output failed (it shows in health until a later
    /// flush succeeds); the flush is not offered again.
    fn send(&mut self, flush: &Flush) -> Result<(), String>;

    /// Called once after the last flush, when the runner stops.
    fn stop(&mut self) {}

    /// Flushes that may wait for this sink before the oldest is dropped. Defaults to
    /// [`QUEUE_FLUSHES`].
    fn queue_flushes(&self) -> usize {
        QUEUE_FLUSHES
    }
}

#[derive(Default)]
struct Queue {
    flushes: VecDeque<Arc<Flush>>,
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
}

/// The aggregation loop's side of one sink: a bounded queue and the thread that drains it.
pub(crate) struct SinkHandle {
    capacity: usize,
    shared: Arc<Shared>,
    dropped: Counter,
    thread: Option<JoinHandle<Option<()>>>,
}

impl SinkHandle {
    /// Starts `sink` on its own thread, reporting to `telemetry` and `health`.
    pub(crate) fn start(
        mut sink: Box<dyn Sink>,
        telemetry: &Telemetry,
        health: &Health,
    ) -> std::io::Result<Self> {
        let name = sink.name().to_owned();
        let capacity = sink.queue_flushes().max(1);
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
        });
        let reporter = health.register(format!("sink:{name}"), true);
        let sent = telemetry.counter(InternalMetric::SinkFlushes, Some(&name));
        let errors = telemetry.counter(InternalMetric::SinkErrors, Some(&name));
        let busy = telemetry.gauge(InternalMetric::SinkLastSendSeconds, Some(&name));
        let thread = {
            let shared = shared.clone();
            let reporter_in = reporter.clone();
            let name = name.clone();
            health::spawn_thread(&format!("kennel-sink-{name}"), reporter, move || {
                while let Some(flush) = next(&shared) {
                    let started = Instant::now();
                    let result = sink.send(&flush);
                    busy.set(started.elapsed().as_secs_f64());
                    sent.increment(1);
                    match result {
                        Ok(()) => reporter_in.ok(),
                        Err(error) => {
                            errors.increment(1);
                            tracing::warn!(sink = %name, %error, "output failed");
                            reporter_in.failed(error);
                        }
                    }
                }
                sink.stop();
            })?
        };
        Ok(Self {
            dropped: telemetry.counter(InternalMetric::SinkFlushesDropped, Some(&name)),
            capacity,
            shared,
            thread: Some(thread),
        })
    }

    /// Queues `flush`, dropping (and counting) the oldest one waiting if the queue is full.
    /// Never blocks for longer than the queue's lock.
    fn enqueue(&self, flush: Arc<Flush>) {
        let mut queue = self.lock();
        if queue.flushes.len() >= self.capacity {
            queue.flushes.pop_front();
            self.dropped.increment(1);
        }
        queue.flushes.push_back(flush);
        drop(queue);
        self.shared.ready.notify_one();
    }

    /// Lets the sink take what is queued, then stops it and waits for its thread.
    pub(crate) fn close(mut self) {
        self.mark_closed();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    fn mark_closed(&self) {
        self.lock().closed = true;
        self.shared.ready.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.shared
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Output for SinkHandle {
    fn offer(&self, flush: Arc<Flush>) {
        self.enqueue(flush);
    }

    fn close(self: Box<Self>) {
        SinkHandle::close(*self);
    }
}

/// A handle dropped without [`SinkHandle::close`] (the aggregation loop died) still lets its
/// thread send what is queued and end.
impl Drop for SinkHandle {
    fn drop(&mut self) {
        self.mark_closed();
    }
}

/// The next flush to send, waiting for one; `None` once closed and drained.
fn next(shared: &Shared) -> Option<Arc<Flush>> {
    let mut queue = shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        if let Some(flush) = queue.flushes.pop_front() {
            return Some(flush);
        }
        if queue.closed {
            return None;
        }
        queue = shared
            .ready
            .wait(queue)
            .unwrap_or_else(PoisonError::into_inner);
    }
}

/// Adds up flushes and logs them every [`SUMMARY_EVERY`] in one line: what `runner run` shows
/// in its log without any output configured.
#[derive(Default)]
pub(crate) struct LogSummary {
    series: usize,
    sketches: usize,
    service_checks: usize,
    events: usize,
    since: Option<Instant>,
}

/// How often [`LogSummary`] logs.
pub(crate) const SUMMARY_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

impl Sink for LogSummary {
    fn name(&self) -> &str {
        "log_summary"
    }

    fn send(&mut self, flush: &Flush) -> Result<(), String> {
        self.series += flush.series.len();
        self.sketches += flush.sketches.len();
        self.service_checks += flush.service_checks.len();
        self.events += flush.events.len();
        let since = *self.since.get_or_insert_with(Instant::now);
        if since.elapsed() >= SUMMARY_EVERY {
            tracing::info!(
                series = self.series,
                sketches = self.sketches,
                service_checks = self.service_checks,
                events = self.events,
                "flushed in the last minute"
            );
            *self = Self {
                since: Some(Instant::now()),
                ..Self::default()
            };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Sleeps on every flush and remembers how many it saw.
    struct Slow {
        seen: Arc<Mutex<usize>>,
        pause: Duration,
    }

    impl Sink for Slow {
        fn name(&self) -> &str {
            "slow"
        }
        fn send(&mut self, _: &Flush) -> Result<(), String> {
            std::thread::sleep(self.pause);
            *self.seen.lock().unwrap() += 1;
            Ok(())
        }
    }

    #[test]
    fn a_slow_sink_never_blocks_the_offer_and_its_drops_are_counted() {
        let telemetry = Telemetry::new();
        let health = Health::new();
        let seen = Arc::new(Mutex::new(0));
        let handle = SinkHandle::start(
            Box::new(Slow {
                seen: seen.clone(),
                pause: Duration::from_millis(200),
            }),
            &telemetry,
            &health,
        )
        .unwrap();
        let started = Instant::now();
        let offered = QUEUE_FLUSHES + 20;
        for _ in 0..offered {
            handle.offer(Arc::new(Flush::default()));
        }
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "offers wait for nothing: {:?}",
            started.elapsed()
        );
        let dropped = telemetry.counter(InternalMetric::SinkFlushesDropped, Some("slow"));
        assert!(dropped.total() >= 19, "dropped {}", dropped.total());
        handle.close();
        assert_eq!(
            *seen.lock().unwrap() as u64 + dropped.total(),
            offered as u64,
            "every flush was either sent or counted as dropped"
        );
    }

    struct Failing(usize);

    impl Sink for Failing {
        fn name(&self) -> &str {
            "flaky"
        }
        fn send(&mut self, _: &Flush) -> Result<(), String> {
            self.0 += 1;
            if self.0 == 1 {
                Err("intake unreachable".to_owned())
            } else {
                Ok(())
            }
        }
    }

    #[test]
    fn a_failing_sink_is_red_until_it_succeeds_again() {
        let telemetry = Telemetry::new();
        let health = Health::new();
        let handle = SinkHandle::start(Box::new(Failing(0)), &telemetry, &health).unwrap();
        handle.offer(Arc::new(Flush::default()));
        let deadline = Instant::now() + Duration::from_secs(5);
        while health.failed().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let failed = health.failed();
        assert_eq!(failed[0].name, "sink:flaky");
        assert_eq!(failed[0].reason.as_deref(), Some("intake unreachable"));
        handle.offer(Arc::new(Flush::default()));
        health.stop();
        handle.close();
        assert!(health.failed().is_empty(), "{:?}", health.failed());
    }
}
