//! Autodiscovery: which check instances run, from conf.d files and the running containers.
//!
//! Three sources feed one reconciliation, owned by one task ([`Discovery::run`]):
//! - conf.d (re)loads from the [`watch`]er: every file's plain instances are scheduled as they
//!   are, its templates (`ad_identifiers`) are kept for matching containers;
//! - container events from the container store: each running container's templates, from its
//!   labels and from the conf.d templates whose `ad_identifiers` match it, are resolved against
//!   it ([`template`]), merged with its tags, and scheduled; when it stops they are unscheduled;
//! - both, when a conf.d template changes: every container is resolved again.
//!
//! Reconciliation is by digest, as in the Datadog Agent: an instance's id is the digest of its
//! check, resolved config (container tags included) and `init_config`, so an instance whose
//! resolved config did not change keeps its id, and with it its schedule, its rate state and
//! its stats, across reloads and container events. Each source (a file, a container) remembers
//! the ids it asked for; an id runs while at least one source asks for it, so two files or two
//! containers that resolve to the very same instance run it once.
//!
//! Instances from a container's labels are admitted only within [`labels`]' bounds (where
//! they may go, what paths they may name, how many, for how long), since labels are written
//! by whoever starts a container; the scheduler bounds the runners they hold.
//!
//! A broken file is reported (file and line) and its last good config keeps running until the
//! file is fixed or removed. A template that cannot be resolved against a container (a
//! variable with no value) is reported with the container, the check and the variable, and
//! that instance is not scheduled; the container's other templates are. Everything reported is
//! kept in [`Problems`], which `/status` and `runner status` show, and cleared once fixed.

pub mod labels;
pub mod plugins;
pub use kennel_parsers::autodiscovery as template;
pub(crate) mod watch;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::check::Instance;
use crate::config::confd::{self, CheckConfig, InstanceParts, Loaded};
use crate::containers::{Cardinality, Container, ContainerEvent, tagger};
use crate::plugin::{Plugin, PluginHost};
use crate::scheduler::{Scheduler, StatsView};
use plugins::PluginChange;
use template::{EnvPolicy, Resolver, Template, TemplateOrigin};

/// Problems with the configuration, by what they are about, shared with the status API.
#[derive(Clone, Default)]
pub struct Problems(Arc<RwLock<BTreeMap<String, String>>>);

impl Problems {
    /// Every current problem, ordered by what it is about.
    pub fn list(&self) -> Vec<String> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn set(&self, key: String, message: String) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, message);
    }

    fn clear(&self, key: &str) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    fn keys_with_prefix(&self, prefix: &str) -> std::collections::HashSet<String> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .filter(|key| key.starts_with(prefix))
            .cloned()
            .collect()
    }

    fn clear_prefix(&self, prefix: &str) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|key, _| !key.starts_with(prefix));
    }
}

/// How templates are resolved and instances built.
#[derive(Clone)]
pub struct DiscoveryConfig {
    /// The runner's hostname, for `%%hostname%%`'s fallback and messages.
    pub hostname: String,
    /// Which of the runner's environment variables `%%env_<VAR>%%` may read.
    pub env: Arc<EnvPolicy>,
    /// Which container tags check instances get (`checks_tag_cardinality`).
    pub cardinality: Cardinality,
    /// The deadline of instances that set no `timeout`.
    pub default_timeout: Duration,
    /// What instances from containers' labels may reach and hold.
    pub labels: labels::LabelChecksConfig,
}

/// Where instances come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Source {
    File(PathBuf),
    Container(String),
}

