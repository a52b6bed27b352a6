//! Autodiscovery templates: check configurations written for "whatever container matches",
//! and their resolution against one container's [`ContainerFacts`].
//!
//! Templates come from two places, with the Datadog Agent's formats:
//! - a container's own labels ([`from_labels`]): v2, one JSON object in
//!   `com.datadoghq.ad.checks` keyed by check name (`name`, `init_config` defaulting to `{}`,
//!   `instances`, `logs`, `ignore_autodiscovery_tags`), which wins over v1 when present; v1,
//!   three parallel JSON arrays `com.datadoghq.ad.check_names`, `com.datadoghq.ad.init_configs`
//!   and `com.datadoghq.ad.instances` (all three required, of equal length; each init_configs
//!   element one object or a list of exactly one object; each instances element one object or
//!   a list of objects), with `com.datadoghq.ad.ignore_autodiscovery_tags` for all of them;
//! - conf.d files with `ad_identifiers`, which apply to a container when one of their
//!   identifiers is one of the container's (the runner's container store matches them).
//!
//! [`Resolver::resolve`] substitutes the template variables in every string value of
//! `init_config` and the instances (map keys are left alone, as in the Agent). A variable is
//! `%%name%%` or `%%name_param%%`:
//! - `%%host%%`: the container's address. With one network, that network's; with several,
//!   the `bridge` network's; otherwise an error listing the networks. `%%host_<network>%%`
//!   picks a network, and falls back to the same rule when the container is not on it (as
//!   the Agent does, so a conf.d template naming a Compose project's network still resolves
//!   for the same image run elsewhere). A container with no address at all (`--network host`)
//!   resolves to its hostname, as in the Agent: Docker gives a host-networked container the
//!   host's name. An IPv6 address is written `[addr]` in a URL (a string containing `://`,
//!   unless the template already put brackets around the variable), since `http://fe80::1:80`
//!   is not one.
//! - `%%port%%`: the highest exposed port (the last of the ascending list). `%%port_<n>%%`:
//!   the `n`th port of that list, counting from 0, as in the Agent. Users often write
//!   `%%port_8080%%` meaning port 8080; when `n` is not an index of the list but an exposed
//!   port's number, that port is taken. Note the trap this leaves, inherited from the Agent:
//!   on a container exposing a hundred ports, `%%port_80%%` is the 81st, not port 80. Port
//!   names (`%%port_http%%`) exist only in Kubernetes; here they are an error.
//! - `%%pid%%`: the container's main process, in the host's pid namespace.
//! - `%%hostname%%`: the container's hostname (not the runner's), for when its IP is not
//!   reachable. Docker sets one for every container; the runner's own hostname stands in only
//!   for a container reported with none.
//! - `%%env_<VAR>%%`: the runner's own environment variable `VAR` (not the container's), only
//!   if `VAR` is in the allowlist (`ad_allowed_env_vars`, matched exactly). Unlike the Agent,
//!   where an empty list allows every variable, an empty list allows none: labels are written
//!   by whoever can start a container, and `%%env_DD_API_KEY%%` in a label's `http_check` URL
//!   would send the runner's secrets to an address of the container author's choosing.
//!
//! A string that is exactly one variable whose value is an integer or `true`/`false` becomes a
//! JSON number or boolean, as in the Agent, so `"port": "%%port%%"` gives `"port": 5432`.
//! Kennel is stricter about what counts: only a canonical decimal integer (`8080`, not `0x1F`
//! or `007`, which the Agent would read as octal) and `true`/`false` in the Agent's casings
//! (`true`, `True`, `TRUE`), not the single letters `t`/`f`, so a password of `007` or `f`
//! stays a string.
//!
//! Any other variable (`%%extra_*%%`, `%%kube_*%%`, a typo) is an error naming it, as is a
//! variable with no value for this container; the template is then not scheduled for it. Text
//! between `%%` pairs is a variable only if it looks like one (letters, digits, `_`, `.`,
//! `-`), so `"100%% of %%port%%"` keeps its literal `%%`.
//!
//! Labels are outside input, written by whoever can start a container; two rules here keep a
//! container from granting itself more than its own checks, and the runner's label policy bounds
//! where the instances they define may go (the container's own addresses, by default), what
//! paths they may name, and what they may hold:
//! - a check name from a label is letters, digits, `_`, `.` and `-`: the name picks the plugin
//!   file (`<plugins>/<check>.wasm`), and a `/` would let a label load any `.wasm` file on the
//!   host;
//! - `%%env_*%%` reads only allowlisted variables (above).
//!
//! A label error refuses all the container's label templates: half a set, silently, is
//! harder to notice than none with a message. Errors name the label and what is wrong.
//!
//! Missing: logs configurations (`logs`, `com.datadoghq.ad.logs`) are accepted and ignored,
//! Kennel collects no logs; a v2 entry with only `logs` yields no template.
//! `check_tag_cardinality` is ignored (the runner-wide `checks_tag_cardinality` applies), and
//! so is the Rancher IP label.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use serde_json::{Map, Value};

/// What template variables read from a container.
#[derive(Debug, Clone)]
pub struct ContainerFacts<'a> {
    /// The container's own hostname; empty when it has none.
    pub hostname: &'a str,
    /// Network name → the container's address on it.
    pub networks: &'a BTreeMap<String, IpAddr>,
    /// Exposed and published port numbers, ascending (a number exposed for two protocols is
    /// listed twice, as Docker lists it).
    pub ports: Vec<u16>,
    /// The main process's pid in the host's pid namespace; 0 when not running.
    pub pid: u32,
}

