//! The aggregation loop: one thread that owns the [`Aggregator`], takes in DogStatsD datagrams
//! and check results, and flushes closed buckets to the outputs.
//!
//! One owner means no lock on the hot path: the listeners hand over whole batches of datagrams
//! through a bounded channel, and this thread parses them (the parser borrows from the batch,
//! the aggregator allocates only for new contexts) and inserts every sample. A full channel
//! makes the listeners wait, so the kernel's socket buffer absorbs bursts and, over UDS, the
//! clients see back-pressure rather than silent loss. Check results arrive through the same
//! channel.
//!
//! Tagging by origin: a datagram whose sender the kernel identified gets its container's tags
//! (from the container store, at `dogstatsd_tag_cardinality`; `container_id:<id>` alone for a
//! container the store does not know, at `high`), whatever its `|c:` field says (a client
//! cannot claim another container); over UDP, where the kernel says nothing, a metric's
//! `|c:ci-<id>` is used the same way, unless `dogstatsd_origin_detection_client` is off
//! (events and service checks get the kernel's answer only). Each container's tags
//! are looked up once and cached until the store changes, so the hot path takes no lock.
//!
//! Every [`FLUSH_EVERY`] the loop flushes: the OpenMetrics store is updated and a one-line
//! summary is logged. The forwarder will take the same [`Flush`].

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant, SystemTime};

use crate::aggregator::telemetry::{Counter, InternalMetric};
use crate::aggregator::{Aggregator, Flush, Sample, Value};
use crate::check::{self, RunReport};
use crate::containers::{Cardinality, ContainerStore};
use crate::dogstatsd::listener::Batch;
use crate::dogstatsd::origin::Origin;
use crate::dogstatsd::parser::{self, ContainerRef, Message, MetricKind};

/// How often closed buckets are flushed.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// What the loop takes in.
pub enum Input {
    Datagrams(Batch),
    /// Check runs' reports, several at once when many runs finish together.
    Reports(Vec<RunReport>),
}

/// Where flushes go.
pub type Output = Box<dyn FnMut(&Flush) + Send>;

/// The sending side of the loop: cheap to clone, one per producer.
#[derive(Clone)]
pub struct AggregatorHandle(SyncSender<Input>);

impl AggregatorHandle {
    /// Hands over `input`, waiting while the loop is behind; `false` once the loop has stopped.
    pub fn send(&self, input: Input) -> bool {
        self.0.send(input).is_ok()
    }

    /// Hands over `input` if the loop has room; gives it back if not. `Err(None)` once the
    /// loop has stopped.
    pub fn try_send(&self, input: Input) -> Result<(), Option<Input>> {
        match self.0.try_send(input) {
            Ok(()) => Ok(()),
            Err(std::sync::mpsc::TrySendError::Full(input)) => Err(Some(input)),
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => Err(None),
        }
    }
}

/// Starts the loop on its own thread. It stops when every [`AggregatorHandle`] is dropped, after
/// a last flush.
/// How DogStatsD senders are identified and tagged.
#[derive(Clone, Default)]
pub struct Origins {
    /// Over UDP, trust a client's `|c:` container id (`dogstatsd_origin_detection_client`).
    pub trust_client: bool,
    /// Where containers' tags come from; without it a container gets `container_id` only.
    pub containers: Option<ContainerStore>,
    /// Which of a container's tags its metrics get.
    pub cardinality: Cardinality,
}

pub fn start(
    aggregator: Aggregator,
    hostname: String,
    origins: Origins,
    outputs: Vec<Output>,
) -> std::io::Result<(AggregatorHandle, std::thread::JoinHandle<()>)> {
    let (sender, receiver) = std::sync::mpsc::sync_channel(QUEUE);
    let state = Loop::new(aggregator, hostname, origins, outputs);
    let thread = std::thread::Builder::new()
        .name("kennel-aggregator".to_owned())
        .spawn(move || state.run(receiver))?;
    Ok((AggregatorHandle(sender), thread))
}

/// Batches (or reports) queued before producers wait.
const QUEUE: usize = 1024;

