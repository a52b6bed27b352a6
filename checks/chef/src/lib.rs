//! `chef`: Chef Infra client runs as Kennel metrics and events, read from the reports Chef's
//! `json_file` handler (`Chef::Handler::JsonFile`) leaves in a directory, one
//! `chef-run-report-<YYYYMMDDHHMMSS>.json` per run. It sends what DataDog's
//! `chef-handler-datadog` sends from inside the Chef run, without running anything in Chef but
//! its stock handler. Options are documented in `config.rs`.
//!
//! Each run lists the `*.json` files of `reports_dir`, oldest first (`listing.rs`), and reads the
//! ones not read before (`ledger.rs`). For each report, with the node's name as the hostname of
//! everything it sends:
//!
//! - count `chef.run.success` 1 if the run succeeded, else count `chef.run.failure` 1;
//! - gauges `chef.resources.total` (resources in the run), `chef.resources.updated` and
//!   `chef.resources.elapsed_time` (the run's `elapsed_time`, in seconds), unless the run failed
//!   before any resource ran (a compile-phase failure: `all_resources` null or empty);
//! - an event, source type `chef`, aggregation key the node's name, tagged
//!   `event_type:config_management.run`, timestamped with the report's `end_time`:
//!   - success: `Chef completed in N seconds on <node>`, alert type success, priority low;
//!   - failure: `Chef failed in N seconds on <node>`, alert type error, priority normal;
//!   - compile-phase failure: `Chef failed during compile phase on <node>`, error, normal;
//!
//!   N is the elapsed time rounded, or `less than 1 second` when that is 0 or 1. The text says
//!   `Chef updated X resources out of Y resources total.`, lists the updated resources in a
//!   `$$$` block (`- <type>[<name>] (<cookbook>::<recipe> line N)`; on a failure only the last
//!   5), then on a failure the exception and the backtrace, each in its own `$$$` block. A
//!   compile-phase failure's text is `Chef was unable to complete a run, an error during
//!   compilation may have occurred.`, followed by the exception and backtrace blocks.
//!
//! Design decisions:
//! - A report that cannot be read (invalid JSON, cut short, a required field missing, an I/O
//!   error) is a warning naming the file and what is wrong, is read again next run, and does not
//!   hold up the reports after it. A report that cannot be read and was modified in the last 2
//!   seconds is probably still being written: it is read again next run too, with a debug line
//!   instead of a warning. A report that can be read is sent at once, however recent: Chef
//!   writes it in one go, and JSON cut short never parses, so a complete parse means a complete
//!   file. A report still unreadable once it is older than `max_report_age` is given up on, with a
//!   last warning, so that a corrupt file does not warn forever.
//! - A directory that cannot be listed fails the run, with the fix: the check sees only the
//!   instance's `allowed_paths`, preopened read-only by the runner. So does an option of the
//!   wrong type, naming the key, and a key-value store that refuses a write (nothing more is
//!   sent in that run, so nothing is sent twice).
//! - At most `max_reports_per_run` new reports are read per run, so that a directory full of
//!   old reports cannot push a run past the runner's cap on submitted items, which would stop
//!   it and discard its work every time.
//!
//! Differences from `chef-handler-datadog` (which runs inside Chef and reads `run_status`):
//! - It sends both `chef.run.success` and `chef.run.failure`, as counters of 0 or 1; this check
//!   sends only the one that happened, with 1.
//! - Its event text loses the `Chef updated X resources...` line whenever resources were
//!   updated (`update_resource_list` assigns the body instead of appending to it); this check
//!   keeps it.
//! - Its compile-phase event has no exception; this one adds the exception and backtrace the
//!   report has, which say what broke.
//! - Its event has `event_type: config_management.run` and `event_object: <node>`, fields
//!   Kennel's events lack: the node is the aggregation key, and the event type a tag.
//! - Its titles end with a space; these do not. Ruby rounds 1.4 seconds to `1 seconds`; this
//!   check says `less than 1 second`.
//! - Metrics are stamped when the check reads the report (Kennel's metrics carry no timestamp),
//!   at most a collection interval after Chef's run; the event keeps the run's end time.
//!
//! Missing: the handler's node tags (`env:`, `role:`, `tags:`) and per-resource
//! `chef.resources.convergence_time`; `notify_on_failure` handles (use a monitor); reports
//! written elsewhere than one directory (`Chef::Handler::JsonFile` has a single `path`).

#![forbid(unsafe_code)]

mod config;
mod ledger;
mod listing;
mod report;
mod timestamp;

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use kennel_sdk::{AlertType, Check, Ctx, Event, Metric, MetricType, Priority, export_check};

use config::Config;
use ledger::{Ledger, MAX_RETRIES};
use report::{Outcome, Report};

const RUN_SUCCESS: &str = "chef.run.success";
const RUN_FAILURE: &str = "chef.run.failure";
const RESOURCES_TOTAL: &str = "chef.resources.total";
const RESOURCES_UPDATED: &str = "chef.resources.updated";
const RESOURCES_ELAPSED_TIME: &str = "chef.resources.elapsed_time";
/// Datadog's `event_type`, as a tag.
const EVENT_TYPE_TAG: &str = "event_type:config_management.run";
const SOURCE_TYPE_NAME: &str = "chef";
/// How many of the updated resources, the last ones, a failure's event lists.
const FAILURE_RESOURCES_LISTED: usize = 5;
const COMPILE_FAILURE_TEXT: &str =
    "Chef was unable to complete a run, an error during compilation may have occurred.";
