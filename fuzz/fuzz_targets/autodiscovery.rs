//! Feeds a container with arbitrary labels and facts to autodiscovery: its labels parsed into
//! check templates (`from_labels`), each template resolved against its facts (`Resolver`).
//! Labels are written by whoever starts a container; the checks:
//! - a template has a check name that cannot name a path (letters, digits, `_`, `.`, `-`),
//!   instances that are JSON objects, and templates come sorted by check name;
//! - resolution reads only the environment variables the policy allows, keeps the shape of
//!   the template (the same keys, the same lengths; values without `%%` as they were), and
//!   an error names a variable written in the template and a place that exists in it.

#![no_main]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use arbitrary::Arbitrary;
use kennel_parsers::autodiscovery::{
    ContainerFacts, EnvPolicy, Resolver, Template, from_labels,
};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// The label names autodiscovery reads, and any other.
#[derive(Arbitrary, Debug)]
enum Key {
    Checks,
    CheckNames,
    InitConfigs,
    Instances,
    IgnoreTags,
    Other(String),
}

impl Key {
    fn name(&self) -> String {
        match self {
            Key::Checks => "com.datadoghq.ad.checks".to_owned(),
            Key::CheckNames => "com.datadoghq.ad.check_names".to_owned(),
            Key::InitConfigs => "com.datadoghq.ad.init_configs".to_owned(),
            Key::Instances => "com.datadoghq.ad.instances".to_owned(),
            Key::IgnoreTags => "com.datadoghq.ad.ignore_autodiscovery_tags".to_owned(),
            Key::Other(name) => name.clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    labels: Vec<(Key, String)>,
    hostname: String,
    networks: Vec<(String, IpAddr)>,
    ports: Vec<u16>,
    pid: u32,
    allowed_env: Vec<String>,
    env: Vec<(String, String)>,
}

fuzz_target!(|input: Input| {
    let labels: BTreeMap<String, String> =
        input.labels.iter().map(|(k, v)| (k.name(), v.clone())).collect();
    let Ok(templates) = from_labels(&labels) else {
        return;
    };
    assert!(templates.windows(2).all(|w| w[0].check <= w[1].check));

    let mut ports = input.ports.clone();
    ports.sort_unstable();
    let networks: BTreeMap<String, IpAddr> = input.networks.iter().cloned().collect();
    let facts = ContainerFacts {
        hostname: &input.hostname,
        networks: &networks,
        ports,
        pid: input.pid,
    };
    let allowed = input.allowed_env.clone();
    let env: BTreeMap<String, String> = input.env.iter().cloned().collect();
    let asked = Arc::new(Mutex::new(Vec::new()));
    let policy = {
        let asked = asked.clone();
        EnvPolicy::from_fn(allowed.clone(), move |name| {
            asked.lock().unwrap().push(name.to_owned());
            env.get(name).cloned()
        })
    };
    let resolver = Resolver {
        hostname: "runner-host",
        env: &policy,
    };
    for template in &templates {
        check_template(template);
        match resolver.resolve(template, &facts) {
            Ok(resolved) => {
                same_shape(&template.init_config, &resolved.init_config);
                assert_eq!(template.instances.len(), resolved.instances.len());
                for (written, resolved) in template.instances.iter().zip(&resolved.instances) {
                    same_shape(written, resolved);
                }
            }
            Err(error) => {
                let written = serde_json::to_string(&(&template.init_config, &template.instances))
                    .unwrap();
                assert!(written.contains(&error.variable), "{error}");
                assert!(
                    error.location.starts_with("init_config")
                        || error.location.starts_with("instances["),
                    "{error}"
                );
            }
        }
    }
    for name in asked.lock().unwrap().iter() {
        assert!(allowed.contains(name), "read `{name}`, which is not allowed");
    }
});

fn check_template(template: &Template) {
    assert!(!template.check.is_empty());
    assert!(
        template
            .check
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')),
        "{}",
        template.check
    );
    assert!(template.instances.iter().all(Value::is_object));
}

/// `resolved` has `written`'s keys and lengths, and its values where they hold no `%%`.
fn same_shape(written: &Value, resolved: &Value) {
    match (written, resolved) {
        (Value::String(w), _) if w.contains("%%") => {}
        (Value::Array(w), Value::Array(r)) => {
            assert_eq!(w.len(), r.len());
            w.iter().zip(r).for_each(|(w, r)| same_shape(w, r));
        }
        (Value::Object(w), Value::Object(r)) => {
            assert!(w.keys().eq(r.keys()));
            w.values().zip(r.values()).for_each(|(w, r)| same_shape(w, r));
        }
        (w, r) => assert_eq!(w, r),
    }
}