struct Loop {
    aggregator: Aggregator,
    hostname: String,
    origins: Origins,
    outputs: Vec<Output>,
    /// Each sending container's tags, until the store changes.
    container_tags: HashMap<Arc<str>, Arc<[String]>>,
    /// The store's generation the cache was built at.
    generation: u64,
    messages: [Counter; 3],
    parse_errors: HashMap<&'static str, Counter>,
}

impl Loop {
    fn new(
        aggregator: Aggregator,
        hostname: String,
        origins: Origins,
        outputs: Vec<Output>,
    ) -> Self {
        let telemetry = aggregator.telemetry().clone();
        let messages = [
            telemetry.counter(InternalMetric::DogstatsdMessages, Some("metric")),
            telemetry.counter(InternalMetric::DogstatsdMessages, Some("event")),
            telemetry.counter(InternalMetric::DogstatsdMessages, Some("service_check")),
        ];
        let parse_errors = parser::ParseErrorReason::ALL
            .iter()
            .map(|r| {
                (
                    r.as_str(),
                    telemetry.counter(InternalMetric::DogstatsdParseErrors, Some(r.as_str())),
                )
            })
            .collect();
        Self {
            aggregator,
            hostname,
            origins,
            outputs,
            container_tags: HashMap::new(),
            generation: 0,
            messages,
            parse_errors,
        }
    }