/// An unreadable report modified this recently is taken to be still being written.
const SETTLE: Duration = Duration::from_secs(2);

pub struct ChefCheck;

impl Check for ChefCheck {
    type Config = Config;

    fn run(cx: &mut Ctx, config: Config) -> kennel_sdk::Result {
        let dir = config.reports_dir.as_path();
        let files = listing::list(dir).map_err(|error| listing::unreadable_dir(dir, &error))?;
        let mut ledger = Ledger::load(cx);
        ledger.prune(cx, &files);

        let now = SystemTime::now();
        let mut budget = config.max_reports_per_run;
        let mut tally = Tally::default();
        for (at, file) in files.iter().enumerate() {
            let (new, retry) = (ledger.is_new(file), ledger.is_retry(file));
            if !new && !retry {
                continue;
            }
            let path = dir.join(&file.name);
            let modified = fs::metadata(&path).and_then(|m| m.modified()).ok();
            let age = modified.map(|modified| age(now, modified));
            if let (Some(max), Some(age)) = (config.max_report_age, age)
                && age > max.as_secs_f64()
            {
                if retry {
                    cx.warn(&format!(
                        "giving up on Chef report {}: it is still unreadable {} seconds after \
                         it was last modified, past `max_report_age`",
                        path.display(),
                        age.round()
                    ));
                    ledger.forget(cx, file);
                }
                if new {
                    ledger.advance(file);
                    tally.too_old += 1;
                }
                continue;
            }
            if new {
                if budget == 0 {
                    // The cursor must not pass this file: everything after it waits too (no
                    // retry sorts after a new file).
                    tally.left = files[at..].iter().filter(|f| ledger.is_new(f)).count();
                    break;
                }
                budget -= 1;
            }

            match fs::read(&path)
                .map_err(|error| format!("cannot be read: {error}"))
                .and_then(|bytes| Report::parse(&bytes))
            {
                Ok(report) => {
                    // Bookkeeping first: a report is sent only once it is recorded as sent.
                    ledger.forget(cx, file);
                    if new {
                        ledger.advance(file);
                        ledger
                            .save(cx)
                            .map_err(|error| not_recorded(&path, &error))?;
                    }
                    submit(cx, &report);
                    tally.sent += 1;
                }
                Err(reason) => {
                    tally.unreadable += 1;
                    let retried = !new
                        || ledger
                            .remember(cx, file)
                            .map_err(|error| not_remembered(&path, &error))?;
                    if new {
                        ledger.advance(file);
                    }
                    let settling = age.is_some_and(|age| age.abs() < SETTLE.as_secs_f64());
                    report_unreadable(cx, &path, &reason, settling, retried);
                }
            }
        }
        ledger.save(cx).map_err(|error| {
            format!(
                "cannot record in the key-value store which Chef reports in {} were read: \
                 {error}. The reports passed over or unreadable in this run are examined again \
                 next run",
                dir.display()
            )
        })?;
        tally.log(cx, &config);
        Ok(())
    }
}

export_check!(ChefCheck);

/// What one run did, for its log line.
#[derive(Default)]
struct Tally {
    sent: usize,
    unreadable: usize,
    too_old: usize,
    /// New reports beyond `max_reports_per_run`.
    left: usize,
}

impl Tally {
    fn log(&self, cx: &mut Ctx, config: &Config) {
        let mut line = format!(
            "sent {} Chef reports from {}",
            self.sent,
            config.reports_dir.display()
        );
        if self.unreadable > 0 {
            line.push_str(&format!("; {} unreadable", self.unreadable));
        }
        if self.too_old > 0 {
            line.push_str(&format!(
                "; passed over {} older than `max_report_age`",
                self.too_old
            ));
        }
        if self.left > 0 {
            line.push_str(&format!(
                "; {} more wait for the next run (`max_reports_per_run`: {})",
                self.left, config.max_reports_per_run
            ));
            cx.info(&line);
        } else {
            cx.debug(&line);
        }
    }
}

/// Seconds from `modified` to `now`, negative for a modification time in the future.
fn age(now: SystemTime, modified: SystemTime) -> f64 {
    match now.duration_since(modified) {
        Ok(age) => age.as_secs_f64(),
        Err(ahead) => -ahead.duration().as_secs_f64(),
    }
}

fn not_recorded(path: &Path, error: &str) -> String {
    format!(
        "cannot record in the key-value store that Chef report {} was read: {error}. It was not \
         sent, and is read again next run",
        path.display()
    )
}

fn not_remembered(path: &Path, error: &str) -> String {
    format!(
        "cannot record in the key-value store that Chef report {} is to be read again: {error}",
        path.display()
    )
}

fn report_unreadable(cx: &mut Ctx, path: &Path, reason: &str, settling: bool, retried: bool) {
    let path = path.display();
    if !retried {
        cx.warn(&format!(
            "skipping Chef report {path}: {reason}. It will not be read again: {MAX_RETRIES} \
             unreadable reports are waiting to be read again already; fix or remove them"
        ));
    } else if settling {
        cx.debug(&format!(
            "Chef report {path} is not complete yet ({reason}); it is read again next run"
        ));
    } else {
        cx.warn(&format!(
            "skipping Chef report {path}: {reason}; it is read again next run"
        ));
    }
}