/// The reconciliation state, and the scheduler it drives.
pub struct Discovery {
    config: DiscoveryConfig,
    host: Arc<PluginHost>,
    scheduler: Scheduler,
    problems: Problems,
    /// The last good config of every file, by path.
    files: BTreeMap<PathBuf, CheckConfig>,
    containers: BTreeMap<String, Arc<Container>>,
    /// The instance ids each source asks for.
    sources: HashMap<Source, Vec<String>>,
    /// How many sources ask for each scheduled instance.
    wanted: HashMap<String, usize>,
    /// Plugins loaded in this reconciliation, by check (dropped at each conf.d reload, so that
    /// a plugin that failed to load is tried again). The plugin a check's instances run is
    /// the scheduler's, which changes only when its file does ([`Discovery::apply_plugin`]).
    plugins: HashMap<String, Result<Arc<Plugin>, String>>,
    /// Wanted instances whose plugin could not be loaded, tried again at each conf.d reload.
    pending: HashMap<String, Instance>,
}

impl Discovery {
    pub fn new(config: DiscoveryConfig, host: Arc<PluginHost>, scheduler: Scheduler) -> Self {
        Self {
            config,
            host,
            scheduler,
            problems: Problems::default(),
            files: BTreeMap::new(),
            containers: BTreeMap::new(),
            sources: HashMap::new(),
            wanted: HashMap::new(),
            plugins: HashMap::new(),
            pending: HashMap::new(),
        }
    }

    /// The problems found so far, kept up to date.
    pub fn problems(&self) -> Problems {
        self.problems.clone()
    }

    /// Every scheduled instance's stats.
    pub fn stats(&self) -> StatsView {
        self.scheduler.stats()
    }

    /// How many instances are wanted: scheduled, or waiting for their plugin.
    pub fn wanted(&self) -> usize {
        self.wanted.len()
    }

    /// Takes in a fresh load of the conf.d directory.
    pub fn apply_confd(&mut self, loaded: Loaded) {
        self.plugins.clear();
        self.problems.clear_prefix("plugin:");
        for (_, instance) in std::mem::take(&mut self.pending) {
            self.start(instance);
        }
        let mut next: BTreeMap<PathBuf, CheckConfig> = BTreeMap::new();
        let reported = self.problems.keys_with_prefix("file:");
        self.problems.clear_prefix("file:");
        for error in loaded.errors {
            let key = format!("file:{}", error.path.display());
            // The error is a file's, or an unreadable `<check>.d` directory's: what was good
            // under it keeps running.
            let good: Vec<&CheckConfig> = self
                .files
                .values()
                .filter(|c| c.path.starts_with(&error.path))
                .collect();
            let message = if good.is_empty() {
                error.to_string()
            } else {
                for config in good {
                    next.insert(config.path.clone(), config.clone());
                }
                format!("{error} (the last good version keeps running)")
            };
            // Logged when it appears, not again at every reload while it stays.
            if !reported.contains(&key) {
                tracing::error!(check = %error.check, "invalid check config: {message}");
            }
            self.problems.set(key, message);
        }
        for config in loaded.configs {
            next.insert(config.path.clone(), config);
        }

        let previous = std::mem::replace(&mut self.files, next);
        let templates_changed = !previous
            .values()
            .filter(|c| c.is_template())
            .eq(self.files.values().filter(|c| c.is_template()));
        for path in previous.keys() {
            if !self.files.contains_key(path) {
                tracing::info!(path = %path.display(), "config removed");
                self.replace(Source::File(path.clone()), Vec::new());
            }
        }
        let changed: Vec<CheckConfig> = self
            .files
            .iter()
            .filter(|(path, config)| previous.get(*path) != Some(config))
            .map(|(_, config)| config.clone())
            .collect();
        for config in changed {
            let instances = if config.is_template() {
                Vec::new()
            } else {
                confd::instances(&config, self.config.default_timeout)
            };
            self.replace(Source::File(config.path.clone()), instances);
        }
        if templates_changed {
            let containers: Vec<_> = self.containers.values().cloned().collect();
            for container in containers {
                self.resolve_container(&container);
            }
        }
    }