/// The v2 label: a JSON object of check templates keyed by check name.
pub const CHECKS_LABEL: &str = "com.datadoghq.ad.checks";
/// A v1 label: the JSON array of check names.
pub const CHECK_NAMES_LABEL: &str = "com.datadoghq.ad.check_names";
/// A v1 label: the JSON array of `init_config` sections, one per check name.
pub const INIT_CONFIGS_LABEL: &str = "com.datadoghq.ad.init_configs";
/// A v1 label: the JSON array of instances (or lists of instances), one per check name.
pub const INSTANCES_LABEL: &str = "com.datadoghq.ad.instances";
/// A v1 label: `true` to keep the container's tags out of the instances' tags.
pub const IGNORE_AD_TAGS_LABEL: &str = "com.datadoghq.ad.ignore_autodiscovery_tags";

/// One check's template, before resolution.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub check: String,
    pub init_config: Value,
    /// Each one a JSON object.
    pub instances: Vec<Value>,
    /// Do not merge the container's tags into the instances' tags.
    pub ignore_autodiscovery_tags: bool,
    pub origin: TemplateOrigin,
}

/// Where a template was written.
#[derive(Debug, Clone, PartialEq)]
pub enum TemplateOrigin {
    /// The container's `com.datadoghq.ad.checks` label.
    LabelV2,
    /// The container's `com.datadoghq.ad.check_names`/`init_configs`/`instances` labels.
    LabelV1,
    /// A conf.d file with `ad_identifiers`.
    File(PathBuf),
}

/// Why a container's autodiscovery labels give no templates.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error("label `{label}`: invalid JSON: {message}")]
    InvalidJson {
        label: &'static str,
        message: String,
    },
    /// Valid JSON of the wrong shape.
    #[error("label `{label}`: {problem}")]
    Invalid {
        label: &'static str,
        problem: String,
    },
    /// One of the three v1 labels is set without the others.
    #[error(
        "label `{missing}` is missing: the labels `{CHECK_NAMES_LABEL}`, `{INIT_CONFIGS_LABEL}` \
         and `{INSTANCES_LABEL}` go together"
    )]
    Missing { missing: &'static str },
    #[error(
        "template entries don't all have the same length: {check_names} in \
         `{CHECK_NAMES_LABEL}`, {init_configs} in `{INIT_CONFIGS_LABEL}`, {instances} in \
         `{INSTANCES_LABEL}`; not using them"
    )]
    Lengths {
        check_names: usize,
        init_configs: usize,
        instances: usize,
    },
    #[error("label `{label}`: check `{check}`: instance {index} is not a JSON object")]
    InstanceNotObject {
        label: &'static str,
        check: String,
        index: usize,
    },
    #[error(
        "label `{label}`: invalid check name `{check}`: a check name is letters, digits, \
         `_`, `.` and `-`"
    )]
    CheckName { label: &'static str, check: String },
}

/// The templates in a container's labels, sorted by check name; none when it has no
/// autodiscovery labels. v2 (`com.datadoghq.ad.checks`) wins over v1 when both are set.
pub fn from_labels(labels: &BTreeMap<String, String>) -> Result<Vec<Template>, LabelError> {
    let mut templates = match labels.get(CHECKS_LABEL) {
        Some(json) => from_v2(json)?,
        None => from_v1(labels)?,
    };
    templates.sort_by(|a, b| a.check.cmp(&b.check));
    Ok(templates)
}

fn parse_json(label: &'static str, json: &str) -> Result<Value, LabelError> {
    serde_json::from_str(json).map_err(|e| LabelError::InvalidJson {
        label,
        message: e.to_string(),
    })
}

fn invalid(label: &'static str, problem: impl Into<String>) -> LabelError {
    LabelError::Invalid {
        label,
        problem: problem.into(),
    }
}

fn from_v2(json: &str) -> Result<Vec<Template>, LabelError> {
    let label = CHECKS_LABEL;
    let Value::Object(checks) = parse_json(label, json)? else {
        return Err(invalid(label, "expected a JSON object keyed by check name"));
    };
    let mut templates = Vec::new();
    for (key, entry) in checks {
        let Value::Object(mut entry) = entry else {
            return Err(invalid(
                label,
                format!("check `{key}`: expected a JSON object"),
            ));
        };
        let check = match entry.remove("name") {
            None | Some(Value::Null) => key,
            Some(Value::String(name)) if name.is_empty() => key,
            Some(Value::String(name)) => name,
            Some(_) => {
                return Err(invalid(
                    label,
                    format!("check `{key}`: `name` must be a string"),
                ));
            }
        };
        check_name(label, &check)?;
        let init_config = match entry.remove("init_config") {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(object @ Value::Object(_)) => object,
            Some(_) => {
                return Err(invalid(
                    label,
                    format!("check `{check}`: `init_config` must be a JSON object"),
                ));
            }
        };
        let ignore_autodiscovery_tags = match entry.remove("ignore_autodiscovery_tags") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(ignore)) => ignore,
            Some(_) => {
                return Err(invalid(
                    label,
                    format!("check `{check}`: `ignore_autodiscovery_tags` must be true or false"),
                ));
            }
        };
        let instances = match entry.remove("instances") {
            Some(Value::Array(instances)) => instances,
            None | Some(Value::Null) if entry.contains_key("logs") => continue,
            None | Some(Value::Null) => {
                return Err(invalid(
                    label,
                    format!("check `{check}` has no `instances`"),
                ));
            }
            Some(_) => {
                return Err(invalid(
                    label,
                    format!("check `{check}`: `instances` must be a JSON array"),
                ));
            }
        };
        if instances.is_empty() {
            continue;
        }
        for (index, instance) in instances.iter().enumerate() {
            check_instance(label, &check, index, instance)?;
        }
        templates.push(Template {
            check,
            init_config,
            instances,
            ignore_autodiscovery_tags,
            origin: TemplateOrigin::LabelV2,
        });
    }
    Ok(templates)
}

