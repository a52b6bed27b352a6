//! One destination: its retry queue, its circuit breaker, the task that delivers, and what it
//! tells health, status and telemetry.
//!
//! The task sends one payload at a time, oldest first, and classifies each answer as the
//! Datadog Agent does (`transaction.go`):
//! - 2xx: delivered;
//! - 400 and 413: dropped for good (`rejected`), the intake's reason logged;
//! - 403 (and 401): dropped (`invalid_key`), and the endpoint reads as failed with "API key
//!   refused" in status and `/health` until a request succeeds, logged once;
//! - anything else (404, 429, 5xx), network errors and timeouts: kept, and the breaker blocks
//!   the endpoint for its backoff before the same payload is tried again.
//!
//! For a remote-write receiver, every other 4xx but 429 is also dropped as `rejected`: the
//! protocol says such a request will never be accepted.
//!
//! Health (`forwarder:<name>`, required): ok after a delivery; degraded while requests fail or
//! are rejected; failed once it has delivered nothing for `forwarder_health_timeout` while it
//! had something to deliver (queued, or rejected: an intake that answers 400 to everything is
//! as dead as one that does not answer), or when its key is refused. An endpoint with nothing
//! to send is not failing. Logs say what changed, not every retry: the first failure, the
//! recovery, and drops at most once a minute per reason with the counts since (and whatever
//! is left unsaid at a stop).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderName, HeaderValue, USER_AGENT};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::breaker::Breaker;
use super::config::{EndpointConfig, Protocol};
use super::payload::Payload;
use super::queue::{DropReason, Dropped, Queued, RetryQueue};
use crate::health::Reporter;
use crate::telemetry::{Counter, Gauge, InternalMetric, Telemetry};

const AGENT: &str = concat!("kennel/", env!("CARGO_PKG_VERSION"));
/// How often health and the queue gauges are brought up to date.
const WATCH_EVERY: Duration = Duration::from_secs(1);
/// The fewest seconds between two log lines about drops of one reason.
const DROP_LOG_EVERY: Duration = Duration::from_secs(60);
/// The most of an error answer's body quoted in the log and status.
const REASON_MAX: usize = 300;

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    Delivered,
    /// Kept and tried again after the backoff.
    Retry(String),
    /// Dropped for good.
    Drop(DropReason, String),
}

/// The answer's status, classified.
pub(crate) fn classify(protocol: &Protocol, status: u16) -> Option<DropReason> {
    match (status, protocol) {
        (400 | 413, _) => Some(DropReason::Rejected),
        (401 | 403, _) => Some(DropReason::InvalidKey),
        (429, _) => None,
        (402..=499, Protocol::RemoteWrite { .. }) => Some(DropReason::Rejected),
        _ => None,
    }
}

/// What `runner status` shows for one endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct EndpointStatus {
    pub(crate) name: String,
    /// Without credentials.
    pub(crate) url: String,
    pub(crate) succeeded: u64,
    /// Attempts that failed and were kept to try again.
    pub(crate) retried: u64,
    /// Payloads and items dropped, by reason (only reasons that happened; what the serializer
    /// could not put in a payload counts items only).
    pub(crate) dropped: Vec<DropCount>,
    pub(crate) consecutive_failures: u64,
    pub(crate) last_success_unix: Option<f64>,
    pub(crate) last_error: Option<String>,
    pub(crate) api_key_invalid: bool,
    /// The latest answer was a rejection (400, 413), and nothing was delivered since.
    #[serde(default)]
    pub(crate) rejecting: bool,
    pub(crate) queued_memory_payloads: u64,
    pub(crate) queued_memory_bytes: u64,
    pub(crate) queued_disk_payloads: u64,
    pub(crate) queued_disk_bytes: u64,
    pub(crate) oldest_queued_seconds: Option<f64>,
    /// The latest failure to write to the spill directory, while it lasts.
    pub(crate) spill_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct DropCount {
    pub(crate) reason: String,
    pub(crate) payloads: u64,
    pub(crate) items: u64,
}

struct DropCounters {
    payloads: Counter,
    items: Counter,
    /// Counts since the last log line, and when that was.
    unlogged: Mutex<(u64, u64, Option<Instant>)>,
}

struct Gauges {
    memory_payloads: Gauge,
    memory_bytes: Gauge,
    disk_payloads: Gauge,
    disk_bytes: Gauge,
    oldest: Gauge,
}

#[derive(Default)]
struct Progress {
    last_success: Option<SystemTime>,
    last_error: Option<String>,
    /// The last delivery, or since when the endpoint had nothing to deliver.
    progress: Option<Instant>,
    /// The latest answer was a rejection: the payload is gone, but nothing was delivered.
    rejecting: bool,
}