    /// Takes in a change of the running containers.
    pub(crate) fn apply_container(&mut self, event: ContainerEvent) {
        match event {
            ContainerEvent::Set(container) => {
                self.containers
                    .insert(container.id.clone(), container.clone());
                self.resolve_container(&container);
            }
            ContainerEvent::Unset(id) => {
                if self.containers.remove(&id).is_some() {
                    self.problems.clear_prefix(&format!("container:{id}:"));
                    self.replace(Source::Container(id), Vec::new());
                }
            }
        }
    }

    fn resolve_container(&mut self, container: &Container) {
        let file_templates: Vec<&CheckConfig> =
            self.files.values().filter(|c| c.is_template()).collect();
        let resolved = resolve_container(&self.config, container, &file_templates);
        let prefix = format!("container:{}:", container.id);
        let before = self.problems.keys_with_prefix(&prefix);
        self.problems.clear_prefix(&prefix);
        for problem in &resolved.problems {
            let key = format!("{prefix}{}:{}", problem.check, problem.message);
            // Said once, not again at every health change or re-resolution.
            if !before.contains(&key) {
                tracing::warn!(container = %container.display(), check = %problem.check, "{}", problem.message);
            }
            self.problems.set(
                key,
                format!("container {}: {}", container.display(), problem.message),
            );
        }
        self.replace(Source::Container(container.id.clone()), resolved.instances);
    }

    /// Makes `source` ask for exactly `instances`: new ones are scheduled, ones no source asks
    /// for any more unscheduled, the rest left running as they are.
    fn replace(&mut self, source: Source, mut instances: Vec<Instance>) {
        // A source asks for an instance once, however often it lists it (`[{}, {}]`), so the
        // counts stay one per source.
        let mut seen = std::collections::HashSet::new();
        instances.retain(|i| seen.insert(i.id.clone()));
        let ids: Vec<String> = instances.iter().map(|i| i.id.clone()).collect();
        let old = match ids.is_empty() {
            true => self.sources.remove(&source),
            false => self.sources.insert(source, ids.clone()),
        }
        .unwrap_or_default();
        for instance in instances {
            if old.contains(&instance.id) {
                continue;
            }
            let count = self.wanted.entry(instance.id.clone()).or_insert(0);
            *count += 1;
            if *count == 1 {
                self.start(instance);
            }
        }
        for id in old {
            if ids.contains(&id) {
                continue;
            }
            if let Some(count) = self.wanted.get_mut(&id) {
                *count -= 1;
                if *count == 0 {
                    self.wanted.remove(&id);
                    self.scheduler.unschedule(&id);
                    if let Some(instance) = self.pending.remove(&id)
                        && !self.pending.values().any(|p| p.check == instance.check)
                    {
                        self.problems.clear(&format!("plugin:{}", instance.check));
                    }
                }
            }
        }
    }

    fn start(&mut self, instance: Instance) {
        let check = instance.check.clone();
        let (host, scheduler) = (&self.host, &self.scheduler);
        // A check's instances all run one version: the one running already, if any.
        let plugin = self.plugins.entry(check.clone()).or_insert_with(|| {
            scheduler
                .plugin_of(&check)
                .map_or_else(|| host.load(&check).map_err(|e| e.to_string()), Ok)
        });
        match plugin {
            Ok(plugin) => {
                self.problems.clear(&format!("plugin:{check}"));
                self.scheduler.schedule(instance, plugin.clone());
            }
            Err(error) => {
                // Still wanted: it starts when a later conf.d reload finds the plugin, and is
                // reported until then.
                tracing::error!(check = %check, source = %instance.source, "{error}");
                self.problems.set(format!("plugin:{check}"), error.clone());
                self.pending.insert(instance.id.clone(), instance);
            }
        }
    }

