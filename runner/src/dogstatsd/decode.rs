//! Turning datagrams into samples: each DogStatsD message of a batch is parsed (the parser
//! borrows from the batch) and inserted into the aggregator, on the aggregation thread, with
//! its sender's tags.
//!
//! Tagging by origin: a datagram whose sender the kernel identified gets its container's tags
//! (from the container store, at `dogstatsd_tag_cardinality`; `container_id:<id>` alone for a
//! container the store does not know, at `high`), whatever its `|c:` field says (a client
//! cannot claim another container); over UDP, where the kernel says nothing, a metric's
//! `|c:ci-<id>` is used the same way, unless `dogstatsd_origin_detection_client` is off
//! (events and service checks get the kernel's answer only). Each container's tags
//! are looked up once and cached until the store changes, so the hot path takes no lock.
//!
//! The same answer names the sender for its context quota ([`crate::aggregator::Owner`]): its
//! container, or its pid for a host process. A `|c:` id over UDP counts only for a container
//! the store knows: an arbitrary id must not open a quota of its own, so unknown ones share
//! the `unidentified` origin with the rest of UDP.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use super::listener::Batch;
use super::origin::Origin;
use super::parser::{self, ContainerRef, Message, MetricKind};
use crate::aggregator::service::Decode;
use crate::aggregator::{Aggregator, Owner, Sample, Value};
use crate::check;
use crate::containers::{Cardinality, ContainerStore};
use crate::telemetry::{Counter, InternalMetric, Telemetry};

/// How DogStatsD senders are identified and tagged.
#[derive(Clone, Default)]
pub struct Origins {
    /// Over UDP, trust a client's `|c:` container id (`dogstatsd_origin_detection_client`).
    pub(crate) trust_client: bool,
    /// Where containers' tags come from; without it a container gets `container_id` only.
    pub(crate) containers: Option<ContainerStore>,
    /// Which of a container's tags its metrics get.
    pub(crate) cardinality: Cardinality,
}

/// A sending container's tags, and whether the store knows it.
#[derive(Clone)]
struct ContainerTags {
    tags: Arc<[String]>,
    known: bool,
}

/// The aggregation thread's DogStatsD state: the tags of the containers seen lately, and the
/// message counters.
pub struct Decoder {
    hostname: String,
    origins: Origins,
    /// Each sending container's tags, until the store changes.
    container_tags: HashMap<Arc<str>, ContainerTags>,
    /// The store's generation the cache was built at.
    generation: u64,
    messages: [Counter; 3],
    parse_errors: HashMap<&'static str, Counter>,
}

impl Decode for Decoder {
    type Batch = Batch;

    fn decode(&mut self, batch: &Batch, aggregator: &mut Aggregator) {
        let now = check::unix_seconds(SystemTime::now());
        self.refresh();
        for (bytes, origin) in batch.packets() {
            self.datagram(bytes, origin, aggregator, now);
        }
    }
}

impl Decoder {
    /// A decoder tagging with `origins`, events and service checks without a host getting
    /// `hostname`, counting into `telemetry`.
    pub fn new(hostname: String, origins: Origins, telemetry: &Telemetry) -> Self {
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
            hostname,
            origins,
            container_tags: HashMap::new(),
            generation: 0,
            messages,
            parse_errors,
        }
    }

    /// Forgets cached container tags if the store changed since they were looked up.
    fn refresh(&mut self) {
        if let Some(store) = &self.origins.containers {
            let generation = store.generation();
            if generation != self.generation {
                self.container_tags.clear();
                self.generation = generation;
            }
        }
    }

    /// Parses one datagram from `origin` and inserts every message into `aggregator`.
    pub fn datagram(
        &mut self,
        bytes: &[u8],
        origin: &Origin,
        aggregator: &mut Aggregator,
        now: f64,
    ) {
        let (kernel_tags, kernel_owner) = match origin {
            Origin::Container(id) => (
                Some(container_tags(&mut self.container_tags, &self.origins, id).tags),
                Owner::Container(id),
            ),
            Origin::Host(pid) => (None, Owner::Process(*pid)),
            Origin::Unknown => (None, Owner::Unidentified),
        };
        let trust_client = matches!(origin, Origin::Unknown) && self.origins.trust_client;
        let kernel_tags: &[String] = kernel_tags.as_deref().unwrap_or(&[]);
        parser::parse_datagram(bytes, |message| match message {
            Ok(Message::Metric(metric)) => {
                self.messages[0].increment(1);
                let (client_tags, owner) = match metric.origin.container {
                    Some(ContainerRef::Id(id)) if trust_client => {
                        let client = container_tags(&mut self.container_tags, &self.origins, id);
                        let owner = if client.known {
                            Owner::Container(id)
                        } else {
                            kernel_owner
                        };
                        (Some(client.tags), owner)
                    }
                    _ => (None, kernel_owner),
                };
                let extra = client_tags.as_deref().unwrap_or(kernel_tags);
                let tags = || metric.tags.iter().chain(extra.iter().map(String::as_str));
                let timestamp = metric.timestamp.and_then(|t| i64::try_from(t).ok());
                match metric.value {
                    parser::MetricValue::Set(member) => aggregator.insert(
                        Sample {
                            name: metric.name,
                            tags: tags(),
                            host: "",
                            value: Value::Set(member),
                            sample_rate: metric.sample_rate,
                            timestamp,
                        },
                        owner,
                        now,
                    ),
                    parser::MetricValue::Numbers(values) => {
                        let Some(context) = aggregator.context(metric.name, tags(), "", owner, now)
                        else {
                            return;
                        };
                        for value in values.iter() {
                            let Some(value) = numeric_value(metric.kind, value) else {
                                continue;
                            };
                            aggregator.add(context, value, metric.sample_rate, timestamp, now);
                        }
                    }
                }
            }
            Ok(Message::Event(event)) => {
                self.messages[1].increment(1);
                let tags = owned_tags(event.tags, kernel_tags);
                aggregator.add_event(check::Event {
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
                aggregator.add_service_check(check::ServiceCheck {
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

/// The tags of the container `id`, from the cache or the store.
fn container_tags(
    cache: &mut HashMap<Arc<str>, ContainerTags>,
    origins: &Origins,
    id: &str,
) -> ContainerTags {
    if let Some(tags) = cache.get(id) {
        return tags.clone();
    }
    let tags = match origins.containers.as_ref().and_then(|s| s.get(id)) {
        Some(container) => ContainerTags {
            tags: container.tags.at(origins.cardinality).into(),
            known: true,
        },
        // A container the store does not know (not yet inspected, or not Docker's): its id is
        // all there is, and a high-cardinality tag.
        None if origins.cardinality == Cardinality::High => ContainerTags {
            tags: Arc::new([format!("container_id:{id}")]),
            known: false,
        },
        None => ContainerTags {
            tags: Arc::new([]),
            known: false,
        },
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
pub(crate) fn numeric_value(kind: MetricKind, value: f64) -> Option<Value<'static>> {
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
