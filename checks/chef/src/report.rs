//! One Chef Infra client run report, as `Chef::Handler::JsonFile` writes it: the JSON of
//! `Chef::RunStatus#to_h`, with keys `node`, `success`, `start_time`, `end_time`,
//! `elapsed_time`, `all_resources`, `updated_resources`, `exception`, `backtrace` and `run_id`.
//!
//! Design decisions:
//! - Reports are deserialized straight into what the check uses, skipping everything else
//!   unread (`IgnoredAny`) rather than through a `serde_json::Value`. A report serializes the
//!   whole node (every automatic attribute) and every resource with all of its instance
//!   variables, so it runs to megabytes on a large node, and a `Value` tree of it could take ten
//!   times that in the plugin's capped memory. `all_resources` is only counted.
//! - Required: `node` (an object with a non-empty `name`, or the name as a string) and
//!   `success`; `elapsed_time` too, unless the run failed before it had one. `all_resources`
//!   and `updated_resources` must be lists (or null), as Chef always writes them. The rest
//!   (`exception`, `backtrace`, `end_time`, the fields of a resource) is read leniently: a
//!   missing or oddly typed value is left out, because the report is still worth sending.
//! - A resource is rendered as Chef's `Resource#to_s`, `<type>[<name>]`, from either shape it is
//!   found in: `{"json_class": "Chef::Resource::File", "instance_vars": {"name": ...}}` (what
//!   `Resource#to_json` writes; Chef 11 kept the `@` of the variable names) or the flat hash of
//!   `Resource#to_h` (`name`, `resource_name`, `declared_type` at the top level). The type is
//!   `resource_name` when serialized, else derived from `json_class` the way Chef names resource
//!   classes (`Chef::Resource::AptPackage` is `apt_package`), else `declared_type` (what the
//!   recipe wrote: `package`; custom resources have anonymous classes), else `resource`. A name
//!   that is a list is joined with `, ` as Chef does. A resource that is a bare string is used
//!   as is.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::timestamp;

/// How the run ended, as far as the check's output goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    Success {
        elapsed: f64,
    },
    /// Failed while converging: resources ran.
    ConvergeFailure {
        elapsed: f64,
    },
    /// Failed before any resource ran (compiling the cookbooks, or earlier): Chef has no
    /// resource collection, so `all_resources` is null or empty.
    CompileFailure,
}

#[derive(Debug)]
pub struct Report {
    /// The node's name: the hostname of everything the report produces.
    pub node: String,
    pub outcome: Outcome,
    /// How many resources the run had.
    pub total_resources: usize,
    /// The resources it updated, in the order they ran.
    pub updated_resources: Vec<Resource>,
    /// `Class: message` of the exception that failed the run.
    pub exception: Option<String>,
    pub backtrace: Vec<String>,
    /// When the run ended, in seconds since the Unix epoch, if `end_time` could be read.
    pub end_time: Option<i64>,
}

impl Report {
    /// Reads a report; the error says what is wrong with it (serde's message, with its line and
    /// column, for JSON that is invalid or cut short).
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let raw: RawReport = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if raw.node.is_empty() {
            return Err("the node's `name` is empty".to_owned());
        }
        let total_resources = raw.all_resources.map_or(0, |all| all.len());
        let outcome = match (raw.success, raw.elapsed_time) {
            (true, Some(elapsed)) => Outcome::Success { elapsed },
            (true, None) => return Err("`elapsed_time` is missing".to_owned()),
            (false, Some(elapsed)) if total_resources > 0 => Outcome::ConvergeFailure { elapsed },
            // As in Datadog's handler, a failed run without an elapsed time is treated as one
            // that did not get far enough to have resources either.
            (false, _) => Outcome::CompileFailure,
        };
        Ok(Self {
            node: raw.node,
            outcome,
            total_resources,
            updated_resources: raw.updated_resources.unwrap_or_default(),
            exception: raw.exception.0,
            backtrace: raw
                .backtrace
                .unwrap_or_default()
                .into_iter()
                .filter_map(|line| line.0)
                .collect(),
            end_time: raw
                .end_time
                .0
                .as_deref()
                .and_then(timestamp::parse_ruby_time),
        })
    }

    pub fn succeeded(&self) -> bool {
        matches!(self.outcome, Outcome::Success { .. })
    }
}

