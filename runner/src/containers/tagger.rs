//! The tagger: the tags a container's metrics carry.
//!
//! Tags follow the Datadog Agent's names and cardinalities, so dashboards and monitors carry
//! over:
//! - high: `container_id`, `container_name`;
//! - low: `image_name`, `short_image`, `image_tag`, `docker_image` (`name:tag`);
//! - unified service tags `env`, `service`, `version`, from the labels
//!   `com.datadoghq.tags.{env,service,version}`, else the `DD_ENV`/`DD_SERVICE`/`DD_VERSION`
//!   environment variables;
//! - the JSON list in the `com.datadoghq.ad.tags` label;
//! - labels and environment variables named in `container_labels_as_tags` /
//!   `container_env_as_tags` (a `*` in a name matches any run of characters, as the Agent's
//!   globs do).
//!
//! Which cardinality a consumer gets is configuration: `checks_tag_cardinality` for check
//! results, `dogstatsd_tag_cardinality` for DogStatsD metrics. Kennel defaults both to `high`,
//! where the Datadog Agent defaults to `low`: a per-container check or metric without
//! `container_name` cannot be told apart from its neighbours of the same image, and the
//! DogStatsD origin tag `container_id` was the point of identifying the sender. Users who pay
//! per custom-metric context set `low`.
//!
//! A malformed tag label (`com.datadoghq.ad.tags` that is not a JSON list of strings) is left
//! out, never stopping the container's other tags; autodiscovery reports it once, with the
//! container, among the configuration problems.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::Container;

/// Which of a container's tags a consumer gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cardinality {
    Low,
    /// Pod- and task-level tags; containers here have none, so this is `low`.
    Orchestrator,
    #[default]
    High,
}

/// The tagger's configuration (runner config keys of the same names).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct TaggerConfig {
    /// Label name (or glob) → tag name.
    pub(crate) container_labels_as_tags: BTreeMap<String, String>,
    /// Environment variable name (or glob) → tag name.
    pub(crate) container_env_as_tags: BTreeMap<String, String>,
}

/// A container's tags, by cardinality; each list sorted and without duplicates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ContainerTags {
    pub(crate) low: Vec<String>,
    pub(crate) high: Vec<String>,
}

impl ContainerTags {
    /// The tags a consumer at `cardinality` gets, sorted.
    pub(crate) fn at(&self, cardinality: Cardinality) -> Vec<String> {
        let mut tags = self.low.clone();
        if cardinality == Cardinality::High {
            tags.extend(self.high.iter().cloned());
            tags.sort();
        }
        tags
    }
}

/// The labels that carry unified service tags.
const SERVICE_TAG_LABELS: [(&str, &str, &str); 3] = [
    ("com.datadoghq.tags.env", "DD_ENV", "env"),
    ("com.datadoghq.tags.service", "DD_SERVICE", "service"),
    ("com.datadoghq.tags.version", "DD_VERSION", "version"),
];

/// The label holding extra tags, a JSON list.
pub(crate) const AD_TAGS_LABEL: &str = "com.datadoghq.ad.tags";

/// The tags of a container's image reference (`image_name`, `short_image`, `image_tag`,
/// `docker_image`), as the Agent's tagger gives them.
pub(crate) fn image_tags(image: &str) -> Vec<String> {
    let image = super::ImageName::parse(image);
    let mut tags = vec![
        format!("image_name:{}", image.long),
        format!("short_image:{}", image.short),
    ];
    match &image.tag {
        Some(tag) => {
            tags.push(format!("image_tag:{tag}"));
            tags.push(format!("docker_image:{}:{tag}", image.long));
        }
        None => tags.push(format!("docker_image:{}", image.long)),
    }
    tags.sort();
    tags
}

impl TaggerConfig {
    /// Whether the environment variable `name` is one the tagger reads (the store keeps only
    /// those).
    pub(crate) fn wants_env(&self, name: &str) -> bool {
        SERVICE_TAG_LABELS.iter().any(|(_, env, _)| *env == name)
            || self
                .container_env_as_tags
                .keys()
                .any(|glob| glob_match(glob, name))
    }