    /// Takes in a plugin file that changed (see [`plugins`]): a version that loads replaces
    /// the one the check's instances run, from their next run, and starts those that were
    /// waiting for it; one that does not load replaces nothing, and is reported until a good
    /// version is saved.
    pub fn apply_plugin(&mut self, change: PluginChange) {
        let PluginChange { check, loaded } = change;
        let key = format!("plugin_file:{check}");
        let running = self.scheduler.plugin_of(&check);
        let waiting = self.pending.values().any(|i| i.check == check);
        match loaded {
            Ok(plugin) => {
                self.problems.clear(&key);
                if running.as_ref().is_some_and(|r| r.digest == plugin.digest) {
                    return;
                }
                self.plugins.insert(check.clone(), Ok(plugin.clone()));
                if self.scheduler.set_plugin(&check, plugin.clone()) {
                    tracing::info!(check = %check, plugin = %short(&plugin.digest), "plugin file changed: its instances run the new version from their next run");
                }
                self.problems.clear(&format!("plugin:{check}"));
                let ids: Vec<String> = self
                    .pending
                    .iter()
                    .filter(|(_, i)| i.check == check)
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in ids {
                    if let Some(instance) = self.pending.remove(&id) {
                        self.start(instance);
                    }
                }
            }
            Err(error) => {
                let message = match &running {
                    Some(running) => format!(
                        "{error} (the version loaded before, sha256 {}, keeps running)",
                        short(&running.digest)
                    ),
                    None if waiting => error,
                    // A file no instance runs or waits for.
                    None => return,
                };
                tracing::error!(check = %check, "plugin file changed: {message}");
                self.problems.set(key, message);
            }
        }
    }

    /// Reconciles every change until `stop` fires, then stops every instance.
    pub(crate) async fn run(
        mut self,
        mut confd: mpsc::Receiver<Loaded>,
        mut containers: mpsc::Receiver<ContainerEvent>,
        mut plugins: mpsc::Receiver<PluginChange>,
        mut stop: oneshot::Receiver<()>,
    ) {
        let (mut confd_open, mut containers_open, mut plugins_open) = (true, true, true);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                loaded = confd.recv(), if confd_open => match loaded {
                    Some(loaded) => self.apply_confd(loaded),
                    None => confd_open = false,
                },
                change = plugins.recv(), if plugins_open => match change {
                    Some(change) => self.apply_plugin(change),
                    None => plugins_open = false,
                },
                event = containers.recv(), if containers_open => match event {
                    Some(event) => self.apply_container(event),
                    None => containers_open = false,
                },
            }
        }
        self.scheduler.shutdown().await;
    }
}

/// The first 12 hex digits of a plugin's SHA-256, enough to tell versions apart.
fn short(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
}

/// A template that could not become instances for a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResolveProblem {
    pub(crate) check: String,
    pub(crate) message: String,
}

/// What a container's templates resolved to.
#[derive(Debug, Default)]
pub(crate) struct Resolved {
    pub(crate) instances: Vec<Instance>,
    pub(crate) problems: Vec<ResolveProblem>,
}

