//! Container lifecycle as the Datadog Agent's Docker check reports it: Docker's `oom`, `die`,
//! `kill` and `restart` events become Datadog events, a container's exit becomes a
//! `docker.exit` service check carrying its exit code, and the daemon's container and image
//! counts become `docker.containers.running`, `docker.containers.stopped` and
//! `docker.images.available` gauges.
//!
//! Events are the Agent's *unbundled* form (`unbundled_events.go`), one per Docker event, so
//! an OOM kill is never folded into a count: title `Container <id>: <action>`, the container's
//! tags plus `event_type:<action>`, aggregation key `docker:<id>`, source `docker`, alert type
//! `error` for `oom` and `kill` and `info` otherwise. `docker.exit` is OK for exit codes 0 and
//! 143 (a container stopped by SIGTERM, the Agent's default `ok_exit_codes`) and CRITICAL
//! otherwise, with the code in its message.
//!
//! Each becomes a [`RunReport`] of the pseudo-check `docker` on the pipeline's report channel,
//! like a check run's: the aggregator treats them alike.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use bollard::models::EventMessage;

use super::tagger::image_tags;
use super::{Cardinality, Container};
use crate::check::{
    AlertType, Event, MetricSample, MetricType, Priority, ReportKind, RunReport, ServiceCheck,
    Status,
};

/// The instances the Docker lifecycle events and the container counts are reported as: their
/// results' origins, which `runner status` names.
pub(crate) const LIFECYCLE_INSTANCE_ID: &str = "docker_lifecycle";
pub(crate) const COUNTS_INSTANCE_ID: &str = "docker_counts";

/// The Docker event actions reported as events.
pub(crate) const ACTIONS: [&str; 4] = ["oom", "die", "kill", "restart"];

/// Exit codes `docker.exit` calls OK.
const OK_EXIT_CODES: [i64; 2] = [0, 143];

/// Where lifecycle reports go, and how they are tagged.
#[derive(Clone)]
pub(crate) struct Lifecycle {
    pub(crate) reports: tokio::sync::mpsc::Sender<RunReport>,
    pub(crate) hostname: String,
    pub(crate) cardinality: Cardinality,
    /// How often the container and image counts are taken; `None`: never.
    pub(crate) counts_every: Option<Duration>,
}

/// The report for one Docker event of an action in [`ACTIONS`]; `container` is what the store
/// knew of it (a container may die before it was ever inspected: then the event's own
/// attributes name it).
pub(crate) fn event_report(
    message: &EventMessage,
    container: Option<&Container>,
    lifecycle: &Lifecycle,
) -> Option<RunReport> {
    let action = message.action.as_deref()?;
    if !ACTIONS.contains(&action) {
        return None;
    }
    let actor = message.actor.as_ref()?;
    let id = actor.id.as_deref()?;
    let attributes = actor.attributes.clone().unwrap_or_default();
    let name = container
        .map(|c| c.name.clone())
        .or_else(|| attributes.get("name").cloned())
        .unwrap_or_default();
    let image = container
        .map(|c| c.image.clone())
        .or_else(|| attributes.get("image").cloned())
        .unwrap_or_default();
    let mut tags = match container {
        Some(container) => container.tags.at(lifecycle.cardinality),
        None => fallback_tags(id, &name, &image, lifecycle.cardinality),
    };
    let timestamp = message.time.unwrap_or_else(now_unix);
    // Each event is one more, and replaces none before it.
    let mut report = report(LIFECYCLE_INSTANCE_ID, ReportKind::Event);
    let mut event_tags = tags.clone();
    event_tags.push(format!("event_type:{action}"));
    event_tags.sort();
    report.events.push(Event {
        title: format!("Container {id}: {action}"),
        text: format!("Container {id} ({name}, running image \"{image}\"): {action}"),
        alert_type: if matches!(action, "oom" | "kill") {
            AlertType::Error
        } else {
            AlertType::Info
        },
        priority: Priority::Normal,
        aggregation_key: Some(format!("docker:{id}")),
        source_type_name: Some("docker".to_owned()),
        tags: event_tags,
        host: lifecycle.hostname.clone(),
        timestamp,
    });
    if action == "die" {
        let code: Option<i64> = attributes.get("exitCode").and_then(|c| c.parse().ok());
        let (status, message) = match code {
            Some(code) if OK_EXIT_CODES.contains(&code) => {
                (Status::Ok, format!("Container {name} exited with {code}"))
            }
            Some(code) => (
                Status::Critical,
                format!("Container {name} exited with {code}"),
            ),
            None => (
                Status::Unknown,
                format!("Container {name} exited; Docker gave no exit code"),
            ),
        };
        tags.sort();
        report.service_checks.push(ServiceCheck {
            name: "docker.exit".to_owned(),
            status,
            message,
            tags,
            host: lifecycle.hostname.clone(),
            timestamp: timestamp as f64,
        });
    }
    Some(report)
}

/// One container as the daemon lists it (running or not).
pub(crate) struct Listed {
    pub(crate) image: String,
    pub(crate) running: bool,
}