fn from_v1(labels: &BTreeMap<String, String>) -> Result<Vec<Template>, LabelError> {
    let names = labels.get(CHECK_NAMES_LABEL);
    let init_configs = labels.get(INIT_CONFIGS_LABEL);
    let instances = labels.get(INSTANCES_LABEL);
    let (names, init_configs, instances) = match (names, init_configs, instances) {
        (None, None, None) => return Ok(Vec::new()),
        (Some(names), Some(init_configs), Some(instances)) => (names, init_configs, instances),
        (None, _, _) => {
            return Err(LabelError::Missing {
                missing: CHECK_NAMES_LABEL,
            });
        }
        (_, None, _) => {
            return Err(LabelError::Missing {
                missing: INIT_CONFIGS_LABEL,
            });
        }
        (_, _, None) => {
            return Err(LabelError::Missing {
                missing: INSTANCES_LABEL,
            });
        }
    };

    let names: Vec<String> = match parse_json(CHECK_NAMES_LABEL, names)? {
        Value::Array(names) => names
            .into_iter()
            .map(|name| match name {
                Value::String(name) => Ok(name),
                _ => Err(invalid(
                    CHECK_NAMES_LABEL,
                    "expected a JSON array of strings",
                )),
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(invalid(
                CHECK_NAMES_LABEL,
                "expected a JSON array of check names",
            ));
        }
    };
    for name in &names {
        check_name(CHECK_NAMES_LABEL, name)?;
    }
    let Value::Array(init_configs) = parse_json(INIT_CONFIGS_LABEL, init_configs)? else {
        return Err(invalid(INIT_CONFIGS_LABEL, "expected a JSON array"));
    };
    let Value::Array(instances) = parse_json(INSTANCES_LABEL, instances)? else {
        return Err(invalid(INSTANCES_LABEL, "expected a JSON array"));
    };
    if names.len() != init_configs.len() || names.len() != instances.len() {
        return Err(LabelError::Lengths {
            check_names: names.len(),
            init_configs: init_configs.len(),
            instances: instances.len(),
        });
    }
    let ignore_autodiscovery_tags = match labels.get(IGNORE_AD_TAGS_LABEL).map(String::as_str) {
        None => false,
        // The spellings Go's strconv.ParseBool accepts, as the Agent reads this label with it.
        Some("true" | "True" | "TRUE" | "t" | "T" | "1") => true,
        Some("false" | "False" | "FALSE" | "f" | "F" | "0") => false,
        Some(other) => {
            return Err(invalid(
                IGNORE_AD_TAGS_LABEL,
                format!("`{other}` is not true or false"),
            ));
        }
    };

    let mut templates = Vec::with_capacity(names.len());
    for (position, ((check, init_config), instances)) in names
        .into_iter()
        .zip(init_configs)
        .zip(instances)
        .enumerate()
    {
        let init_config = match init_config {
            object @ Value::Object(_) => object,
            Value::Array(mut list) if list.len() == 1 && list[0].is_object() => list.remove(0),
            _ => {
                return Err(invalid(
                    INIT_CONFIGS_LABEL,
                    format!(
                        "element {position} (check `{check}`) must be one JSON object \
                         (or a list of exactly one)"
                    ),
                ));
            }
        };
        let instances = match instances {
            Value::Array(list) if list.is_empty() => {
                return Err(invalid(
                    INSTANCES_LABEL,
                    format!("element {position} (check `{check}`) is an empty list"),
                ));
            }
            Value::Array(list) => list,
            single => vec![single],
        };
        for (index, instance) in instances.iter().enumerate() {
            check_instance(INSTANCES_LABEL, &check, index, instance)?;
        }
        templates.push(Template {
            check,
            init_config,
            instances,
            ignore_autodiscovery_tags,
            origin: TemplateOrigin::LabelV1,
        });
    }
    Ok(templates)
}

/// A label's check name must not reach outside the plugins directory.
fn check_name(label: &'static str, check: &str) -> Result<(), LabelError> {
    let valid = !check.is_empty()
        && check
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    match valid {
        true => Ok(()),
        false => Err(LabelError::CheckName {
            label,
            check: check.to_owned(),
        }),
    }
}

fn check_instance(
    label: &'static str,
    check: &str,
    index: usize,
    instance: &Value,
) -> Result<(), LabelError> {
    if !instance.is_object() {
        return Err(LabelError::InstanceNotObject {
            label,
            check: check.to_owned(),
            index,
        });
    }
    Ok(())
}

/// Which of the runner's environment variables `%%env_<VAR>%%` may read, and how it reads
/// them.
pub struct EnvPolicy {
    allowed: BTreeSet<String>,
    lookup: Box<EnvLookup>,
}

/// How an [`EnvPolicy`] reads a variable.
type EnvLookup = dyn Fn(&str) -> Option<String> + Send + Sync;

impl EnvPolicy {
    /// Reads the runner's own environment, for the variables named in `allowed` only; an
    /// empty `allowed` allows none.
    pub fn new(allowed: impl IntoIterator<Item = String>) -> Self {
        Self::from_fn(allowed, |name| std::env::var(name).ok())
    }

    /// Reads variables through `lookup` (tests use a map, leaving the process alone).
    pub fn from_fn(
        allowed: impl IntoIterator<Item = String>,
        lookup: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        Self {
            allowed: allowed.into_iter().collect(),
            lookup: Box::new(lookup),
        }
    }

    /// Whether templates may read `name`.
    pub fn allows(&self, name: &str) -> bool {
        self.allowed.contains(name)
    }

    fn get(&self, name: &str) -> Result<String, String> {
        if name.is_empty() {
            return Err("the variable name is missing: write %%env_<VAR>%%".to_owned());
        }
        if !self.allows(name) {
            return Err(match self.allowed.is_empty() {
                true => format!(
                    "`{name}` is not allowed: `ad_allowed_env_vars` is empty, which allows none"
                ),
                false => format!("`{name}` is not in `ad_allowed_env_vars`"),
            });
        }
        (self.lookup)(name).ok_or_else(|| format!("the runner's environment has no `{name}`"))
    }
}

impl fmt::Debug for EnvPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnvPolicy")
            .field("allowed", &self.allowed)
            .finish_non_exhaustive()
    }
}

/// A template's sections with every variable substituted.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedTemplate {
    pub init_config: Value,
    pub instances: Vec<Value>,
}