    /// The tags of `container` (whose `tags` field is ignored).
    pub(crate) fn tags(&self, container: &Container) -> ContainerTags {
        let mut low = BTreeSet::new();
        let mut high = BTreeSet::new();
        high.insert(format!("container_id:{}", container.id));
        high.insert(format!("container_name:{}", container.name));

        low.extend(image_tags(&container.image));

        for (label, env, tag) in SERVICE_TAG_LABELS {
            let value = container
                .labels
                .get(label)
                .or_else(|| container.env.get(env))
                .filter(|v| !v.is_empty());
            if let Some(value) = value {
                low.insert(format!("{tag}:{value}"));
            }
        }

        // A malformed label is left out here and reported (once) by autodiscovery.
        if let Ok(tags) = ad_tags(&container.labels) {
            low.extend(tags.into_iter().filter(|t| !t.is_empty()));
        }

        let mapped = |source: &BTreeMap<String, String>, globs: &BTreeMap<String, String>| {
            let mut tags = Vec::new();
            for (name, value) in source {
                for (glob, tag) in globs {
                    if glob_match(glob, name) && !value.is_empty() {
                        // A glob mapping to `%%name%%` names the tag after what matched.
                        let tag = tag.replace("%%name%%", &name.to_lowercase());
                        tags.push(format!("{tag}:{value}"));
                    }
                }
            }
            tags
        };
        low.extend(mapped(&container.labels, &self.container_labels_as_tags));
        low.extend(mapped(&container.env, &self.container_env_as_tags));

        ContainerTags {
            low: low.into_iter().collect(),
            high: high.into_iter().collect(),
        }
    }
}

/// The tags listed in a container's `com.datadoghq.ad.tags` label (none without one); an
/// error when the label is not a JSON list of strings.
pub(crate) fn ad_tags(labels: &BTreeMap<String, String>) -> Result<Vec<String>, serde_json::Error> {
    match labels.get(AD_TAGS_LABEL) {
        Some(json) => serde_json::from_str(json),
        None => Ok(Vec::new()),
    }
}

/// `*` matches any run of characters; everything else matches itself, ignoring ASCII case
/// (Docker label and variable names are matched case-insensitively by the Agent).
pub(crate) fn glob_match(glob: &str, name: &str) -> bool {
    fn go(glob: &[u8], name: &[u8]) -> bool {
        match glob.split_first() {
            None => name.is_empty(),
            Some((b'*', rest)) => (0..=name.len()).any(|skip| go(rest, &name[skip..])),
            Some((c, rest)) => name
                .split_first()
                .is_some_and(|(n, name)| n.eq_ignore_ascii_case(c) && go(rest, name)),
        }
    }
    go(glob.as_bytes(), name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container() -> Container {
        Container {
            id: "3f2a9c1b0d7e".repeat(5) + "abcd",
            name: "web".into(),
            image: "registry.example.com:5000/team/app:1.2".into(),
            labels: BTreeMap::from([
                ("com.datadoghq.tags.service".into(), "shop".into()),
                (AD_TAGS_LABEL.into(), r#"["team:core","tier:front"]"#.into()),
                ("org.opencontainers.image.revision".into(), "abc123".into()),
            ]),
            env: BTreeMap::from([
                ("DD_ENV".into(), "prod".into()),
                ("DD_SERVICE".into(), "ignored".into()),
                ("REGION".into(), "eu".into()),
            ]),
            hostname: "web".into(),
            networks: BTreeMap::new(),
            ports: Vec::new(),
            pid: 42,
            cgroup: None,
            health: None,
            tags: ContainerTags::default(),
        }
    }

    #[test]
    fn tags_follow_the_datadog_agent() {
        let config = TaggerConfig {
            container_labels_as_tags: BTreeMap::from([(
                "org.opencontainers.image.revision".into(),
                "git.commit.sha".into(),
            )]),
            container_env_as_tags: BTreeMap::from([("REG*".into(), "region".into())]),
        };
        let c = container();
        let tags = config.tags(&c);
        assert_eq!(
            tags.high,
            [
                format!("container_id:{}", c.id),
                "container_name:web".to_owned()
            ]
        );
        assert_eq!(
            tags.low,
            [
                "docker_image:registry.example.com:5000/team/app:1.2",
                "env:prod",
                "git.commit.sha:abc123",
                "image_name:registry.example.com:5000/team/app",
                "image_tag:1.2",
                "region:eu",
                "service:shop",
                "short_image:app",
                "team:core",
                "tier:front",
            ]
        );
        assert_eq!(tags.at(Cardinality::Low), tags.low);
        assert_eq!(tags.at(Cardinality::High).len(), 12);
        assert!(config.wants_env("REGION"));
        assert!(config.wants_env("DD_VERSION"));
        assert!(!config.wants_env("AWS_SECRET_ACCESS_KEY"));
    }

    #[test]
    fn malformed_tags_label_keeps_the_other_tags() {
        let mut c = container();
        c.labels.insert(AD_TAGS_LABEL.into(), "team:core".into());
        let tags = TaggerConfig::default().tags(&c);
        assert!(tags.low.contains(&"service:shop".to_owned()));
        assert!(!tags.low.iter().any(|t| t.starts_with("team")));
    }

    #[test]
    fn globs_match_runs_of_characters() {
        assert!(glob_match("*", "anything"));
        assert!(glob_match("com.example.*", "com.example.team"));
        assert!(glob_match("DD_*_NAME", "dd_app_name"));
        assert!(!glob_match("com.example.*", "org.example.team"));
        assert!(!glob_match("a", "ab"));
    }
}