/// `docker.containers.running` and `.stopped` per image, and `docker.images.available`.
pub(crate) fn counts_report(
    containers: &[Listed],
    images: usize,
    lifecycle: &Lifecycle,
) -> RunReport {
    let mut per_image: BTreeMap<Vec<String>, (u64, u64)> = BTreeMap::new();
    for container in containers {
        let counts = per_image.entry(image_tags(&container.image)).or_default();
        if container.running {
            counts.0 += 1;
        } else {
            counts.1 += 1;
        }
    }
    let timestamp = now_unix() as f64;
    let gauge = |name: &str, value: u64, tags: Vec<String>| MetricSample {
        name: name.to_owned(),
        kind: MetricType::Gauge,
        value: value as f64,
        tags,
        host: lifecycle.hostname.clone(),
        timestamp,
    };
    let mut report = report(COUNTS_INSTANCE_ID, ReportKind::Run);
    for (tags, (running, stopped)) in per_image {
        report
            .metrics
            .push(gauge("docker.containers.running", running, tags.clone()));
        report
            .metrics
            .push(gauge("docker.containers.stopped", stopped, tags));
    }
    report.metrics.push(gauge(
        "docker.containers.running.total",
        containers.iter().filter(|c| c.running).count() as u64,
        vec![],
    ));
    report.metrics.push(gauge(
        "docker.containers.stopped.total",
        containers.iter().filter(|c| !c.running).count() as u64,
        vec![],
    ));
    report
        .metrics
        .push(gauge("docker.images.available", images as u64, vec![]));
    report
}

/// Tags for a container the store never held.
fn fallback_tags(id: &str, name: &str, image: &str, cardinality: Cardinality) -> Vec<String> {
    let mut tags = if image.is_empty() {
        Vec::new()
    } else {
        image_tags(image)
    };
    if cardinality == Cardinality::High {
        tags.push(format!("container_id:{id}"));
        if !name.is_empty() {
            tags.push(format!("container_name:{name}"));
        }
    }
    tags.sort();
    tags
}

/// An empty report of `instance_id`, of `kind`.
fn report(instance_id: &str, kind: ReportKind) -> RunReport {
    RunReport {
        instance_id: instance_id.to_owned(),
        check: "docker".to_owned(),
        started: SystemTime::now(),
        duration: Duration::ZERO,
        metrics: Vec::new(),
        service_checks: Vec::new(),
        events: Vec::new(),
        warnings: Vec::new(),
        log_lines_suppressed: 0,
        error: None,
        kind,
    }
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use bollard::models::EventActor;

    use super::*;

    fn lifecycle() -> Lifecycle {
        Lifecycle {
            reports: tokio::sync::mpsc::channel(1).0,
            hostname: "host-a".to_owned(),
            cardinality: Cardinality::High,
            counts_every: None,
        }
    }

    fn message(action: &str, attributes: &[(&str, &str)]) -> EventMessage {
        EventMessage {
            action: Some(action.to_owned()),
            actor: Some(EventActor {
                id: Some("c0ffee".to_owned()),
                attributes: Some(
                    attributes
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect::<HashMap<_, _>>(),
                ),
            }),
            time: Some(1_700_000_000),
            ..Default::default()
        }
    }

    #[test]
    fn an_oom_is_an_error_event_with_the_containers_tags() {
        let report = event_report(
            &message("oom", &[("name", "web"), ("image", "redis:7")]),
            None,
            &lifecycle(),
        )
        .unwrap();
        let event = &report.events[0];
        assert_eq!(event.title, "Container c0ffee: oom");
        assert_eq!(event.alert_type, AlertType::Error);
        assert_eq!(event.aggregation_key.as_deref(), Some("docker:c0ffee"));
        assert_eq!(event.source_type_name.as_deref(), Some("docker"));
        assert_eq!(event.timestamp, 1_700_000_000);
        for tag in [
            "event_type:oom",
            "container_name:web",
            "container_id:c0ffee",
            "short_image:redis",
            "image_tag:7",
        ] {
            assert!(
                event.tags.iter().any(|t| t == tag),
                "{tag} in {:?}",
                event.tags
            );
        }
        assert!(report.service_checks.is_empty());
    }

    #[test]
    fn a_die_carries_its_exit_code_in_docker_exit() {
        for (code, status) in [
            ("0", Status::Ok),
            ("143", Status::Ok),
            ("137", Status::Critical),
        ] {
            let report = event_report(
                &message("die", &[("name", "job"), ("exitCode", code)]),
                None,
                &lifecycle(),
            )
            .unwrap();
            assert_eq!(report.events[0].alert_type, AlertType::Info);
            let check = &report.service_checks[0];
            assert_eq!((check.name.as_str(), check.status), ("docker.exit", status));
            assert_eq!(check.message, format!("Container job exited with {code}"));
        }
    }

    #[test]
    fn other_actions_are_not_reported() {
        assert!(event_report(&message("start", &[]), None, &lifecycle()).is_none());
    }

    #[test]
    fn counts_are_per_image_with_totals() {
        let listed = [
            Listed {
                image: "redis:7".to_owned(),
                running: true,
            },
            Listed {
                image: "redis:7".to_owned(),
                running: false,
            },
            Listed {
                image: "nginx".to_owned(),
                running: true,
            },
        ];
        let report = counts_report(&listed, 5, &lifecycle());
        let value = |name: &str, tag: &str| {
            report
                .metrics
                .iter()
                .find(|m| m.name == name && (tag.is_empty() || m.tags.iter().any(|t| t == tag)))
                .map(|m| m.value)
        };
        assert_eq!(
            value("docker.containers.running", "short_image:redis"),
            Some(1.0)
        );
        assert_eq!(
            value("docker.containers.stopped", "short_image:redis"),
            Some(1.0)
        );
        assert_eq!(
            value("docker.containers.stopped", "short_image:nginx"),
            Some(0.0)
        );
        assert_eq!(value("docker.containers.running.total", ""), Some(2.0));
        assert_eq!(value("docker.images.available", ""), Some(5.0));
    }
}