/// A variable of a template that has no value for a container.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{check}: {variable} in {location}: {reason}")]
pub struct ResolveError {
    pub check: String,
    /// As written: `%%port%%`.
    pub variable: String,
    /// Where in the template: `instances[0].url`, `init_config.service`.
    pub location: String,
    pub reason: String,
}

/// Resolves templates against containers.
#[derive(Debug)]
pub struct Resolver<'a> {
    /// The runner's hostname: `%%hostname%%` of a container reported with no hostname.
    pub hostname: &'a str,
    pub env: &'a EnvPolicy,
}

impl Resolver<'_> {
    /// `template` with its variables substituted from `container`; the first variable with
    /// no value is the error.
    pub fn resolve(
        &self,
        template: &Template,
        container: &ContainerFacts<'_>,
    ) -> Result<ResolvedTemplate, ResolveError> {
        let mut walk = Walk {
            resolver: self,
            container,
            check: &template.check,
            location: "init_config".to_owned(),
        };
        let init_config = walk.value(&template.init_config)?;
        let mut instances = Vec::with_capacity(template.instances.len());
        for (index, instance) in template.instances.iter().enumerate() {
            walk.location = format!("instances[{index}]");
            instances.push(walk.value(instance)?);
        }
        Ok(ResolvedTemplate {
            init_config,
            instances,
        })
    }

    /// The value of one variable; `Err` is the reason it has none.
    fn variable(
        &self,
        var: &Var<'_>,
        container: &ContainerFacts<'_>,
    ) -> Result<Substitution, String> {
        let text = match (var.name, var.param) {
            ("host", network) => return host(container, network).map(Substitution::Host),
            ("port", param) => port(container, param)?.to_string(),
            ("pid", None) => match container.pid {
                0 => return Err("the container has no pid (it is not running)".to_owned()),
                pid => pid.to_string(),
            },
            ("hostname", None) => match container.hostname {
                "" => self.hostname.to_owned(),
                hostname => hostname.to_owned(),
            },
            ("pid" | "hostname", Some(_)) => {
                return Err(format!("%%{}%% takes no parameter", var.name));
            }
            ("env", name) => self.env.get(name.unwrap_or(""))?,
            ("extra" | "kube", _) => {
                return Err("Kubernetes and extra-config variables are not supported".to_owned());
            }
            _ => {
                return Err("unknown template variable; the variables are %%host%%, \
                            %%host_<network>%%, %%port%%, %%port_<n>%%, %%pid%%, %%hostname%% \
                            and %%env_<VAR>%%"
                    .to_owned());
            }
        };
        Ok(Substitution::Text(text))
    }
}

/// What a variable is replaced with.
enum Substitution {
    /// Kept apart, as an IPv6 address is written differently in a URL.
    Host(Host),
    Text(String),
}

/// The container's address for `%%host%%` (`network`: `%%host_<network>%%`).
fn host(container: &ContainerFacts<'_>, network: Option<&str>) -> Result<Host, String> {
    if let Some(ip) = network.and_then(|n| container.networks.get(n)) {
        return Ok(Host::Ip(*ip));
    }
    let not_on = match network {
        Some(network) => format!("the container is not on network `{network}`, and "),
        None => String::new(),
    };
    let mut networks = container.networks.iter();
    match (networks.next(), networks.next()) {
        (Some((_, ip)), None) => Ok(Host::Ip(*ip)),
        (None, _) if !container.hostname.is_empty() => {
            Ok(Host::Name(container.hostname.to_owned()))
        }
        (None, _) => Err(format!(
            "{not_on}the container has no IP address on any network, and no hostname"
        )),
        (Some(_), Some(_)) => match container.networks.get("bridge") {
            Some(ip) => Ok(Host::Ip(*ip)),
            None => Err(format!(
                "{not_on}not able to determine which network is reachable: the container is \
                 on {}, none of them `bridge`; pick one with %%host_<network>%%",
                container
                    .networks
                    .keys()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        },
    }
}

enum Host {
    Ip(IpAddr),
    Name(String),
}

impl Host {
    fn is_ipv6(&self) -> bool {
        matches!(self, Host::Ip(IpAddr::V6(_)))
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(ip) => ip.fmt(f),
            Host::Name(name) => f.write_str(name),
        }
    }
}

/// The port for `%%port%%` (`param`: `%%port_<n>%%`).
fn port(container: &ContainerFacts<'_>, param: Option<&str>) -> Result<u16, String> {
    let ports = &container.ports;
    let Some(highest) = ports.last() else {
        return Err("the container exposes no port".to_owned());
    };
    let Some(param) = param else {
        return Ok(*highest);
    };
    let listed = || {
        ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Ok(n) = param.parse::<usize>() else {
        return Err(format!(
            "port `{param}` not found: Docker ports have no names; write %%port%% (the \
             highest), an index into the exposed ports ({}) or a port number",
            listed()
        ));
    };
    if let Some(port) = ports.get(n) {
        return Ok(*port);
    }
    match ports.iter().find(|p| usize::from(**p) == n) {
        Some(port) => Ok(*port),
        None => Err(format!(
            "index {n} is too big for the {} exposed ports ({}), and none of them is port {n}",
            ports.len(),
            listed()
        )),
    }
}

/// One `%%name_param%%` occurrence in a string.
struct Var<'s> {
    /// Byte range of the whole `%%...%%`.
    start: usize,
    end: usize,
    name: &'s str,
    param: Option<&'s str>,
}

impl Var<'_> {
    fn text<'s>(&self, s: &'s str) -> &'s str {
        &s[self.start..self.end]
    }
}