/// Resolves `container`'s templates (its labels', and the conf.d templates matching it) into
/// instances tagged with its tags.
pub(crate) fn resolve_container(
    config: &DiscoveryConfig,
    container: &Container,
    file_templates: &[&CheckConfig],
) -> Resolved {
    let mut resolved = Resolved::default();
    let mut templates: Vec<Template> = match template::from_labels(&container.labels) {
        Ok(templates) => templates,
        Err(error) => {
            resolved.problems.push(ResolveProblem {
                check: "labels".to_owned(),
                message: error.to_string(),
            });
            Vec::new()
        }
    };
    if let Err(error) = tagger::ad_tags(&container.labels) {
        resolved.problems.push(ResolveProblem {
            check: "labels".to_owned(),
            message: format!(
                "label {} ignored, it is not a JSON list of strings: {error}",
                tagger::AD_TAGS_LABEL
            ),
        });
    }
    for file in file_templates {
        if container.matches(&file.ad_identifiers) {
            templates.push(Template {
                check: file.check.clone(),
                init_config: file.init_config.clone(),
                instances: file.instances.iter().map(|(raw, _)| raw.clone()).collect(),
                ignore_autodiscovery_tags: file.ignore_autodiscovery_tags,
                origin: TemplateOrigin::File(file.path.clone()),
            });
        }
    }
    let resolver = Resolver {
        hostname: &config.hostname,
        env: &config.env,
    };
    let container_tags = container.tags.at(config.cardinality);
    let mut from_labels = 0usize;
    for template in templates {
        let from_label = !matches!(template.origin, TemplateOrigin::File(_));
        let instances = match resolver.resolve(&template, &container.facts()) {
            Ok(instances) => instances,
            Err(error) => {
                resolved.problems.push(ResolveProblem {
                    check: template.check.clone(),
                    message: format!("{} not scheduled: {error}", origin_text(&template.origin)),
                });
                continue;
            }
        };
        let init_config: Arc<str> = instances.init_config.to_string().into();
        let parts = InstanceParts {
            check: &template.check,
            init_config: &init_config,
            init_service: confd::init_service(&instances.init_config),
            default_timeout: config.default_timeout,
        };
        for (index, mut raw) in instances.instances.into_iter().enumerate() {
            if !template.ignore_autodiscovery_tags {
                merge_tags(&mut raw, &container_tags);
            }
            // A label holds several checks: the source names which.
            let source = match &template.origin {
                TemplateOrigin::File(_) => format!(
                    "container:{} {}[{index}]",
                    container.display(),
                    origin_text(&template.origin)
                ),
                _ => format!(
                    "container:{} {}: {}[{index}]",
                    container.display(),
                    origin_text(&template.origin),
                    template.check
                ),
            };
            let mut instance = match confd::reserved_keys(&raw) {
                Ok(keys) => parts.build(source, &raw, &keys),
                Err(error) => {
                    resolved.problems.push(ResolveProblem {
                        check: template.check.clone(),
                        message: format!("{source} not scheduled: {error}"),
                    });
                    continue;
                }
            };
            if from_label {
                from_labels += 1;
                if from_labels > config.labels.max_instances {
                    resolved.problems.push(ResolveProblem {
                        check: template.check.clone(),
                        message: format!(
                            "{} not scheduled: the container's labels define more than {} \
                             instances (`label_checks.max_instances`)",
                            instance.source, config.labels.max_instances
                        ),
                    });
                    continue;
                }
                match config.labels.admit(container, &mut instance) {
                    Ok(note) => {
                        if let Some(note) = note {
                            resolved.problems.push(ResolveProblem {
                                check: template.check.clone(),
                                message: format!("{}: {note}", instance.source),
                            });
                        }
                    }
                    Err(refusal) => {
                        resolved.problems.push(ResolveProblem {
                            check: template.check.clone(),
                            message: format!("{} not scheduled: {refusal}", instance.source),
                        });
                        continue;
                    }
                }
                instance.label_container = Some(container.id.clone());
            }
            resolved.instances.push(instance);
        }
    }
    resolved
}

fn origin_text(origin: &TemplateOrigin) -> String {
    match origin {
        TemplateOrigin::LabelV2 => "label com.datadoghq.ad.checks".to_owned(),
        TemplateOrigin::LabelV1 => "labels com.datadoghq.ad.check_names".to_owned(),
        TemplateOrigin::File(path) => format!("template {}", path.display()),
    }
}

/// Adds the container's tags to an instance's `tags` (sorted, without duplicates), so they
/// are part of its resolved config and of its digest.
fn merge_tags(raw: &mut Value, container_tags: &[String]) {
    let Value::Object(map) = raw else { return };
    let mut tags: Vec<String> = match map.get("tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(tags)) if tags.iter().all(Value::is_string) => tags
            .iter()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect(),
        // Left as written, for the reserved keys' check to refuse with its message.
        Some(_) => return,
    };
    tags.extend(container_tags.iter().cloned());
    tags.sort();
    tags.dedup();
    map.insert(
        "tags".to_owned(),
        Value::Array(tags.into_iter().map(Value::String).collect()),
    );
}