/// Sends what one report says: its run's count, gauges and event.
fn submit(cx: &mut Ctx, report: &Report) {
    let metric = |name: &str, kind, value| Metric {
        name: name.to_owned(),
        kind,
        value,
        tags: Vec::new(),
        hostname: Some(report.node.clone()),
    };
    let run = if report.succeeded() {
        RUN_SUCCESS
    } else {
        RUN_FAILURE
    };
    cx.metric(metric(run, MetricType::Count, 1.0));
    if let Outcome::Success { elapsed } | Outcome::ConvergeFailure { elapsed } = report.outcome {
        let total = report.total_resources as f64;
        let updated = report.updated_resources.len() as f64;
        cx.metric(metric(RESOURCES_TOTAL, MetricType::Gauge, total));
        cx.metric(metric(RESOURCES_UPDATED, MetricType::Gauge, updated));
        cx.metric(metric(RESOURCES_ELAPSED_TIME, MetricType::Gauge, elapsed));
    }
    cx.event(event(report));
}

fn event(report: &Report) -> Event {
    let node = &report.node;
    let (title, alert_type, priority) = match report.outcome {
        Outcome::Success { elapsed } => (
            format!("Chef completed in {} on {node}", run_time(elapsed)),
            AlertType::Success,
            Priority::Low,
        ),
        Outcome::ConvergeFailure { elapsed } => (
            format!("Chef failed in {} on {node}", run_time(elapsed)),
            AlertType::Error,
            Priority::Normal,
        ),
        Outcome::CompileFailure => (
            format!("Chef failed during compile phase on {node}"),
            AlertType::Error,
            Priority::Normal,
        ),
    };
    Event {
        title,
        text: event_text(report),
        alert_type,
        priority,
        aggregation_key: Some(node.clone()),
        source_type_name: Some(SOURCE_TYPE_NAME.to_owned()),
        tags: vec![EVENT_TYPE_TAG.to_owned()],
        hostname: Some(node.clone()),
        timestamp: report.end_time,
    }
}

/// The event's text, laid out byte for byte as `chef-handler-datadog` lays it out.
fn event_text(report: &Report) -> String {
    let mut text = match report.outcome {
        Outcome::CompileFailure => COMPILE_FAILURE_TEXT.to_owned(),
        Outcome::Success { .. } | Outcome::ConvergeFailure { .. } => {
            let updated = &report.updated_resources;
            let mut text = format!(
                "Chef updated {} resources out of {} resources total.",
                updated.len(),
                report.total_resources
            );
            if !updated.is_empty() {
                let listed = if report.succeeded() {
                    &updated[..]
                } else {
                    &updated[updated.len().saturating_sub(FAILURE_RESOURCES_LISTED)..]
                };
                text.push_str("\n$$$\n");
                for resource in listed {
                    match resource.defined_at() {
                        Some(at) => text.push_str(&format!("- {resource} ({at})\n")),
                        None => text.push_str(&format!("- {resource}\n")),
                    }
                }
                text.push_str("\n$$$\n");
            }
            text
        }
    };
    if !report.succeeded() {
        if let Some(exception) = &report.exception {
            text.push_str(&format!("\n$$$\n{exception}\n$$$\n"));
        }
        if !report.backtrace.is_empty() {
            text.push_str(&format!("\n$$$\n{}\n$$$\n", report.backtrace.join("\n")));
        }
    }
    text
}

