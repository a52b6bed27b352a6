//! The container store: what the runner knows about the containers running on this host.
//!
//! One source of container facts for every other part: autodiscovery resolves templates
//! against a [`Container`], checks and DogStatsD metrics get its [`tagger`] tags, and origin
//! detection maps a sender's container id back to it. The facts come from the Docker API
//! ([`docker`]), read-only: list, inspect and the event stream.
//!
//! A [`Container`] is immutable once built; a change (a rename, a health status) replaces it
//! whole, so a reader holding an `Arc<Container>` never sees half an update.

pub(crate) mod cgroup;
pub(crate) mod docker;
pub(crate) mod lifecycle;
pub(crate) mod store;
pub(crate) mod tagger;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use kennel_parsers::autodiscovery::ContainerFacts;

pub(crate) use store::ContainerStore;
pub use tagger::Cardinality;
pub(crate) use tagger::{ContainerTags, TaggerConfig};

/// One running container, as inspected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Container {
    /// The full 64-hex-digit id.
    pub(crate) id: String,
    /// Without Docker's leading `/`.
    pub(crate) name: String,
    /// The image as the container was created from it (`Config.Image`): `redis:7`,
    /// `registry.example.com:5000/team/app:1.2`, or an image id.
    pub(crate) image: String,
    /// The container's labels.
    pub(crate) labels: BTreeMap<String, String>,
    /// The environment variables the tagger reads (`DD_ENV`, `DD_SERVICE`, `DD_VERSION` and
    /// those named in `container_env_as_tags`); the rest are never kept.
    pub(crate) env: BTreeMap<String, String>,
    /// The container's own hostname (`Config.Hostname`).
    pub(crate) hostname: String,
    /// Network name → the container's address on it.
    pub(crate) networks: BTreeMap<String, IpAddr>,
    /// Exposed and published ports, ascending, ranges expanded, without duplicates.
    pub(crate) ports: Vec<Port>,
    /// The main process's pid in the host's pid namespace; 0 when not running.
    pub(crate) pid: u32,
    /// The container's cgroup, relative to the cgroup root (`/docker/<id>`,
    /// `/system.slice/docker-<id>.scope`), read from its main process: the unified (v2) one, else
    /// the memory controller's. `None` when procfs does not say.
    pub(crate) cgroup: Option<String>,
    /// `starting`, `healthy` or `unhealthy` for a container with a health check.
    pub(crate) health: Option<String>,
    /// The tags the tagger derived, by cardinality.
    pub(crate) tags: ContainerTags,
}

/// One container port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Port {
    pub(crate) number: u16,
    pub(crate) protocol: Protocol,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

/// What changed in the store.
#[derive(Debug, Clone)]
pub(crate) enum ContainerEvent {
    /// A container started, or changed (renamed, health): the new facts replace the old.
    Set(Arc<Container>),
    /// A container stopped or vanished.
    Unset(String),
}

impl Container {
    /// The short 12-digit id Docker shows.
    pub(crate) fn short_id(&self) -> &str {
        &self.id[..self.id.len().min(12)]
    }

    /// The image's name split as the Datadog Agent does, see [`ImageName`].
    pub(crate) fn image_name(&self) -> ImageName {
        ImageName::parse(&self.image)
    }

    /// The identifiers conf.d templates (`ad_identifiers`) match: the
    /// `com.datadoghq.ad.check.id` label when set, else `docker://<id>`, the long image name
    /// and the short image name.
    pub(crate) fn ad_identifiers(&self) -> Vec<String> {
        if let Some(id) = self.labels.get(AD_CHECK_ID_LABEL) {
            return vec![id.clone()];
        }
        let image = self.image_name();
        let mut ids = vec![format!("docker://{}", self.id), image.long.clone()];
        if image.short != image.long {
            ids.push(image.short);
        }
        ids
    }

    /// Whether a conf.d template with these `ad_identifiers` applies to this container.
    pub(crate) fn matches(&self, ad_identifiers: &[String]) -> bool {
        let ids = self.ad_identifiers();
        ad_identifiers.iter().any(|id| ids.contains(id))
    }