impl Progress {
    /// The queue had nothing to deliver: not a failure to deliver it, unless the intake is
    /// rejecting what it gets.
    fn idle(&mut self) {
        if !self.rejecting {
            self.progress = Some(Instant::now());
        }
    }
}

/// One destination, shared by the sink thread (which queues), its task (which delivers) and
/// the status API (which reads).
pub(crate) struct Endpoint {
    pub(crate) config: EndpointConfig,
    queue: Mutex<RetryQueue>,
    wake: Notify,
    reporter: Reporter,
    health_timeout: Duration,
    succeeded: Counter,
    retried: Counter,
    spill_errors: Counter,
    drops: Vec<(DropReason, DropCounters)>,
    gauges: Gauges,
    consecutive_failures: AtomicU64,
    key_invalid: AtomicBool,
    progress: Mutex<Progress>,
}

impl Endpoint {
    pub(crate) fn new(
        config: EndpointConfig,
        queue: RetryQueue,
        reporter: Reporter,
        health_timeout: Duration,
        telemetry: &Telemetry,
    ) -> Self {
        let name = config.name.as_str();
        let outcome =
            |o: &str| telemetry.counter_tagged(InternalMetric::ForwarderTransactions, &[name, o]);
        let queued = |metric, store: &str| telemetry.gauge_tagged(metric, &[name, store]);
        Self {
            succeeded: outcome("success"),
            retried: outcome("retried"),
            spill_errors: telemetry.counter(InternalMetric::ForwarderSpillErrors, Some(name)),
            drops: DropReason::ALL
                .into_iter()
                .map(|reason| {
                    let tags = [name, reason.as_str()];
                    let counters = DropCounters {
                        payloads: telemetry.counter_tagged(InternalMetric::ForwarderDropped, &tags),
                        items: telemetry
                            .counter_tagged(InternalMetric::ForwarderDroppedItems, &tags),
                        unlogged: Mutex::new((0, 0, None)),
                    };
                    (reason, counters)
                })
                .collect(),
            gauges: Gauges {
                memory_payloads: queued(InternalMetric::ForwarderQueuedPayloads, "memory"),
                memory_bytes: queued(InternalMetric::ForwarderQueuedBytes, "memory"),
                disk_payloads: queued(InternalMetric::ForwarderQueuedPayloads, "disk"),
                disk_bytes: queued(InternalMetric::ForwarderQueuedBytes, "disk"),
                oldest: telemetry.gauge(InternalMetric::ForwarderOldestQueuedSeconds, Some(name)),
            },
            config,
            queue: Mutex::new(queue),
            wake: Notify::new(),
            reporter,
            health_timeout,
            consecutive_failures: AtomicU64::new(0),
            key_invalid: AtomicBool::new(false),
            progress: Mutex::new(Progress {
                progress: Some(Instant::now()),
                ..Progress::default()
            }),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.config.name
    }

    /// Queues a payload (from the sink thread). Never waits for the network.
    pub(crate) fn push(&self, payload: Payload) {
        let item = Queued {
            payload,
            created: SystemTime::now(),
        };
        let dropped = {
            let mut queue = self.queue();
            if queue.is_empty() {
                lock(&self.progress).idle();
            }
            let dropped = queue.push(item);
            self.count_spill_errors(&queue);
            dropped
        };
        self.count_drops(&dropped);
        self.wake.notify_one();
    }

    /// Counts payloads dropped before they were queued (by the serializer).
    pub(crate) fn count_dropped(&self, dropped: Dropped) {
        self.count_drops(&[dropped]);
    }

    /// Delivers until `stop` says so, then keeps sending what is queued until `deadline` (no
    /// backoff waits then): the caller spills the rest.
    pub(crate) async fn run(
        self: Arc<Self>,
        client: reqwest::Client,
        mut breaker: Breaker,
        stop: Arc<StopSignal>,
    ) {
        if let Protocol::Datadog { .. } = self.config.protocol {
            self.validate(&client, &stop).await;
        }
        loop {
            let stopping = stop.deadline();
            if stopping.is_some_and(|deadline| Instant::now() >= deadline) {
                return;
            }
            let (taken, dropped) = self.queue().take();
            self.count_drops(&dropped);
            let Some((taken, item)) = taken else {
                lock(&self.progress).idle();
                if stopping.is_some() {
                    return;
                }
                tokio::select! {
                    () = self.wake.notified() => {}
                    () = stop.notified() => {}
                }
                continue;
            };
            // A stop may come while the request is on its way: it gets until the deadline.
            let outcome = tokio::select! {
                outcome = self.send(&client, &item) => outcome,
                () = stop.deadline_passed() => Outcome::Retry("the stop timeout passed".to_owned()),
            };
            match outcome {
                Outcome::Delivered => {
                    self.queue().delivered(taken);
                    breaker.success();
                    self.delivered();
                }
                Outcome::Drop(reason, why) => {
                    self.queue().delivered(taken);
                    self.refused(reason, &why);
                    self.count_drops(&[Dropped::new(reason, 1, u64::from(item.payload.items))]);
                }
                Outcome::Retry(why) => {
                    let dropped = {
                        let mut queue = self.queue();
                        let dropped = queue.retry(taken, item);
                        self.count_spill_errors(&queue);
                        dropped
                    };
                    self.count_drops(&dropped);
                    let wait = breaker.failure();
                    self.failed(&why, wait);
                    if stop.deadline().is_none() {
                        tokio::select! {
                            () = tokio::time::sleep(wait) => {}
                            () = stop.notified() => {}
                        }
                    } else {
                        // Stopping: one more try would only fail again; the rest is spilled.
                        return;
                    }
                }
            }
        }
    }

    /// Asks `/api/v1/validate` whether the key is good: one clear line either way.
    async fn validate(&self, client: &reqwest::Client, stop: &StopSignal) {
        let Protocol::Datadog { api_key } = &self.config.protocol else {
            return;
        };
        let url = format!("{}/api/v1/validate", self.config.url);
        let request = client
            .get(&url)
            .header("DD-API-KEY", api_key)
            .header(USER_AGENT, AGENT)
            .send();
        let answer = tokio::select! {
            answer = request => answer,
            () = stop.notified() => return,
        };
        match answer {
            Ok(response) if response.status().is_success() => {
                tracing::info!(endpoint = %self.name(), "API key valid");
            }
            Ok(response) if matches!(response.status().as_u16(), 401 | 403) => {
                self.refused(DropReason::InvalidKey, "403 from /api/v1/validate");
            }
            Ok(response) => tracing::warn!(
                endpoint = %self.name(),
                status = response.status().as_u16(),
                "could not validate the API key; sending anyway"
            ),
            Err(error) => tracing::warn!(
                endpoint = %self.name(),
                error = %error_chain(&error),
                "could not validate the API key; sending anyway"
            ),
        }
    }

    async fn send(&self, client: &reqwest::Client, item: &Queued) -> Outcome {
        let payload = &item.payload;
        let url = format!("{}{}", self.config.url, payload.route.path());
        let mut request = client
            .post(url)
            .header(CONTENT_TYPE, payload.route.content_type())
            .header(USER_AGENT, AGENT)
            .body(payload.body.clone());
        if let Some(encoding) = payload.encoding.header() {
            request = request.header(CONTENT_ENCODING, encoding);
        }
        match &self.config.protocol {
            Protocol::Datadog { api_key } => {
                request = request
                    .header("DD-API-KEY", api_key)
                    .header("DD-Agent-Version", env!("CARGO_PKG_VERSION"));
            }
            Protocol::RemoteWrite { headers } => {
                request = request.header("X-Prometheus-Remote-Write-Version", "0.1.0");
                for (name, value) in headers {
                    if let (Ok(name), Ok(value)) = (
                        HeaderName::from_bytes(name.as_bytes()),
                        HeaderValue::from_str(value),
                    ) {
                        request = request.header(name, value);
                    }
                }
            }
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => return Outcome::Retry(error_chain(&error)),
        };
        let status = response.status();
        if status.is_success() {
            return Outcome::Delivered;
        }
        let body = reason_text(response).await;
        let mut why = format!("{status} from {}", payload.route.path());
        let body = body.trim();
        if !body.is_empty() {
            why.push_str(": ");
            why.extend(body.chars().take(REASON_MAX));
        }
        match classify(&self.config.protocol, status.as_u16()) {
            Some(reason) => Outcome::Drop(reason, why),
            None => Outcome::Retry(why),
        }
    }

    fn delivered(&self) {
        self.succeeded.increment(1);
        let failures = self.consecutive_failures.swap(0, Ordering::Relaxed);
        let was_invalid = self.key_invalid.swap(false, Ordering::Relaxed);
        if failures > 0 || was_invalid {
            let queued = self.queue().size();
            tracing::info!(
                endpoint = %self.name(),
                after_failures = failures,
                queued_payloads = queued.memory_payloads + queued.disk_payloads,
                "delivering again"
            );
        }
        let mut progress = lock(&self.progress);
        progress.last_success = Some(SystemTime::now());
        progress.progress = Some(Instant::now());
        progress.rejecting = false;
        drop(progress);
        // Health from the whole state: a delivery does not make an unusable disk usable.
        self.watch();
    }

    fn failed(&self, why: &str, wait: Duration) {
        self.retried.increment(1);
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures == 1 {
            tracing::warn!(
                endpoint = %self.name(),
                error = %why,
                "cannot deliver; keeping the payloads and retrying"
            );
        } else {
            tracing::debug!(endpoint = %self.name(), error = %why, retry_in = ?wait, "still cannot deliver");
        }
        lock(&self.progress).last_error = Some(why.to_owned());
        self.watch();
    }

    fn refused(&self, reason: DropReason, why: &str) {
        {
            let mut progress = lock(&self.progress);
            progress.last_error = Some(why.to_owned());
            progress.rejecting = true;
        }
        if reason == DropReason::Rejected {
            self.watch();
        }
        if reason == DropReason::InvalidKey {
            if !self.key_invalid.swap(true, Ordering::Relaxed) {
                tracing::error!(
                    endpoint = %self.name(),
                    url = %self.config.display_url(),
                    response = %why,
                    "API key invalid: the intake refuses it, payloads are dropped until it accepts one"
                );
            }
            self.watch();
        }
    }

    /// Brings health and the queue gauges up to date.
    pub(crate) fn watch(&self) {
        let (size, spill_error) = {
            let queue = self.queue();
            (queue.size(), queue.spill_error.clone())
        };
        self.gauges.memory_payloads.set(size.memory_payloads as f64);
        self.gauges.memory_bytes.set(size.memory_bytes as f64);
        self.gauges.disk_payloads.set(size.disk_payloads as f64);
        self.gauges.disk_bytes.set(size.disk_bytes as f64);
        let oldest = size
            .oldest
            .and_then(|t| t.elapsed().ok())
            .map_or(0.0, |age| age.as_secs_f64());
        self.gauges.oldest.set(oldest);

        let queued = size.memory_payloads + size.disk_payloads;
        let progress = lock(&self.progress);
        let quiet = progress.progress.map_or(Duration::ZERO, |p| p.elapsed());
        let error = progress.last_error.clone().unwrap_or_default();
        let rejecting = progress.rejecting;
        drop(progress);
        if self.key_invalid.load(Ordering::Relaxed) {
            self.reporter
                .failed(format!("API key refused by the intake ({error})"));
        } else if (queued > 0 || rejecting) && quiet > self.health_timeout {
            self.reporter.failed(format!(
                "delivered nothing for {:.0} s ({error}); {queued} payloads queued",
                quiet.as_secs_f64()
            ));
        } else if self.consecutive_failures.load(Ordering::Relaxed) > 0 {
            self.reporter.degraded(format!("retrying: {error}"));
        } else if rejecting {
            self.reporter
                .degraded(format!("the intake rejects payloads: {error}"));
        } else if let Some(spill) = spill_error {
            self.reporter.degraded(format!(
                "cannot spill to disk, queueing in memory only: {spill}"
            ));
        } else {
            self.reporter.ok();
        }
    }

    /// Updates health every second until `stop`.
    pub(crate) async fn watch_until(self: Arc<Self>, stop: Arc<StopSignal>) {
        let mut tick = tokio::time::interval(WATCH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while stop.deadline().is_none() {
            tokio::select! {
                _ = tick.tick() => self.watch(),
                () = stop.notified() => {}
            }
        }
    }

    /// At a stop, after the task ended: what is left goes to disk.
    pub(crate) fn spill_all(&self) {
        let (dropped, left) = {
            let mut queue = self.queue();
            let dropped = queue.spill_all();
            self.count_spill_errors(&queue);
            (dropped, queue.size())
        };
        self.count_drops(&dropped);
        // The runner is stopping: what the once-a-minute limit held back is said now.
        for (reason, counters) in &self.drops {
            let (payloads, items, _) = *lock(&counters.unlogged);
            if payloads + items > 0 {
                tracing::warn!(
                    endpoint = %self.name(),
                    reason = reason.as_str(),
                    payloads,
                    items,
                    "payloads dropped"
                );
            }
        }
        if left.disk_payloads > 0 {
            tracing::info!(
                endpoint = %self.name(),
                payloads = left.disk_payloads,
                bytes = left.disk_bytes,
                "undelivered payloads kept on disk for the next start"
            );
        }
        self.watch();
    }

    pub(crate) fn status(&self) -> EndpointStatus {
        let (size, spill_error) = {
            let queue = self.queue();
            (queue.size(), queue.spill_error.clone())
        };
        let progress = lock(&self.progress);
        EndpointStatus {
            name: self.config.name.clone(),
            url: self.config.display_url(),
            succeeded: self.succeeded.total(),
            retried: self.retried.total(),
            dropped: self
                .drops
                .iter()
                .filter(|(_, c)| c.payloads.total() > 0 || c.items.total() > 0)
                .map(|(reason, c)| DropCount {
                    reason: reason.as_str().to_owned(),
                    payloads: c.payloads.total(),
                    items: c.items.total(),
                })
                .collect(),
            consecutive_failures: self.consecutive_failures.load(Ordering::Relaxed),
            last_success_unix: progress.last_success.map(crate::health::unix),
            last_error: progress.last_error.clone(),
            api_key_invalid: self.key_invalid.load(Ordering::Relaxed),
            rejecting: progress.rejecting,
            queued_memory_payloads: size.memory_payloads,
            queued_memory_bytes: size.memory_bytes,
            queued_disk_payloads: size.disk_payloads,
            queued_disk_bytes: size.disk_bytes,
            oldest_queued_seconds: size
                .oldest
                .and_then(|t| t.elapsed().ok())
                .map(|age| age.as_secs_f64()),
            spill_error,
        }
    }

    fn count_drops(&self, dropped: &[Dropped]) {
        for d in dropped {
            let Some((_, counters)) = self.drops.iter().find(|(r, _)| *r == d.reason) else {
                continue;
            };
            counters.payloads.increment(d.payloads);
            counters.items.increment(d.items);
            let mut unlogged = lock(&counters.unlogged);
            unlogged.0 += d.payloads;
            unlogged.1 += d.items;
            if unlogged.2.is_none_or(|at| at.elapsed() >= DROP_LOG_EVERY) {
                let last_error = lock(&self.progress).last_error.clone().unwrap_or_default();
                tracing::warn!(
                    endpoint = %self.name(),
                    reason = d.reason.as_str(),
                    payloads = unlogged.0,
                    items = unlogged.1,
                    %last_error,
                    "payloads dropped"
                );
                *unlogged = (0, 0, Some(Instant::now()));
            }
        }
    }

    fn count_spill_errors(&self, queue: &RetryQueue) {
        let new = queue.spill_errors.saturating_sub(self.spill_errors.total());
        self.spill_errors.increment(new);
    }

    fn queue(&self) -> MutexGuard<'_, RetryQueue> {
        lock(&self.queue)
    }
}

/// The start of an error answer's body, read no further than [`REASON_MAX`] bytes: an
/// intake's error page may be of any size.
async fn reason_text(mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    while body.len() < REASON_MAX {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    body.truncate(REASON_MAX);
    String::from_utf8_lossy(&body).into_owned()
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An error and its causes, on one line (reqwest's own text hides the cause).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Tells every endpoint task to stop, with the deadline it has to finish sending.
#[derive(Default)]
pub(crate) struct StopSignal {
    deadline: Mutex<Option<Instant>>,
    notify: Notify,
}

impl StopSignal {
    pub(crate) fn stop(&self, deadline: Instant) {
        *lock(&self.deadline) = Some(deadline);
        self.notify.notify_waiters();
    }

    fn deadline(&self) -> Option<Instant> {
        *lock(&self.deadline)
    }

    /// Returns once a stop has been asked for and its deadline has passed.
    async fn deadline_passed(&self) {
        loop {
            if let Some(deadline) = self.deadline() {
                tokio::time::sleep_until(deadline.into()).await;
                return;
            }
            self.notified().await;
        }
    }

    async fn notified(&self) {
        let notified = self.notify.notified();
        if self.deadline().is_some() {
            return;
        }
        notified.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified_as_the_agent_does() {
        let datadog = Protocol::Datadog {
            api_key: String::new(),
        };
        let remote_write = Protocol::RemoteWrite { headers: vec![] };
        for (status, for_datadog, for_remote_write) in [
            (400, Some(DropReason::Rejected), Some(DropReason::Rejected)),
            (413, Some(DropReason::Rejected), Some(DropReason::Rejected)),
            (
                403,
                Some(DropReason::InvalidKey),
                Some(DropReason::InvalidKey),
            ),
            (
                401,
                Some(DropReason::InvalidKey),
                Some(DropReason::InvalidKey),
            ),
            (404, None, Some(DropReason::Rejected)),
            (429, None, None),
            (500, None, None),
            (503, None, None),
        ] {
            assert_eq!(classify(&datadog, status), for_datadog, "{status}");
            assert_eq!(
                classify(&remote_write, status),
                for_remote_write,
                "{status}"
            );
        }
    }
}