/// `chef-handler-datadog`'s `pluralize(elapsed, 'second')`, with 1.0 to 1.5 seconds also reading
/// `less than 1 second` rather than Ruby's `1 seconds`.
fn run_time(seconds: f64) -> String {
    let rounded = seconds.round();
    if rounded <= 1.0 {
        "less than 1 second".to_owned()
    } else {
        format!("{rounded:.0} seconds")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use kennel_sdk::Level;
    use kennel_sdk::testing::{Harness, Recorded};
    use serde_json::json;

    use super::*;

    const SUCCESS: &str = include_str!("../tests/fixtures/success.json");
    const CONVERGE_FAILURE: &str = include_str!("../tests/fixtures/converge-failure.json");
    const COMPILE_FAILURE: &str = include_str!("../tests/fixtures/compile-failure.json");

    /// A directory of its own under the system's temp dir, removed when dropped.
    struct Reports(PathBuf);

    impl Reports {
        fn new() -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "kennel-chef-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&dir);
            if let Err(error) = fs::create_dir_all(&dir) {
                panic!("cannot create {}: {error}", dir.display());
            }
            Self(dir)
        }

        fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }

        fn dir(&self) -> String {
            self.0.display().to_string()
        }

        /// Writes a report, modified a minute ago: settled, and well within a day.
        fn write(&self, name: &str, contents: &str) -> &Self {
            self.write_aged(name, contents, Duration::from_secs(60))
        }

        fn write_aged(&self, name: &str, contents: &str, age: Duration) -> &Self {
            let path = self.path(name);
            if let Err(error) = fs::write(&path, contents) {
                panic!("cannot write {}: {error}", path.display());
            }
            self.age(name, age)
        }

        fn age(&self, name: &str, age: Duration) -> &Self {
            let path = self.path(name);
            let set = fs::File::options()
                .write(true)
                .open(&path)
                .and_then(|file| file.set_modified(SystemTime::now() - age));
            if let Err(error) = set {
                panic!("cannot age {}: {error}", path.display());
            }
            self
        }

        fn remove(&self, name: &str) {
            if let Err(error) = fs::remove_file(self.path(name)) {
                panic!("cannot remove {name}: {error}");
            }
        }

        fn run(&self, kv: &BTreeMap<String, String>) -> Recorded {
            self.run_with(json!({}), kv)
        }

        /// Runs with `options` and this directory as `reports_dir`.
        fn run_with(
            &self,
            mut options: serde_json::Value,
            kv: &BTreeMap<String, String>,
        ) -> Recorded {
            options["reports_dir"] = json!(self.dir());
            Harness::new().kv(kv.clone()).run::<ChefCheck>(options)
        }
    }

    impl Drop for Reports {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn fresh() -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    fn ok(recorded: &Recorded) {
        if let Err(error) = &recorded.result {
            panic!("the run failed: {error}");
        }
    }

    /// `(name, kind, value, hostname)` of every metric, in order.
    fn metrics(recorded: &Recorded) -> Vec<(&str, MetricType, f64, Option<&str>)> {
        recorded
            .metrics
            .iter()
            .map(|m| (m.name.as_str(), m.kind, m.value, m.hostname.as_deref()))
            .collect()
    }

    fn titles(recorded: &Recorded) -> Vec<&str> {
        recorded.events.iter().map(|e| e.title.as_str()).collect()
    }

    fn only_event(recorded: &Recorded) -> &Event {
        assert_eq!(recorded.events.len(), 1, "{:?}", titles(recorded));
        &recorded.events[0]
    }

    /// A small report as Chef writes it, for the tests about files rather than content.
    fn report(node: &str, elapsed: f64) -> String {
        json!({
            "node": {"name": node, "chef_environment": "_default", "json_class": "Chef::Node",
                     "automatic": {"fqdn": node}, "chef_type": "node", "run_list": []},
            "success": true,
            "start_time": "2026-11-20 10:00:00 +0000",
            "end_time": "2026-11-20 10:00:10 +0000",
            "elapsed_time": elapsed,
            "all_resources": [{"json_class": "Chef::Resource::File",
                               "instance_vars": {"name": "/etc/motd", "updated": false}}],
            "updated_resources": [],
            "exception": null,
            "backtrace": null,
            "run_id": "00000000-0000-0000-0000-000000000000",
        })
        .to_string()
    }

    fn chef_name(stamp: &str) -> String {
        format!("chef-run-report-{stamp}.json")
    }

    #[test]
    fn success_sends_a_success_count_resource_gauges_and_a_low_priority_event() {
        let reports = Reports::new();
        reports.write(&chef_name("20261120100042"), SUCCESS);
        let recorded = reports.run(&fresh());
        ok(&recorded);
        let host = Some("web01.example.com");
        assert_eq!(
            metrics(&recorded),
            vec![
                (RUN_SUCCESS, MetricType::Count, 1.0, host),
                (RESOURCES_TOTAL, MetricType::Gauge, 6.0, host),
                (RESOURCES_UPDATED, MetricType::Gauge, 2.0, host),
                (RESOURCES_ELAPSED_TIME, MetricType::Gauge, 42.318557, host),
            ]
        );
        assert!(recorded.metrics.iter().all(|m| m.tags.is_empty()));
        assert_eq!(
            only_event(&recorded),
            &Event {
                title: "Chef completed in 42 seconds on web01.example.com".to_owned(),
                text: "Chef updated 2 resources out of 6 resources total.\n$$$\n\
                       - template[/etc/nginx/nginx.conf] (nginx::default line 12)\n\
                       - service[nginx] (nginx::default line 30)\n\n$$$\n"
                    .to_owned(),
                alert_type: AlertType::Success,
                priority: Priority::Low,
                aggregation_key: Some("web01.example.com".to_owned()),
                source_type_name: Some("chef".to_owned()),
                tags: vec!["event_type:config_management.run".to_owned()],
                hostname: Some("web01.example.com".to_owned()),
                // 2026-11-20 10:00:42 +0000
                timestamp: Some(1_795_168_842),
            }
        );
        assert!(recorded.warnings().is_empty(), "{:?}", recorded.logs);
    }

    #[test]
    fn converge_failure_lists_the_last_five_updated_resources_then_exception_and_backtrace() {
        let reports = Reports::new();
        reports.write(&chef_name("20261120113127"), CONVERGE_FAILURE);
        let recorded = reports.run(&fresh());
        ok(&recorded);
        let host = Some("db01.example.com");
        assert_eq!(
            metrics(&recorded),
            vec![
                (RUN_FAILURE, MetricType::Count, 1.0, host),
                (RESOURCES_TOTAL, MetricType::Gauge, 10.0, host),
                (RESOURCES_UPDATED, MetricType::Gauge, 7.0, host),
                (RESOURCES_ELAPSED_TIME, MetricType::Gauge, 87.904112, host),
            ]
        );
        let event = only_event(&recorded);
        assert_eq!(event.title, "Chef failed in 88 seconds on db01.example.com");
        assert_eq!(
            (event.alert_type, event.priority),
            (AlertType::Error, Priority::Normal)
        );
        // apt_update[update] and apt_package[postgresql-16] were updated first: not listed.
        assert_eq!(
            event.text,
            "Chef updated 7 resources out of 10 resources total.\n$$$\n\
             - template[/etc/postgresql/16/main/postgresql.conf] (postgresql::server line 10)\n\
             - template[/etc/postgresql/16/main/pg_hba.conf] (postgresql::server line 18)\n\
             - linux_user[app] (app::deploy line 3)\n\
             - directory[/srv/app] (app::deploy line 9)\n\
             - git[/srv/app/current] (app::deploy line 15)\n\
             \n$$$\n\
             \n$$$\nMixlib::ShellOut::ShellCommandFailed: execute[migrate-db] (app::deploy line \
             58) had an error: Mixlib::ShellOut::ShellCommandFailed: Expected process to exit \
             with [0], but received '1'\n$$$\n\
             \n$$$\n\
             /opt/chef/embedded/lib/ruby/gems/3.1.0/gems/mixlib-shellout-3.2.8/lib/mixlib/shellout.rb:291:in `invalid!'\n\
             /opt/chef/embedded/lib/ruby/gems/3.1.0/gems/mixlib-shellout-3.2.8/lib/mixlib/shellout.rb:278:in `error!'\n\
             /opt/chef/embedded/lib/ruby/gems/3.1.0/gems/chef-18.5.0/lib/chef/provider/execute.rb:58:in `block in action_run'\n\
             /opt/chef/embedded/lib/ruby/gems/3.1.0/gems/chef-18.5.0/lib/chef/runner.rb:82:in `run_action'\n\
             /opt/chef/embedded/bin/chef-client:25:in `<main>'\
             \n$$$\n"
        );
        assert_eq!(event.hostname.as_deref(), host);
        assert_eq!(event.aggregation_key.as_deref(), host);
        assert_eq!(event.source_type_name.as_deref(), Some("chef"));
        assert_eq!(event.tags, ["event_type:config_management.run"]);
        // 2026-11-20 11:31:27 +0000
        assert_eq!(event.timestamp, Some(1_795_174_287));
    }

    #[test]
    fn compile_failure_sends_only_the_failure_count_and_a_compile_phase_event() {
        let reports = Reports::new();
        reports.write(&chef_name("20261120120003"), COMPILE_FAILURE);
        let recorded = reports.run(&fresh());
        ok(&recorded);
        assert_eq!(
            metrics(&recorded),
            vec![(
                RUN_FAILURE,
                MetricType::Count,
                1.0,
                Some("web02.example.com")
            )]
        );
        let event = only_event(&recorded);
        assert_eq!(
            event.title,
            "Chef failed during compile phase on web02.example.com"
        );
        assert_eq!(
            (event.alert_type, event.priority),
            (AlertType::Error, Priority::Normal)
        );
        assert_eq!(
            event.text,
            "Chef was unable to complete a run, an error during compilation may have occurred.\
             \n$$$\nNoMethodError: undefined method `[]' for nil:NilClass\n$$$\n\
             \n$$$\n\
             /var/chef/cache/cookbooks/nginx/recipes/default.rb:7:in `from_file'\n\
             /opt/chef/embedded/lib/ruby/gems/3.1.0/gems/chef-18.5.0/lib/chef/mixin/from_file.rb:30:in `instance_eval'\n\
             /opt/chef/embedded/lib/ruby/gems/3.1.0/gems/chef-18.5.0/lib/chef/run_context/cookbook_compiler.rb:211:in `load_recipe'\
             \n$$$\n"
        );
        assert_eq!(event.hostname.as_deref(), Some("web02.example.com"));
        // 2026-11-20 12:00:03 -0500
        assert_eq!(event.timestamp, Some(1_795_194_003));
    }

    #[test]
    fn compile_failure_with_empty_resource_lists_is_a_compile_failure_too() {
        let mut failed: serde_json::Value = match serde_json::from_str(COMPILE_FAILURE) {
            Ok(value) => value,
            Err(error) => panic!("{error}"),
        };
        failed["all_resources"] = json!([]);
        failed["updated_resources"] = json!([]);
        let reports = Reports::new();
        reports.write("chef-run-report-20261120120003.json", &failed.to_string());
        let recorded = reports.run(&fresh());
        assert_eq!(recorded.metrics.len(), 1);
        assert_eq!(
            titles(&recorded),
            ["Chef failed during compile phase on web02.example.com"]
        );
    }

    #[test]
    fn runs_of_a_second_or_less_read_less_than_1_second() {
        assert_eq!(run_time(0.0), "less than 1 second");
        assert_eq!(run_time(0.7), "less than 1 second");
        assert_eq!(run_time(1.0), "less than 1 second");
        assert_eq!(run_time(1.4), "less than 1 second");
        assert_eq!(run_time(1.5), "2 seconds");
        assert_eq!(run_time(59.5), "60 seconds");
        assert_eq!(run_time(3601.2), "3601 seconds");

        let reports = Reports::new();
        reports.write(
            &chef_name("20261120100000"),
            &report("fast.example.com", 0.62),
        );
        let recorded = reports.run(&fresh());
        assert_eq!(
            titles(&recorded),
            ["Chef completed in less than 1 second on fast.example.com"]
        );
        assert_eq!(
            recorded.events[0].text,
            "Chef updated 0 resources out of 1 resources total."
        );
    }

    #[test]
    fn a_failure_with_more_than_five_updates_is_the_only_one_cut_to_five() {
        // The same seven updates in a successful run are all listed.
        let mut success: serde_json::Value = match serde_json::from_str(CONVERGE_FAILURE) {
            Ok(value) => value,
            Err(error) => panic!("{error}"),
        };
        success["success"] = json!(true);
        success["exception"] = json!(null);
        success["backtrace"] = json!(null);
        let reports = Reports::new();
        reports.write(&chef_name("20261120113127"), &success.to_string());
        let recorded = reports.run(&fresh());
        let text = &only_event(&recorded).text;
        assert_eq!(text.matches("\n- ").count(), 7, "{text}");
        assert!(text.contains("- apt_update[update] (base::default line 3)\n"));
        assert!(text.contains("- apt_package[postgresql-16] (postgresql::server line 4)\n"));
        assert!(text.ends_with("- git[/srv/app/current] (app::deploy line 15)\n\n$$$\n"));
    }

    #[test]
    fn reports_are_sent_oldest_first() {
        let reports = Reports::new();
        reports
            .write(&chef_name("20261120120000"), &report("third", 3.0))
            .write(&chef_name("20261120100000"), &report("first", 3.0))
            .write(&chef_name("20261121090000"), &report("fourth", 3.0))
            // Not Chef's name: placed by its modification time, 2026-11-20 11:00:00 UTC.
            .write("aaa-manual-run.json", &report("second", 3.0));
        let manual = fs::File::options()
            .write(true)
            .open(reports.path("aaa-manual-run.json"))
            .and_then(|f| {
                f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_172_400))
            });
        assert!(manual.is_ok(), "{manual:?}");
        let recorded = reports.run_with(json!({"max_report_age": 0}), &fresh());
        ok(&recorded);
        assert_eq!(
            titles(&recorded),
            [
                "Chef completed in 3 seconds on first",
                "Chef completed in 3 seconds on second",
                "Chef completed in 3 seconds on third",
                "Chef completed in 3 seconds on fourth",
            ]
        );
        let hosts: Vec<_> = recorded
            .metrics
            .iter()
            .filter(|m| m.name == RUN_SUCCESS)
            .filter_map(|m| m.hostname.as_deref())
            .collect();
        assert_eq!(hosts, ["first", "second", "third", "fourth"]);
    }

    #[test]
    fn a_second_run_with_the_store_of_the_first_sends_nothing_again() {
        let reports = Reports::new();
        reports
            .write(&chef_name("20261120100042"), SUCCESS)
            .write(&chef_name("20261120113127"), CONVERGE_FAILURE)
            .write(&chef_name("20261120120003"), COMPILE_FAILURE);
        let first = reports.run(&fresh());
        ok(&first);
        assert_eq!(first.events.len(), 3);

        let second = reports.run(&first.kv);
        ok(&second);
        assert!(second.metrics.is_empty(), "{:?}", second.metrics);
        assert!(second.events.is_empty(), "{:?}", titles(&second));
        assert_eq!(second.kv, first.kv);
    }

    #[test]
    fn only_a_report_written_after_a_run_is_sent_by_the_next() {
        let reports = Reports::new();
        reports.write(&chef_name("20261120100042"), SUCCESS);
        let first = reports.run(&fresh());
        assert_eq!(first.events.len(), 1);

        reports.write(&chef_name("20261120113127"), CONVERGE_FAILURE);
        let second = reports.run(&first.kv);
        ok(&second);
        assert_eq!(
            titles(&second),
            ["Chef failed in 88 seconds on db01.example.com"]
        );
        assert_eq!(second.metrics.len(), 4);

        let third = reports.run(&second.kv);
        assert!(third.events.is_empty() && third.metrics.is_empty());
    }

    #[test]
    fn a_truncated_report_warns_naming_the_file_and_later_reports_are_still_sent() {
        let reports = Reports::new();
        let truncated = chef_name("20261120100042");
        reports
            .write(&truncated, &SUCCESS[..SUCCESS.len() / 2])
            .write(&chef_name("20261120113127"), CONVERGE_FAILURE);
        let recorded = reports.run(&fresh());
        ok(&recorded);
        assert_eq!(
            titles(&recorded),
            ["Chef failed in 88 seconds on db01.example.com"]
        );
        let warnings = recorded.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        let expected = format!(
            "skipping Chef report {}: ",
            reports.path(&truncated).display()
        );
        assert!(warnings[0].starts_with(&expected), "{}", warnings[0]);
        assert!(
            warnings[0].contains("EOF while parsing")
                && warnings[0].ends_with("it is read again next run"),
            "{}",
            warnings[0]
        );
        assert!(recorded.kv.contains_key(&format!("retry:{truncated}")));
    }

    #[test]
    fn a_truncated_report_is_read_again_every_run_and_sent_once_complete() {
        let reports = Reports::new();
        let name = chef_name("20261120100042");
        reports
            .write(&name, &SUCCESS[..SUCCESS.len() - 40])
            .write(&chef_name("20261120113127"), CONVERGE_FAILURE);
        let first = reports.run(&fresh());
        assert_eq!(first.events.len(), 1);

        let second = reports.run(&first.kv);
        assert!(second.events.is_empty());
        assert_eq!(second.warnings().len(), 1, "still unreadable: warned again");

        reports.write(&name, SUCCESS);
        let third = reports.run(&second.kv);
        ok(&third);
        assert_eq!(
            titles(&third),
            ["Chef completed in 42 seconds on web01.example.com"]
        );
        assert_eq!(third.metrics.len(), 4);
        assert!(third.warnings().is_empty());
        assert!(!third.kv.keys().any(|key| key.starts_with("retry:")));

        let fourth = reports.run(&third.kv);
        assert!(fourth.events.is_empty() && fourth.metrics.is_empty());
    }

    #[test]
    fn a_report_still_being_written_is_read_again_without_a_warning() {
        let reports = Reports::new();
        let name = chef_name("20261120100042");
        reports.write_aged(&name, "{\n  \"node\": {\n", Duration::ZERO);
        let first = reports.run(&fresh());
        ok(&first);
        assert!(first.events.is_empty());
        assert!(first.warnings().is_empty(), "{:?}", first.logs);
        assert!(
            first
                .logs
                .iter()
                .any(|(level, m)| *level == Level::Debug && m.contains("is not complete yet")),
            "{:?}",
            first.logs
        );

        reports.write_aged(&name, SUCCESS, Duration::ZERO);
        let second = reports.run(&first.kv);
        assert_eq!(
            titles(&second),
            ["Chef completed in 42 seconds on web01.example.com"]
        );
    }

    #[test]
    fn a_report_missing_a_required_field_warns_with_the_field() {
        let reports = Reports::new();
        let name = chef_name("20261120100042");
        reports.write(&name, &SUCCESS.replacen("\"success\": true,", "", 1));
        let recorded = reports.run(&fresh());
        ok(&recorded);
        assert!(recorded.events.is_empty() && recorded.metrics.is_empty());
        let warnings = recorded.warnings();
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains(&name), "{}", warnings[0]);
        assert!(
            warnings[0].contains("missing field `success`"),
            "{}",
            warnings[0]
        );
    }

    #[test]
    fn a_missing_reports_dir_fails_the_run_saying_how_to_grant_it() {
        let reports = Reports::new();
        let missing = reports.path("not-there");
        let recorded =
            Harness::new().run::<ChefCheck>(json!({"reports_dir": missing.display().to_string()}));
        let error = recorded.error();
        let dir = missing.display();
        assert!(
            error.starts_with(&format!("cannot read `reports_dir` {dir}: ")),
            "{error}"
        );
        assert!(
            error.contains(&format!("add `allowed_paths: [{dir}]`")),
            "{error}"
        );
        assert!(recorded.events.is_empty() && recorded.kv.is_empty());
    }

    #[test]
    fn a_reports_dir_that_is_a_file_fails_the_run_saying_how_to_grant_it() {
        let reports = Reports::new();
        reports.write("plain.json", "{}");
        let file = reports.path("plain.json").display().to_string();
        let recorded = Harness::new().run::<ChefCheck>(json!({"reports_dir": file}));
        let error = recorded.error();
        assert!(error.contains("`allowed_paths: ["), "{error}");
    }

    #[test]
    fn the_default_reports_dir_is_chef_s() {
        // Not granted in the sandbox, and absent here: the message names Chef's default path.
        let recorded = Harness::new().run::<ChefCheck>(json!({}));
        if let Err(error) = &recorded.result {
            assert!(
                error
                    .to_string()
                    .contains("add `allowed_paths: [/var/chef/reports]`"),
                "{error}"
            );
        }
    }

    #[test]
    fn wrong_options_fail_the_run_naming_the_key() {
        let recorded = Harness::new().run::<ChefCheck>(json!({"reports_dir": 42}));
        assert!(
            recorded
                .error()
                .starts_with("reports_dir: invalid type: integer `42`, expected the path"),
            "{}",
            recorded.error()
        );
        let reports = Reports::new();
        let recorded = reports.run_with(json!({"max_reports_per_run": -3}), &fresh());
        assert!(
            recorded
                .error()
                .starts_with("max_reports_per_run: must be a whole number of at least 1, got -3"),
            "{}",
            recorded.error()
        );
    }

    #[test]
    fn retry_entries_of_reports_removed_from_the_directory_are_pruned() {
        let reports = Reports::new();
        let broken = chef_name("20261120100000");
        reports
            .write(&broken, "{ not json")
            .write(&chef_name("20261120110000"), &report("n", 5.0));
        let first = reports.run(&fresh());
        assert!(first.kv.contains_key(&format!("retry:{broken}")));

        reports.remove(&broken);
        let second = reports.run(&first.kv);
        ok(&second);
        assert!(second.warnings().is_empty());
        assert_eq!(second.kv.keys().collect::<Vec<_>>(), ["cursor"]);
    }

    #[test]
    fn the_store_holds_one_key_however_many_reports_were_sent() {
        let reports = Reports::new();
        for minute in 0..150 {
            let stamp = format!("2026112010{:02}{:02}", minute / 60, minute % 60);
            reports.write(&chef_name(&stamp), &report(&format!("n{minute}"), 2.0));
        }
        let first = reports.run(&fresh());
        let second = reports.run(&first.kv);
        assert_eq!(first.events.len() + second.events.len(), 150);
        assert_eq!(
            second.kv,
            BTreeMap::from([(
                "cursor".to_owned(),
                format!("{} {}", 1_795_168_800 + 149, chef_name("20261120100229"))
            )])
        );
        let third = reports.run(&second.kv);
        assert!(third.events.is_empty());
    }

    #[test]
    fn max_reports_per_run_leaves_the_rest_for_the_next_run_in_order() {
        let reports = Reports::new();
        for (stamp, node) in [
            ("20261120100000", "a"),
            ("20261120110000", "b"),
            ("20261120120000", "c"),
        ] {
            reports.write(&chef_name(stamp), &report(node, 2.0));
        }
        let options = json!({"max_reports_per_run": 2});
        let first = reports.run_with(options.clone(), &fresh());
        ok(&first);
        let nodes = |r: &Recorded| {
            r.events
                .iter()
                .filter_map(|e| e.hostname.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(nodes(&first), ["a", "b"]);
        assert!(
            first.logs.iter().any(|(level, m)| *level == Level::Info
                && m.contains("1 more wait for the next run (`max_reports_per_run`: 2)")),
            "{:?}",
            first.logs
        );
        let second = reports.run_with(options, &first.kv);
        assert_eq!(nodes(&second), ["c"]);
    }

    #[test]
    fn reports_left_for_the_next_run_are_not_passed_over_with_old_ones_after_them() {
        let reports = Reports::new();
        reports
            .write(&chef_name("20261120100000"), &report("a", 2.0))
            .write(&chef_name("20261120110000"), &report("b", 2.0))
            // Named later, but last modified two days ago: passed over, after `b` is sent.
            .write_aged(
                &chef_name("20261120120000"),
                &report("c", 2.0),
                Duration::from_secs(2 * 86_400),
            );
        let options = json!({"max_reports_per_run": 1});
        let first = reports.run_with(options.clone(), &fresh());
        assert_eq!(titles(&first), ["Chef completed in 2 seconds on a"]);
        let second = reports.run_with(options.clone(), &first.kv);
        assert_eq!(titles(&second), ["Chef completed in 2 seconds on b"]);
        let third = reports.run_with(options, &second.kv);
        assert!(third.events.is_empty());
        assert_eq!(
            third.kv.get("cursor"),
            Some(&format!("1795176000 {}", chef_name("20261120120000")))
        );
    }

    #[test]
    fn reports_older_than_max_report_age_are_passed_over_once() {
        let reports = Reports::new();
        reports
            .write_aged(
                &chef_name("20261118100000"),
                &report("old", 2.0),
                Duration::from_secs(2 * 86_400),
            )
            .write(&chef_name("20261120100000"), &report("recent", 2.0));
        let first = reports.run(&fresh());
        ok(&first);
        assert_eq!(titles(&first), ["Chef completed in 2 seconds on recent"]);
        assert!(first.warnings().is_empty());

        // With no age limit, it stays passed over: the cursor is past it.
        let second = reports.run_with(json!({"max_report_age": 0}), &first.kv);
        assert!(second.events.is_empty());

        let unlimited = reports.run_with(json!({"max_report_age": 0}), &fresh());
        assert_eq!(unlimited.events.len(), 2);
    }

    #[test]
    fn an_unreadable_report_is_given_up_once_older_than_max_report_age() {
        let reports = Reports::new();
        let name = chef_name("20261120100000");
        reports.write(&name, "{\"node\":");
        let first = reports.run(&fresh());
        assert_eq!(first.warnings().len(), 1);

        reports.age(&name, Duration::from_secs(2 * 86_400));
        let second = reports.run(&first.kv);
        ok(&second);
        let warnings = second.warnings();
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].starts_with("giving up on Chef report"),
            "{}",
            warnings[0]
        );
        assert!(!second.kv.keys().any(|k| k.starts_with("retry:")));

        let third = reports.run(&second.kv);
        assert!(third.logs.iter().all(|(level, _)| *level != Level::Warn));
    }

    #[test]
    fn unreadable_reports_past_the_retry_limit_are_not_read_again() {
        let reports = Reports::new();
        for n in 0..=MAX_RETRIES {
            let stamp = format!("2026112010{:02}{:02}", n / 60, n % 60);
            reports.write(&chef_name(&stamp), "");
        }
        let recorded = reports.run_with(json!({"max_reports_per_run": 500}), &fresh());
        ok(&recorded);
        let retries = recorded
            .kv
            .keys()
            .filter(|k| k.starts_with("retry:"))
            .count();
        assert_eq!(retries, MAX_RETRIES);
        let warnings = recorded.warnings();
        assert_eq!(warnings.len(), MAX_RETRIES + 1);
        assert!(
            warnings[MAX_RETRIES].contains("It will not be read again"),
            "{}",
            warnings[MAX_RETRIES]
        );
    }

    #[test]
    fn other_files_and_directories_are_ignored() {
        let reports = Reports::new();
        reports
            .write("chef-client.log", "not a report")
            .write("README", "{}")
            .write(&chef_name("20261120100042"), SUCCESS);
        if let Err(error) = fs::create_dir(reports.path("archive.json")) {
            panic!("{error}");
        }
        let recorded = reports.run(&fresh());
        ok(&recorded);
        assert_eq!(recorded.events.len(), 1);
        assert!(recorded.warnings().is_empty(), "{:?}", recorded.logs);
    }

    #[test]
    fn an_end_time_that_cannot_be_read_leaves_the_event_time_to_the_runner() {
        let reports = Reports::new();
        let text = report("n", 2.0).replace("2026-11-20 10:00:10 +0000", "sometime");
        reports.write(&chef_name("20261120100000"), &text);
        let recorded = reports.run(&fresh());
        assert_eq!(only_event(&recorded).timestamp, None);
    }

    #[test]
    fn an_unreadable_cursor_in_the_store_is_dropped_with_a_warning() {
        let reports = Reports::new();
        reports.write(&chef_name("20261120100000"), &report("n", 2.0));
        let store = BTreeMap::from([("cursor".to_owned(), "garbage".to_owned())]);
        let recorded = reports.run(&store);
        ok(&recorded);
        assert_eq!(recorded.events.len(), 1);
        assert!(recorded.warnings()[0].contains("unreadable `cursor`"));
    }
}