#[derive(Deserialize)]
struct RawReport {
    #[serde(deserialize_with = "node_name")]
    node: String,
    success: bool,
    #[serde(default)]
    elapsed_time: Option<f64>,
    /// Only counted: a list of zero-sized `IgnoredAny` never allocates.
    #[serde(default)]
    all_resources: Option<Vec<IgnoredAny>>,
    #[serde(default)]
    updated_resources: Option<Vec<Resource>>,
    #[serde(default)]
    exception: Loose,
    #[serde(default)]
    backtrace: Option<Vec<Loose>>,
    #[serde(default)]
    end_time: Loose,
}

/// A resource, as much of it as `to_s` and `defined_at` need.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resource {
    /// The resource as a bare string.
    text: Option<String>,
    name: Option<String>,
    resource_name: Option<String>,
    declared_type: Option<String>,
    json_class: Option<String>,
    cookbook_name: Option<String>,
    recipe_name: Option<String>,
    /// `None`: not serialized; `Some(None)`: serialized as null.
    source_line: Option<Option<String>>,
}

impl Resource {
    /// Chef's `Resource#defined_at` (`cookbook::recipe line N`, `path line N`, or `dynamically
    /// defined`), when the report says where the resource was declared.
    pub fn defined_at(&self) -> Option<String> {
        let source_line = self.source_line.as_ref()?;
        let Some(source_line) = source_line else {
            return Some("dynamically defined".to_owned());
        };
        let (file, line) = split_source_line(source_line);
        Some(match (&self.cookbook_name, &self.recipe_name) {
            (Some(cookbook), Some(recipe)) => format!("{cookbook}::{recipe} line {line}"),
            _ => format!("{file} line {line}"),
        })
    }

    fn type_name(&self) -> String {
        if let Some(name) = &self.resource_name {
            return name.clone();
        }
        let from_class = self
            .json_class
            .as_deref()
            .and_then(|class| class.strip_prefix("Chef::Resource::"))
            .and_then(|class| class.rsplit("::").next())
            // The base class of LWRPs and custom resources says nothing about the type.
            .filter(|class| !class.is_empty() && *class != "LWRPBase");
        match (from_class, &self.declared_type) {
            (Some(class), _) => snake_case(class),
            (None, Some(declared)) => declared.clone(),
            (None, None) => "resource".to_owned(),
        }
    }

    /// The fields of `outer` fill in what `self` lacks.
    fn or(self, outer: Self) -> Self {
        Self {
            text: self.text.or(outer.text),
            name: self.name.or(outer.name),
            resource_name: self.resource_name.or(outer.resource_name),
            declared_type: self.declared_type.or(outer.declared_type),
            json_class: self.json_class.or(outer.json_class),
            cookbook_name: self.cookbook_name.or(outer.cookbook_name),
            recipe_name: self.recipe_name.or(outer.recipe_name),
            source_line: self.source_line.or(outer.source_line),
        }
    }
}

/// Chef's `Resource#to_s`: `<type>[<name>]`.
impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(text) = &self.text {
            return f.write_str(text);
        }
        let name = self.name.as_deref().unwrap_or("?");
        write!(f, "{}[{name}]", self.type_name())
    }
}

impl<'de> Deserialize<'de> for Resource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ResourceVisitor)
    }
}

struct ResourceVisitor;