    fn run(mut self, inputs: Receiver<Input>) {
        let mut next_flush = Instant::now() + FLUSH_EVERY;
        loop {
            let wait = next_flush.saturating_duration_since(Instant::now());
            match inputs.recv_timeout(wait) {
                Ok(Input::Datagrams(batch)) => self.take_datagrams(&batch),
                Ok(Input::Reports(reports)) => {
                    for report in &reports {
                        self.aggregator.insert_report(report);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.flush();
                    return;
                }
            }
            if Instant::now() >= next_flush {
                self.flush();
                next_flush += FLUSH_EVERY;
                if next_flush < Instant::now() {
                    next_flush = Instant::now() + FLUSH_EVERY;
                }
            }
        }
    }

    fn flush(&mut self) {
        let flush = self
            .aggregator
            .flush(check::unix_seconds(SystemTime::now()));
        for output in &mut self.outputs {
            output(&flush);
        }
    }

    fn take_datagrams(&mut self, batch: &Batch) {
        let now = check::unix_seconds(SystemTime::now());
        if let Some(store) = &self.origins.containers {
            let generation = store.generation();
            if generation != self.generation {
                self.container_tags.clear();
                self.generation = generation;
            }
        }
        for (bytes, origin) in batch.packets() {
            let kernel_tags = match origin {
                Origin::Container(id) => {
                    Some(container_tags(&mut self.container_tags, &self.origins, id))
                }
                Origin::Host | Origin::Unknown => None,
            };
            let trust_client = matches!(origin, Origin::Unknown) && self.origins.trust_client;
            let kernel_tags: &[String] = kernel_tags.as_deref().unwrap_or(&[]);
            parser::parse_datagram(bytes, |message| match message {
                Ok(Message::Metric(metric)) => {
                    self.messages[0].increment(1);
                    let client_tags = match metric.origin.container {
                        Some(ContainerRef::Id(id)) if trust_client => {
                            Some(container_tags(&mut self.container_tags, &self.origins, id))
                        }
                        _ => None,
                    };
                    let extra = client_tags.as_deref().unwrap_or(kernel_tags);
                    let tags = || metric.tags.iter().chain(extra.iter().map(String::as_str));
                    let timestamp = metric.timestamp.and_then(|t| i64::try_from(t).ok());
                    match metric.value {
                        parser::MetricValue::Set(member) => self.aggregator.insert(
                            Sample {
                                name: metric.name,
                                tags: tags(),
                                host: "",
                                value: Value::Set(member),
                                sample_rate: metric.sample_rate,
                                timestamp,
                            },
                            now,
                        ),
                        parser::MetricValue::Numbers(values) => {
                            let Some(context) =
                                self.aggregator.context(metric.name, tags(), "", now)
                            else {
                                return;
                            };
                            for value in values.iter() {
                                let Some(value) = numeric_value(metric.kind, value) else {
                                    continue;
                                };
                                self.aggregator.add(
                                    context,
                                    value,
                                    metric.sample_rate,
                                    timestamp,
                                    now,
                                );
                            }
                        }
                    }
                }
                Ok(Message::Event(event)) => {
                    self.messages[1].increment(1);
                    let tags = owned_tags(event.tags, kernel_tags);
                    self.aggregator.add_event(check::Event {
                        title: event.title.into_owned(),
                        text: event.text.into_owned(),
                        alert_type: match event.alert_type {
                            parser::EventAlertType::Error => check::AlertType::Error,
                            parser::EventAlertType::Warning => check::AlertType::Warning,
                            parser::EventAlertType::Info => check::AlertType::Info,
                            parser::EventAlertType::Success => check::AlertType::Success,
                        },
                        priority: match event.priority {
                            parser::EventPriority::Normal => check::Priority::Normal,
                            parser::EventPriority::Low => check::Priority::Low,
                        },
                        aggregation_key: event.aggregation_key.map(str::to_owned),
                        source_type_name: event.source_type.map(str::to_owned),
                        tags,
                        host: event.hostname.unwrap_or(&self.hostname).to_owned(),
                        timestamp: event
                            .timestamp
                            .and_then(|t| i64::try_from(t).ok())
                            .unwrap_or(now as i64),
                    });
                }
                Ok(Message::ServiceCheck(sc)) => {
                    self.messages[2].increment(1);
                    let tags = owned_tags(sc.tags, kernel_tags);
                    self.aggregator.add_service_check(check::ServiceCheck {
                        name: sc.name.to_owned(),
                        status: match sc.status {
                            parser::ServiceCheckStatus::Ok => check::Status::Ok,
                            parser::ServiceCheckStatus::Warning => check::Status::Warning,
                            parser::ServiceCheckStatus::Critical => check::Status::Critical,
                            parser::ServiceCheckStatus::Unknown => check::Status::Unknown,
                        },
                        message: sc.message.unwrap_or_default().to_owned(),
                        tags,
                        host: sc.hostname.unwrap_or(&self.hostname).to_owned(),
                        timestamp: sc.timestamp.map_or(now, |t| t as f64),
                    });
                }
                Err(error) => {
                    if let Some(counter) = self.parse_errors.get(error.reason.as_str()) {
                        counter.increment(1);
                    }
                    tracing::debug!(%error, "dropped a malformed DogStatsD message");
                }
            });
        }
    }
}

/// The tags of the container `id`, from the cache or the store.
fn container_tags(
    cache: &mut HashMap<Arc<str>, Arc<[String]>>,
    origins: &Origins,
    id: &str,
) -> Arc<[String]> {
    if let Some(tags) = cache.get(id) {
        return tags.clone();
    }
    let tags: Arc<[String]> = match origins.containers.as_ref().and_then(|s| s.get(id)) {
        Some(container) => container.tags.at(origins.cardinality).into(),
        // A container the store does not know (not yet inspected, or not Docker's): its id is
        // all there is, and a high-cardinality tag.
        None if origins.cardinality == Cardinality::High => {
            Arc::new([format!("container_id:{id}")])
        }
        None => Arc::new([]),
    };
    // Client-supplied ids (UDP) are arbitrary: the cache must not grow with them.
    if cache.len() >= MAX_CACHED_CONTAINERS {
        cache.clear();
    }
    cache.insert(id.into(), tags.clone());
    tags
}

/// The most containers whose tags the loop keeps at hand.
const MAX_CACHED_CONTAINERS: usize = 4096;

/// The aggregator's value for one number of a DogStatsD metric (`None` for sets, whose
/// member is a string).
pub fn numeric_value(kind: MetricKind, value: f64) -> Option<Value<'static>> {
    Some(match kind {
        MetricKind::Count => Value::Count(value),
        MetricKind::Gauge => Value::Gauge(value),
        MetricKind::Timer => Value::Timer(value),
        MetricKind::Histogram => Value::Histogram(value),
        MetricKind::Distribution => Value::Distribution(value),
        MetricKind::Set => return None,
    })
}

/// An event's or service check's tags, with the sender's container, sorted and de-duplicated.
fn owned_tags(tags: parser::Tags<'_>, container: &[String]) -> Vec<String> {
    let mut tags: Vec<String> = tags
        .iter()
        .map(str::to_owned)
        .chain(container.iter().cloned())
        .collect();
    tags.sort_unstable();
    tags.dedup();
    tags
}