/// The variables in `s`, in order. Text between two `%%` is a variable only if it is
/// non-empty and made of letters, digits, `_`, `.` and `-`, so a literal `%%` elsewhere
/// survives. The name runs to the first `_` after its first character, the parameter is the
/// rest (`%%host_my_net%%`: `host`, `my_net`), as in the Agent's pattern.
fn variables(s: &str) -> Vec<Var<'_>> {
    let mut vars = Vec::new();
    let mut from = 0;
    while let Some(open) = s[from..].find("%%").map(|i| from + i) {
        let body_start = open + 2;
        let Some(body_len) = s[body_start..].find("%%") else {
            break;
        };
        let body = &s[body_start..body_start + body_len];
        let is_var = !body.is_empty()
            && body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !is_var {
            // The closing `%%` may open the next variable.
            from = body_start + body_len;
            continue;
        }
        let (name, param) = match body[1..].find('_').map(|i| i + 1) {
            Some(split) if split + 1 < body.len() => (&body[..split], Some(&body[split + 1..])),
            _ => (body, None),
        };
        vars.push(Var {
            start: open,
            end: body_start + body_len + 2,
            name,
            param,
        });
        from = body_start + body_len + 2;
    }
    vars
}

/// A walk over one template section, tracking where it is for errors.
struct Walk<'r, 'a> {
    resolver: &'r Resolver<'a>,
    container: &'r ContainerFacts<'r>,
    check: &'r str,
    location: String,
}

impl Walk<'_, '_> {
    fn value(&mut self, value: &Value) -> Result<Value, ResolveError> {
        Ok(match value {
            Value::String(s) => self.string(s)?,
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (index, item) in items.iter().enumerate() {
                    let len = self.location.len();
                    self.location.push_str(&format!("[{index}]"));
                    out.push(self.value(item)?);
                    self.location.truncate(len);
                }
                Value::Array(out)
            }
            Value::Object(map) => {
                let mut out = Map::with_capacity(map.len());
                for (key, item) in map {
                    let len = self.location.len();
                    self.location.push('.');
                    self.location.push_str(key);
                    out.insert(key.clone(), self.value(item)?);
                    self.location.truncate(len);
                }
                Value::Object(out)
            }
            other => other.clone(),
        })
    }

    fn string(&self, s: &str) -> Result<Value, ResolveError> {
        let vars = variables(s);
        if vars.is_empty() {
            return Ok(Value::String(s.to_owned()));
        }
        let is_url = s.contains("://");
        let mut out = String::with_capacity(s.len());
        let mut copied = 0;
        for var in &vars {
            out.push_str(&s[copied..var.start]);
            copied = var.end;
            let error = |reason: String| ResolveError {
                check: self.check.to_owned(),
                variable: var.text(s).to_owned(),
                location: self.location.clone(),
                reason,
            };
            let bracketed = s[..var.start].ends_with('[');
            match self.resolver.variable(var, self.container).map_err(error)? {
                Substitution::Host(host) if host.is_ipv6() && is_url && !bracketed => {
                    out.push_str(&format!("[{host}]"));
                }
                Substitution::Host(host) => out.push_str(&host.to_string()),
                Substitution::Text(text) => out.push_str(&text),
            }
        }
        out.push_str(&s[copied..]);

        let whole = vars.len() == 1 && vars[0].start == 0 && vars[0].end == s.len();
        if whole && let Some(typed) = typed(&out) {
            return Ok(typed);
        }
        Ok(Value::String(out))
    }
}

