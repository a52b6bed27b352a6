//! Loading a conf.d directory with good and bad files side by side.

use std::fs;

use runner::config::confd;

#[test]
fn bad_files_are_reported_with_file_and_line_and_good_files_still_load() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    fs::create_dir(root.join("http_check.d")).unwrap();
    fs::write(
        root.join("http_check.d/conf.yaml"),
        "instances:\n  - url: http://localhost/\n",
    )
    .unwrap();
    fs::write(
        root.join("http_check.d/broken.yaml"),
        "instances:\n  - url: http://a/\n   bad_indent: [\n",
    )
    .unwrap();
    fs::write(root.join("nginx.yaml"), "init_config:\n  service: web\n").unwrap();
    fs::write(
        root.join("redis.yaml"),
        "instances:\n  - host: localhost\n    min_collection_interval: soon\n",
    )
    .unwrap();
    fs::write(
        root.join("postgres.yaml"),
        "instances:\n  - host: localhost\n",
    )
    .unwrap();

    let loaded = confd::load_dir(root, confd::Symlinks::Inside).expect("conf.d loads");
    let checks: Vec<&str> = loaded.configs.iter().map(|c| c.check.as_str()).collect();
    assert_eq!(checks, ["http_check", "postgres"]);

    let errors: Vec<String> = loaded.errors.iter().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 3, "{errors:#?}");
    let broken = &loaded.errors[0];
    assert!(
        broken.path.ends_with("http_check.d/broken.yaml"),
        "{errors:#?}"
    );
    assert!(broken.line.is_some(), "{broken}");
    assert!(
        errors[1].contains("nginx.yaml:1: no instances"),
        "{errors:#?}"
    );
    assert!(errors[2].contains("redis.yaml:3:"), "{errors:#?}");
    assert!(errors[2].contains("min_collection_interval"), "{errors:#?}");
}

#[test]
fn default_files_apply_only_without_another_config() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    fs::create_dir(root.join("http_check.d")).unwrap();
    fs::write(
        root.join("http_check.d/conf.yaml.default"),
        "instances:\n  - url: http://default/\n",
    )
    .unwrap();
    fs::create_dir(root.join("disk.d")).unwrap();
    fs::write(
        root.join("disk.d/conf.yaml.default"),
        "instances:\n  - {}\n",
    )
    .unwrap();
    fs::write(
        root.join("http_check.d/conf.yaml"),
        "instances:\n  - url: http://mine/\n",
    )
    .unwrap();
    fs::write(root.join("http_check.d/conf.yaml.example"), "not: [yaml").unwrap();
    fs::write(root.join("http_check.d/metrics.yaml"), "jmx: []\n").unwrap();

    let loaded = confd::load_dir(root, confd::Symlinks::Inside).expect("conf.d loads");
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let urls: Vec<String> = loaded
        .configs
        .iter()
        .flat_map(|c| {
            c.instances.iter().map(move |(raw, _)| {
                format!(
                    "{}:{}",
                    c.check,
                    raw.get("url").map(|u| u.to_string()).unwrap_or_default()
                )
            })
        })
        .collect();
    assert_eq!(urls, ["disk:", "http_check:\"http://mine/\""]);
}