impl<'de> Visitor<'de> for ResourceVisitor {
    type Value = Resource;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a resource (an object or a string)")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Resource, E> {
        Ok(Resource {
            text: Some(text.to_owned()),
            ..Resource::default()
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Resource, A::Error> {
        let mut outer = Resource::default();
        let mut inner = None;
        while let Some(key) = map.next_key::<String>()? {
            // Chef 11 wrote instance variables with their `@`.
            match key.trim_start_matches('@') {
                "instance_vars" => inner = Some(map.next_value::<Resource>()?),
                "name" => outer.name = map.next_value::<Loose>()?.0,
                "resource_name" => outer.resource_name = map.next_value::<Loose>()?.0,
                "declared_type" => outer.declared_type = map.next_value::<Loose>()?.0,
                "json_class" => outer.json_class = map.next_value::<Loose>()?.0,
                "cookbook_name" => outer.cookbook_name = map.next_value::<Loose>()?.0,
                "recipe_name" => outer.recipe_name = map.next_value::<Loose>()?.0,
                "source_line" => outer.source_line = Some(map.next_value::<Loose>()?.0),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        // A string `instance_vars` would make a `text`; only its fields count.
        let inner = inner.map(|inner| Resource {
            text: None,
            ..inner
        });
        Ok(match inner {
            Some(inner) => inner.or(outer),
            None => outer,
        })
    }

    // Anything else still counts as a resource, which then has no name.
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Resource, E> {
        Ok(Resource::default())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Resource, E> {
        Ok(Resource::default())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Resource, E> {
        Ok(Resource::default())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Resource, E> {
        Ok(Resource::default())
    }

    fn visit_unit<E: de::Error>(self) -> Result<Resource, E> {
        Ok(Resource::default())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Resource, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Resource::default())
    }
}

/// Any JSON value, kept as text when it is a string, number or boolean, or a list of those
/// (joined with `, `, as Chef joins a resource name given as an array); `None` otherwise.
#[derive(Debug, Default)]
struct Loose(Option<String>);

impl<'de> Deserialize<'de> for Loose {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(LooseVisitor)
    }
}

struct LooseVisitor;

impl<'de> Visitor<'de> for LooseVisitor {
    type Value = Loose;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Loose, E> {
        Ok(Loose(Some(text.to_owned())))
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<Loose, E> {
        Ok(Loose(Some(text)))
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Loose, E> {
        Ok(Loose(Some(value.to_string())))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Loose, E> {
        Ok(Loose(Some(value.to_string())))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Loose, E> {
        Ok(Loose(Some(value.to_string())))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Loose, E> {
        Ok(Loose(Some(value.to_string())))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Loose, E> {
        Ok(Loose(None))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Loose, A::Error> {
        let mut items = Vec::new();
        while let Some(Loose(item)) = seq.next_element()? {
            items.extend(item);
        }
        Ok(Loose(Some(items.join(", "))))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Loose, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Loose(None))
    }
}

/// `node`: the node object's `name`, or the node itself when it is a string.
fn node_name<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    struct NodeVisitor;

    impl<'de> Visitor<'de> for NodeVisitor {
        type Value = String;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("the node: an object with a `name`, or its name")
        }

        fn visit_str<E: de::Error>(self, name: &str) -> Result<String, E> {
            Ok(name.to_owned())
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<String, A::Error> {
            let mut name = None;
            while let Some(key) = map.next_key::<String>()? {
                if key == "name" {
                    name = map.next_value::<Loose>()?.0;
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            name.ok_or_else(|| de::Error::custom("the node has no `name`"))
        }
    }

    deserializer.deserialize_any(NodeVisitor)
}

/// A `source_line` (`/path/recipe.rb:12:in 'from_file'`, `C:/path/recipe.rb:12 in ...`) split
/// like Chef's `/(.*):(\d+):?.*$/`: at the last `:` followed by digits. Both parts are empty when
/// there is none, as Ruby's interpolation of `nil` would print them.
fn split_source_line(source_line: &str) -> (&str, &str) {
    let line = source_line.lines().next().unwrap_or("");
    let bytes = line.as_bytes();
    for (at, _) in line
        .match_indices(':')
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
    {
        let digits = bytes[at + 1..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits > 0 {
            return (&line[..at], &line[at + 1..at + 1 + digits]);
        }
    }
    ("", "")
}

/// Chef's `convert_to_snake_case`: `AptPackage` is `apt_package`.
fn snake_case(class: &str) -> String {
    let mut snake = String::with_capacity(class.len() + 4);
    for c in class.chars() {
        if c.is_ascii_uppercase() {
            if !snake.is_empty() {
                snake.push('_');
            }
            snake.push(c.to_ascii_lowercase());
        } else {
            snake.push(c);
        }
    }
    snake
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn resource(value: serde_json::Value) -> Resource {
        match serde_json::from_value(value) {
            Ok(resource) => resource,
            Err(error) => panic!("{error}"),
        }
    }

    fn parse(value: serde_json::Value) -> Result<Report, String> {
        Report::parse(value.to_string().as_bytes())
    }

    #[test]
    fn resources_render_like_chef_to_s_from_instance_vars() {
        let file = resource(json!({
            "json_class": "Chef::Resource::File",
            "instance_vars": {
                "name": "/etc/motd", "declared_type": "file", "cookbook_name": "base",
                "recipe_name": "default", "content": "hi", "action": ["create"],
                "source_line": "/var/chef/cache/cookbooks/base/recipes/default.rb:8:in `from_file'",
            },
        }));
        assert_eq!(file.to_string(), "file[/etc/motd]");
        assert_eq!(file.defined_at().as_deref(), Some("base::default line 8"));
    }

    #[test]
    fn resource_type_comes_from_resource_name_then_class_then_declared_type() {
        let cases = [
            (
                json!({"json_class": "Chef::Resource::AptPackage",
                       "instance_vars": {"name": "nginx", "declared_type": "package"}}),
                "apt_package[nginx]",
            ),
            (
                json!({"json_class": "Chef::Resource::User::LinuxUser",
                       "instance_vars": {"name": "app", "declared_type": "user"}}),
                "linux_user[app]",
            ),
            (
                json!({"json_class": "Chef::Resource::File",
                       "instance_vars": {"name": "/x", "resource_name": "cookbook_file"}}),
                "cookbook_file[/x]",
            ),
            (
                json!({"json_class": null,
                       "instance_vars": {"name": "site", "declared_type": "acme_site"}}),
                "acme_site[site]",
            ),
            (
                json!({"json_class": "Chef::Resource::LWRPBase",
                       "instance_vars": {"name": "site", "declared_type": "acme_site"}}),
                "acme_site[site]",
            ),
        ];
        for (value, expected) in cases {
            assert_eq!(resource(value).to_string(), expected);
        }
    }

    #[test]
    fn resources_render_from_the_flat_shape_and_chef_11_names() {
        let flat = resource(json!({
            "resource_name": "service", "declared_type": "service", "name": "nginx",
            "cookbook_name": "nginx", "recipe_name": "default",
            "source_line": "/var/chef/cache/cookbooks/nginx/recipes/default.rb:30:in `from_file'",
        }));
        assert_eq!(flat.to_string(), "service[nginx]");
        assert_eq!(flat.defined_at().as_deref(), Some("nginx::default line 30"));

        let chef11 = resource(json!({
            "json_class": "Chef::Resource::Template",
            "instance_vars": {"@name": "/etc/hosts", "@resource_name": "template"},
        }));
        assert_eq!(chef11.to_string(), "template[/etc/hosts]");
        assert_eq!(chef11.defined_at(), None);
    }

    #[test]
    fn odd_resources_fall_back_gracefully() {
        assert_eq!(
            resource(json!("file[/etc/motd]")).to_string(),
            "file[/etc/motd]"
        );
        assert_eq!(
            resource(json!({"declared_type": "package", "name": ["curl", "git"]})).to_string(),
            "package[curl, git]"
        );
        assert_eq!(resource(json!({"name": 42})).to_string(), "resource[42]");
        assert_eq!(resource(json!({})).to_string(), "resource[?]");
        assert_eq!(resource(json!(null)).to_string(), "resource[?]");
        assert_eq!(resource(json!([1, 2])).to_string(), "resource[?]");
        assert_eq!(
            resource(json!({"json_class": "Chef::Resource::File", "instance_vars": "x"}))
                .to_string(),
            "file[?]"
        );
    }

    #[test]
    fn defined_at_follows_chef() {
        let at = |value| resource(value).defined_at();
        assert_eq!(
            at(json!({"name": "x", "source_line": null})).as_deref(),
            Some("dynamically defined")
        );
        assert_eq!(
            at(json!({"name": "x", "source_line": "C:/chef/cookbooks/w/recipes/a.rb:80 in `x'"}))
                .as_deref(),
            Some("C:/chef/cookbooks/w/recipes/a.rb line 80")
        );
        assert_eq!(
            at(json!({"cookbook_name": "w", "recipe_name": "a", "source_line": "nowhere"}))
                .as_deref(),
            Some("w::a line ")
        );
    }

    #[test]
    fn node_is_an_object_with_a_name_or_the_name_itself() {
        let base = |node| json!({"node": node, "success": true, "elapsed_time": 1.5});
        let report = parse(base(json!({"name": "web01", "automatic": {"fqdn": "x"}})));
        assert_eq!(report.map(|r| r.node), Ok("web01".to_owned()));
        let report = parse(base(json!("web02")));
        assert_eq!(report.map(|r| r.node), Ok("web02".to_owned()));

        let error = parse(base(json!({"chef_environment": "prod"}))).unwrap_err();
        assert!(error.starts_with("the node has no `name`"), "{error}");
        let error = parse(base(json!({"name": ""}))).unwrap_err();
        assert_eq!(error, "the node's `name` is empty");
    }

    #[test]
    fn missing_required_fields_are_named() {
        let error = parse(json!({"node": "n", "elapsed_time": 1.0})).unwrap_err();
        assert!(error.starts_with("missing field `success`"), "{error}");
        let error = parse(json!({"success": true, "elapsed_time": 1.0})).unwrap_err();
        assert!(error.starts_with("missing field `node`"), "{error}");
        let error = parse(json!({"node": "n", "success": true})).unwrap_err();
        assert_eq!(error, "`elapsed_time` is missing");
        let error = parse(json!({"node": "n", "success": "yes", "elapsed_time": 1})).unwrap_err();
        assert!(error.starts_with("invalid type: string \"yes\""), "{error}");
    }

    #[test]
    fn a_failure_without_resources_or_elapsed_time_is_a_compile_failure() {
        let failed = |extra: serde_json::Value| {
            let mut report = json!({"node": "n", "success": false, "elapsed_time": 2.0});
            if let (Some(report), Some(extra)) = (report.as_object_mut(), extra.as_object()) {
                report.extend(extra.clone());
            }
            parse(report).map(|r| r.outcome)
        };
        assert_eq!(failed(json!({})), Ok(Outcome::CompileFailure));
        assert_eq!(
            failed(json!({"all_resources": null})),
            Ok(Outcome::CompileFailure)
        );
        assert_eq!(
            failed(json!({"all_resources": []})),
            Ok(Outcome::CompileFailure)
        );
        assert_eq!(
            failed(json!({"all_resources": [{}], "elapsed_time": null})),
            Ok(Outcome::CompileFailure)
        );
        assert_eq!(
            failed(json!({"all_resources": [{}]})),
            Ok(Outcome::ConvergeFailure { elapsed: 2.0 })
        );
    }

    #[test]
    fn optional_fields_of_unexpected_types_are_tolerated() {
        let report = parse(json!({
            "node": "n", "success": false, "elapsed_time": 2, "all_resources": [1, "x", {}],
            "exception": {"class": "RuntimeError"}, "backtrace": ["a", 3, null],
            "end_time": 1_795_168_800, "run_id": null,
        }));
        let report = report.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.total_resources, 3);
        assert_eq!(report.exception, None);
        assert_eq!(report.backtrace, ["a", "3"]);
        assert_eq!(report.end_time, None);
    }
}