/// A lone variable's value as a JSON integer or boolean, when it reads as one.
fn typed(value: &str) -> Option<Value> {
    if let Ok(n) = value.parse::<i64>()
        && n.to_string() == value
    {
        return Some(Value::from(n));
    }
    match value {
        "true" | "True" | "TRUE" => Some(Value::Bool(true)),
        "false" | "False" | "FALSE" => Some(Value::Bool(false)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::{Ipv4Addr, Ipv6Addr};

    use serde_json::json;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// The facts of a container, owned, for tests to change.
    struct Container {
        hostname: String,
        networks: BTreeMap<String, IpAddr>,
        ports: Vec<u16>,
        pid: u32,
    }

    impl Container {
        fn facts(&self) -> ContainerFacts<'_> {
            ContainerFacts {
                hostname: &self.hostname,
                networks: &self.networks,
                ports: self.ports.clone(),
                pid: self.pid,
            }
        }
    }

    fn container() -> Container {
        Container {
            hostname: "3f2a9c1b0d7e".to_owned(),
            networks: BTreeMap::from([(
                "bridge".to_owned(),
                IpAddr::V4(Ipv4Addr::new(172, 17, 0, 2)),
            )]),
            ports: vec![80, 443],
            pid: 4242,
        }
    }

    fn template(instance: Value) -> Template {
        Template {
            check: "http_check".to_owned(),
            init_config: json!({}),
            instances: vec![instance],
            ignore_autodiscovery_tags: false,
            origin: TemplateOrigin::LabelV2,
        }
    }

    fn env(allowed: &[&str], vars: &[(&str, &str)]) -> EnvPolicy {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        EnvPolicy::from_fn(
            allowed.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>(),
            move |name| vars.get(name).cloned(),
        )
    }

    /// The resolved first instance of a one-instance template.
    fn resolve_with(
        policy: &EnvPolicy,
        container: &Container,
        instance: Value,
    ) -> Result<Value, ResolveError> {
        let resolver = Resolver {
            hostname: "runner-host",
            env: policy,
        };
        let mut resolved = resolver.resolve(&template(instance), &container.facts())?;
        Ok(resolved.instances.remove(0))
    }

    fn resolve(container: &Container, instance: Value) -> Result<Value, ResolveError> {
        resolve_with(&env(&[], &[]), container, instance)
    }

    /// The substituted value of `text` alone in an instance.
    fn value_of(container: &Container, text: &str) -> Result<Value, ResolveError> {
        resolve(container, json!({ "v": text })).map(|i| i["v"].clone())
    }

    fn reason_of(container: &Container, text: &str) -> String {
        match value_of(container, text) {
            Ok(value) => panic!("{text} resolved to {value}"),
            Err(error) => error.reason,
        }
    }

    #[test]
    fn v2_label_parses_with_defaults() {
        let templates = from_labels(&labels(&[(
            CHECKS_LABEL,
            r#"{"redis": {"instances": [{"host": "%%host%%", "port": "%%port%%"}]},
                "apache": {"name": "http_check", "init_config": {"timeout": 3},
                           "instances": [{"url": "http://%%host%%/"}, {"url": "http://%%host%%/x"}],
                           "ignore_autodiscovery_tags": true}}"#,
        )]))
        .unwrap();
        assert_eq!(
            templates,
            vec![
                Template {
                    check: "http_check".to_owned(),
                    init_config: json!({"timeout": 3}),
                    instances: vec![
                        json!({"url": "http://%%host%%/"}),
                        json!({"url": "http://%%host%%/x"})
                    ],
                    ignore_autodiscovery_tags: true,
                    origin: TemplateOrigin::LabelV2,
                },
                Template {
                    check: "redis".to_owned(),
                    init_config: json!({}),
                    instances: vec![json!({"host": "%%host%%", "port": "%%port%%"})],
                    ignore_autodiscovery_tags: false,
                    origin: TemplateOrigin::LabelV2,
                },
            ]
        );
    }

    #[test]
    fn v2_entry_with_only_logs_gives_no_template() {
        let templates = from_labels(&labels(&[(
            CHECKS_LABEL,
            r#"{"apache": {"logs": [{"type": "file"}]}}"#,
        )]))
        .unwrap();
        assert!(templates.is_empty());
    }

    #[test]
    fn v2_entry_without_instances_is_an_error() {
        let error = from_labels(&labels(&[(
            CHECKS_LABEL,
            r#"{"redis": {"instance": [{}]}}"#,
        )]))
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "label `com.datadoghq.ad.checks`: check `redis` has no `instances`"
        );
    }

    #[test]
    fn v2_takes_precedence_over_v1() {
        let templates = from_labels(&labels(&[
            (
                CHECKS_LABEL,
                r#"{"redis": {"instances": [{"port": 6379}]}}"#,
            ),
            (CHECK_NAMES_LABEL, r#"["nginx"]"#),
            (INIT_CONFIGS_LABEL, "not even JSON"),
            (INSTANCES_LABEL, r#"[{}]"#),
        ]))
        .unwrap();
        assert_eq!(templates.len(), 1);
        assert_eq!(templates[0].check, "redis");
        assert_eq!(templates[0].origin, TemplateOrigin::LabelV2);
    }

    #[test]
    fn v1_labels_parse_sorted_by_check() {
        let templates = from_labels(&labels(&[
            (CHECK_NAMES_LABEL, r#"["redis", "http_check"]"#),
            (INIT_CONFIGS_LABEL, r#"[{}, [{"timeout": 3}]]"#),
            (
                INSTANCES_LABEL,
                r#"[{"port": "%%port%%"}, {"url": "http://%%host%%"}]"#,
            ),
            (IGNORE_AD_TAGS_LABEL, "true"),
        ]))
        .unwrap();
        assert_eq!(
            templates,
            vec![
                Template {
                    check: "http_check".to_owned(),
                    init_config: json!({"timeout": 3}),
                    instances: vec![json!({"url": "http://%%host%%"})],
                    ignore_autodiscovery_tags: true,
                    origin: TemplateOrigin::LabelV1,
                },
                Template {
                    check: "redis".to_owned(),
                    init_config: json!({}),
                    instances: vec![json!({"port": "%%port%%"})],
                    ignore_autodiscovery_tags: true,
                    origin: TemplateOrigin::LabelV1,
                },
            ]
        );
    }

    #[test]
    fn v1_instances_list_gives_one_template_with_several_instances() {
        let templates = from_labels(&labels(&[
            (CHECK_NAMES_LABEL, r#"["http_check"]"#),
            (INIT_CONFIGS_LABEL, r#"[{}]"#),
            (
                INSTANCES_LABEL,
                r#"[[{"url": "http://a"}, {"url": "http://b"}]]"#,
            ),
        ]))
        .unwrap();
        assert_eq!(templates.len(), 1);
        assert_eq!(
            templates[0].instances,
            vec![json!({"url": "http://a"}), json!({"url": "http://b"})]
        );
        assert!(!templates[0].ignore_autodiscovery_tags);
    }

    #[test]
    fn v1_labels_of_different_lengths_are_refused() {
        let error = from_labels(&labels(&[
            (CHECK_NAMES_LABEL, r#"["redis", "nginx"]"#),
            (INIT_CONFIGS_LABEL, r#"[{}]"#),
            (INSTANCES_LABEL, r#"[{}, {}]"#),
        ]))
        .unwrap_err();
        assert_eq!(
            error,
            LabelError::Lengths {
                check_names: 2,
                init_configs: 1,
                instances: 2
            }
        );
        assert!(
            error
                .to_string()
                .starts_with("template entries don't all have the same length: 2 in"),
            "{error}"
        );
    }

    #[test]
    fn v1_without_init_configs_is_refused() {
        let error = from_labels(&labels(&[
            (CHECK_NAMES_LABEL, r#"["redis"]"#),
            (INSTANCES_LABEL, r#"[{}]"#),
        ]))
        .unwrap_err();
        assert_eq!(
            error,
            LabelError::Missing {
                missing: INIT_CONFIGS_LABEL
            }
        );
        assert!(
            error
                .to_string()
                .starts_with("label `com.datadoghq.ad.init_configs` is missing"),
            "{error}"
        );
    }

    #[test]
    fn v1_init_config_must_be_one_object() {
        for bad in ["[null]", "[[{}, {}]]", r#"["x"]"#] {
            let error = from_labels(&labels(&[
                (CHECK_NAMES_LABEL, r#"["redis"]"#),
                (INIT_CONFIGS_LABEL, bad),
                (INSTANCES_LABEL, r#"[{}]"#),
            ]))
            .unwrap_err();
            assert!(
                matches!(
                    error,
                    LabelError::Invalid {
                        label: INIT_CONFIGS_LABEL,
                        ..
                    }
                ),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn no_autodiscovery_labels_give_no_templates() {
        let templates = from_labels(&labels(&[("maintainer", "someone")])).unwrap();
        assert!(templates.is_empty());
    }

    #[test]
    fn invalid_json_error_names_the_label() {
        let error = from_labels(&labels(&[(CHECKS_LABEL, r#"{"redis": "#)])).unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with("label `com.datadoghq.ad.checks`: invalid JSON: EOF while parsing"),
            "{message}"
        );

        let error = from_labels(&labels(&[
            (CHECK_NAMES_LABEL, r#"["redis"]"#),
            (INIT_CONFIGS_LABEL, r#"[{}]"#),
            (INSTANCES_LABEL, r#"[{"port": 6379,}]"#),
        ]))
        .unwrap_err();
        assert!(
            matches!(&error, LabelError::InvalidJson { label: INSTANCES_LABEL, message } if message.contains("trailing comma")),
            "{error}"
        );
    }

    #[test]
    fn an_instance_that_is_not_an_object_is_refused() {
        let error = from_labels(&labels(&[(
            CHECKS_LABEL,
            r#"{"redis": {"instances": [{}, "host=x"]}}"#,
        )]))
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "label `com.datadoghq.ad.checks`: check `redis`: instance 1 is not a JSON object"
        );
    }

    #[test]
    fn labels_cannot_name_a_plugin_outside_the_plugins_directory() {
        let error = from_labels(&labels(&[(
            CHECKS_LABEL,
            r#"{"x": {"name": "../../tmp/evil", "instances": [{}]}}"#,
        )]))
        .unwrap_err();
        assert!(matches!(error, LabelError::CheckName { .. }), "{error}");
        let error = from_labels(&labels(&[
            (CHECK_NAMES_LABEL, r#"["/tmp/evil"]"#),
            (INIT_CONFIGS_LABEL, r#"[{}]"#),
            (INSTANCES_LABEL, r#"[{}]"#),
        ]))
        .unwrap_err();
        assert!(matches!(error, LabelError::CheckName { .. }), "{error}");
    }

    #[test]
    fn host_is_the_only_network_address() {
        let mut web = container();
        web.networks = BTreeMap::from([(
            "app_default".to_owned(),
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5)),
        )]);
        assert_eq!(value_of(&web, "%%host%%").unwrap(), json!("10.0.0.5"));
    }

    #[test]
    fn host_with_several_networks_is_the_bridge_address() {
        let mut web = container();
        web.networks.insert(
            "app_default".to_owned(),
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5)),
        );
        assert_eq!(value_of(&web, "%%host%%").unwrap(), json!("172.17.0.2"));
        assert_eq!(
            value_of(&web, "%%host_app_default%%").unwrap(),
            json!("10.0.0.5")
        );
        // Not on that network: the same fallback as plain %%host%%.
        assert_eq!(
            value_of(&web, "%%host_other%%").unwrap(),
            json!("172.17.0.2")
        );
    }

    #[test]
    fn host_with_several_networks_and_no_bridge_is_an_error() {
        let mut web = container();
        web.networks = BTreeMap::from([
            ("back".to_owned(), IpAddr::V4(Ipv4Addr::new(10, 0, 1, 5))),
            ("front".to_owned(), IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5))),
        ]);
        let error = value_of(&web, "http://%%host%%/").unwrap_err();
        assert_eq!(
            error.to_string(),
            "http_check: %%host%% in instances[0].v: not able to determine which network is \
             reachable: the container is on `back`, `front`, none of them `bridge`; pick one \
             with %%host_<network>%%"
        );
        assert_eq!(value_of(&web, "%%host_back%%").unwrap(), json!("10.0.1.5"));
        assert!(
            reason_of(&web, "%%host_other%%")
                .starts_with("the container is not on network `other`, and not able to determine")
        );
    }

    #[test]
    fn host_without_an_address_is_the_container_hostname_or_an_error() {
        let mut web = container();
        web.networks.clear();
        web.hostname = "docker-host-1".to_owned();
        assert_eq!(value_of(&web, "%%host%%").unwrap(), json!("docker-host-1"));
        web.hostname.clear();
        assert_eq!(
            reason_of(&web, "%%host%%"),
            "the container has no IP address on any network, and no hostname"
        );
    }

    #[test]
    fn ipv6_host_is_bracketed_in_urls_only() {
        let mut web = container();
        web.networks = BTreeMap::from([(
            "v6".to_owned(),
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2)),
        )]);
        assert_eq!(
            value_of(&web, "http://%%host%%:%%port%%/status").unwrap(),
            json!("http://[fd00::2]:443/status")
        );
        assert_eq!(
            value_of(&web, "http://[%%host%%]:80/").unwrap(),
            json!("http://[fd00::2]:80/")
        );
        assert_eq!(value_of(&web, "%%host%%").unwrap(), json!("fd00::2"));
        assert_eq!(
            value_of(&web, "host=%%host%% port=5432").unwrap(),
            json!("host=fd00::2 port=5432")
        );
    }

    #[test]
    fn port_is_the_highest_exposed_port() {
        let mut web = container();
        web.ports = vec![80, 443, 8080];
        assert_eq!(value_of(&web, "%%port%%").unwrap(), json!(8080));
    }

    #[test]
    fn port_with_a_number_is_an_index_then_a_port_number() {
        let mut web = container();
        web.ports = vec![80, 443, 8080];
        assert_eq!(value_of(&web, "%%port_0%%").unwrap(), json!(80));
        assert_eq!(value_of(&web, "%%port_2%%").unwrap(), json!(8080));
        assert_eq!(value_of(&web, "%%port_443%%").unwrap(), json!(443));
        assert_eq!(
            reason_of(&web, "%%port_3%%"),
            "index 3 is too big for the 3 exposed ports (80, 443, 8080), and none of them is \
             port 3"
        );
    }

    #[test]
    fn port_errors_say_why() {
        let mut web = container();
        assert!(
            reason_of(&web, "%%port_http%%").starts_with("port `http` not found: Docker ports"),
        );
        web.ports.clear();
        let error = value_of(&web, "%%port%%").unwrap_err();
        assert_eq!(
            error.to_string(),
            "http_check: %%port%% in instances[0].v: the container exposes no port"
        );
        assert_eq!(
            reason_of(&web, "%%port_0%%"),
            "the container exposes no port"
        );
    }

    #[test]
    fn pid_and_hostname_are_the_containers() {
        let mut web = container();
        assert_eq!(value_of(&web, "%%pid%%").unwrap(), json!(4242));
        assert_eq!(
            value_of(&web, "%%hostname%%").unwrap(),
            json!("3f2a9c1b0d7e")
        );
        web.hostname.clear();
        assert_eq!(
            value_of(&web, "%%hostname%%").unwrap(),
            json!("runner-host")
        );
        web.pid = 0;
        assert_eq!(
            reason_of(&web, "%%pid%%"),
            "the container has no pid (it is not running)"
        );
    }

    #[test]
    fn env_reads_only_allowlisted_variables() {
        let web = container();
        let policy = env(
            &["PG_PASSWORD", "MISSING"],
            &[("PG_PASSWORD", "s3cret"), ("DD_API_KEY", "abc")],
        );
        let value =
            |text: &str| resolve_with(&policy, &web, json!({ "v": text })).map(|i| i["v"].clone());
        assert_eq!(value("%%env_PG_PASSWORD%%").unwrap(), json!("s3cret"));
        let error = value("http://x/?k=%%env_DD_API_KEY%%").unwrap_err();
        assert_eq!(error.variable, "%%env_DD_API_KEY%%");
        assert_eq!(error.reason, "`DD_API_KEY` is not in `ad_allowed_env_vars`");
        assert_eq!(
            value("%%env_MISSING%%").unwrap_err().reason,
            "the runner's environment has no `MISSING`"
        );
        assert_eq!(
            value("%%env%%").unwrap_err().reason,
            "the variable name is missing: write %%env_<VAR>%%"
        );
    }

    #[test]
    fn env_with_an_empty_allowlist_allows_nothing() {
        let web = container();
        let policy = env(&[], &[("DD_API_KEY", "abc")]);
        assert!(!policy.allows("DD_API_KEY"));
        let error = resolve_with(&policy, &web, json!({"url": "%%env_DD_API_KEY%%"})).unwrap_err();
        assert_eq!(
            error.reason,
            "`DD_API_KEY` is not allowed: `ad_allowed_env_vars` is empty, which allows none"
        );
    }

    #[test]
    fn env_policy_reads_the_process_environment() {
        // PATH is set in any environment the tests run in; nothing is written.
        let policy = EnvPolicy::new(vec!["PATH".to_owned()]);
        assert_eq!(policy.get("PATH").ok(), std::env::var("PATH").ok());
        assert!(policy.get("HOME").is_err());
    }

    #[test]
    fn lone_variable_with_an_integer_or_boolean_value_is_typed() {
        let web = container();
        let policy = env(
            &["ON", "OFF", "CODE", "NEG"],
            &[
                ("ON", "true"),
                ("OFF", "False"),
                ("CODE", "007"),
                ("NEG", "-3"),
            ],
        );
        let resolved = resolve_with(
            &policy,
            &web,
            json!({
                "port": "%%port%%",
                "ssl": "%%env_ON%%",
                "verify": "%%env_OFF%%",
                "code": "%%env_CODE%%",
                "offset": "%%env_NEG%%",
                "label": "port %%port%%",
            }),
        )
        .unwrap();
        assert_eq!(
            resolved,
            json!({
                "port": 443,
                "ssl": true,
                "verify": false,
                "code": "007",
                "offset": -3,
                "label": "port 443",
            })
        );
    }

    #[test]
    fn several_variables_with_surrounding_text() {
        let web = container();
        assert_eq!(
            value_of(&web, "http://%%host%%:%%port_0%%/status?pid=%%pid%%").unwrap(),
            json!("http://172.17.0.2:80/status?pid=4242")
        );
        assert_eq!(
            value_of(&web, "100%% of %%port%%, 50%%").unwrap(),
            json!("100%% of 443, 50%%")
        );
    }

    #[test]
    fn every_string_leaf_is_resolved_and_keys_are_not() {
        let web = container();
        let resolver = Resolver {
            hostname: "runner-host",
            env: &env(&[], &[]),
        };
        let template = Template {
            init_config: json!({"service": "%%hostname%%"}),
            instances: vec![
                json!({"%%port%%": "%%port%%", "tags": ["pid:%%pid%%", 3, null], "nested": {"host": "%%host%%"}}),
                json!({"url": "http://%%host%%:%%port%%"}),
            ],
            ..template(json!({}))
        };
        let resolved = resolver.resolve(&template, &web.facts()).unwrap();
        assert_eq!(resolved.init_config, json!({"service": "3f2a9c1b0d7e"}));
        assert_eq!(
            resolved.instances,
            vec![
                json!({"%%port%%": 443, "tags": ["pid:4242", 3, null], "nested": {"host": "172.17.0.2"}}),
                json!({"url": "http://172.17.0.2:443"}),
            ]
        );
    }

    #[test]
    fn unknown_variables_are_errors() {
        let web = container();
        for text in [
            "%%extra_foo%%",
            "%%kube_namespace%%",
            "%%Port%%",
            "%%pid_1%%",
        ] {
            let error = value_of(&web, text).unwrap_err();
            assert_eq!(error.variable, text);
        }
        let error = resolve(&web, json!({"tags": ["a", "ns:%%kube_namespace%%"]})).unwrap_err();
        assert_eq!(error.location, "instances[0].tags[1]");
        assert!(
            reason_of(&web, "%%user%%").starts_with("unknown template variable"),
            "unknown"
        );
    }
}