    /// What template variables read from this container.
    pub(crate) fn facts(&self) -> ContainerFacts<'_> {
        ContainerFacts {
            hostname: &self.hostname,
            networks: &self.networks,
            ports: self.ports.iter().map(|p| p.number).collect(),
            pid: self.pid,
        }
    }

    /// A name for messages: `web (3f2a9c1b0d7e)`.
    pub(crate) fn display(&self) -> String {
        format!("{} ({})", self.name, self.short_id())
    }
}

/// The label that overrides a container's autodiscovery identifiers.
pub(crate) const AD_CHECK_ID_LABEL: &str = "com.datadoghq.ad.check.id";

/// An image reference cut into the parts tags and template matching use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ImageName {
    /// Registry and path without the tag or digest: `registry.example.com:5000/team/app`;
    /// Docker Hub's implicit `docker.io/library/` prefix is dropped (`redis`).
    pub(crate) long: String,
    /// The last path component: `app`.
    pub(crate) short: String,
    /// The tag, `latest` when none is given (and none for a digest-only reference).
    pub(crate) tag: Option<String>,
}

impl ImageName {
    pub(crate) fn parse(reference: &str) -> Self {
        let (without_digest, has_digest) = match reference.split_once('@') {
            Some((name, _)) => (name, true),
            None => (reference, false),
        };
        // A tag follows the last `:` that comes after the last `/` (a registry port does not).
        let last_slash = without_digest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match without_digest[last_slash..].rfind(':') {
            Some(colon) => {
                let colon = last_slash + colon;
                (
                    &without_digest[..colon],
                    Some(without_digest[colon + 1..].to_owned()),
                )
            }
            None => (without_digest, (!has_digest).then(|| "latest".to_owned())),
        };
        let long = name
            .strip_prefix("docker.io/library/")
            .or_else(|| name.strip_prefix("docker.io/"))
            .or_else(|| name.strip_prefix("library/"))
            .unwrap_or(name)
            .to_owned();
        let short = long.rsplit('/').next().unwrap_or(&long).to_owned();
        Self { long, short, tag }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(reference: &str) -> (String, String, Option<String>) {
        let name = ImageName::parse(reference);
        (name.long, name.short, name.tag)
    }

    #[test]
    fn conf_d_templates_match_by_ad_identifier() {
        let mut web = Container {
            id: "3f2a9c1b0d7e".repeat(5) + "abcd",
            name: "web".to_owned(),
            image: "nginx:1.27".to_owned(),
            labels: BTreeMap::new(),
            env: BTreeMap::new(),
            hostname: "3f2a9c1b0d7e".to_owned(),
            networks: BTreeMap::new(),
            ports: Vec::new(),
            pid: 4242,
            cgroup: None,
            health: None,
            tags: ContainerTags::default(),
        };
        let ids = |ids: &[&str]| ids.iter().map(|i| (*i).to_owned()).collect::<Vec<_>>();
        assert!(web.matches(&ids(&["redis", "nginx"])));
        assert!(web.matches(&ids(&[&format!("docker://{}", web.id)])));
        assert!(!web.matches(&ids(&["redis"])));
        assert!(!web.matches(&[]));
        web.labels
            .insert(AD_CHECK_ID_LABEL.to_owned(), "my-web".to_owned());
        assert!(web.matches(&ids(&["my-web"])));
        assert!(!web.matches(&ids(&["nginx"])));
    }

    #[test]
    fn image_names_split_like_the_datadog_agent() {
        let s = |v: &str| v.to_owned();
        assert_eq!(image("redis"), (s("redis"), s("redis"), Some(s("latest"))));
        assert_eq!(image("redis:7"), (s("redis"), s("redis"), Some(s("7"))));
        assert_eq!(
            image("docker.io/library/redis:7"),
            (s("redis"), s("redis"), Some(s("7")))
        );
        assert_eq!(
            image("registry.example.com:5000/team/app:1.2"),
            (
                s("registry.example.com:5000/team/app"),
                s("app"),
                Some(s("1.2"))
            )
        );
        assert_eq!(
            image("registry.example.com:5000/team/app"),
            (
                s("registry.example.com:5000/team/app"),
                s("app"),
                Some(s("latest"))
            )
        );
        assert_eq!(
            image("kennel-test/httpd@sha256:abcd"),
            (s("kennel-test/httpd"), s("httpd"), None)
        );
    }
}
