//! Containers on a real Docker daemon: autodiscovery from labels and conf.d templates,
//! container tags on check results and on DogStatsD metrics, a daemon restart, and churn.
//!
//! Every runner here sees every container on the daemon, so each test looks only at the
//! containers it named.

use std::time::Duration;

use kennel_tests::churn;
use kennel_tests::docker::{self, Container, SOCKET, unique_name};
use kennel_tests::runner_process::{Options, RunnerProcess};

const WAIT: Duration = Duration::from_secs(15);

fn runner(files: &[(&str, &str)]) -> RunnerProcess {
    RunnerProcess::start(
        Options {
            docker: Some(SOCKET.to_owned()),
            extra: "aggregator:\n  bucket_size_seconds: 1\n".to_owned(),
            ..Options::default()
        },
        files,
    )
}

const HTTP_CHECK_LABEL: &str = r#"com.datadoghq.ad.checks={"http_check":{"instances":[{"name":"web","url":"http://%%host%%:%%port%%/","min_collection_interval":1}]}}"#;

fn runs(instance: &serde_json::Value) -> u64 {
    instance["runs"].as_u64().unwrap_or(0)
}

/// The lines of `/metrics` for the series `name` that carry every one of `labels`
/// (`key="value"`).
fn series(runner: &RunnerProcess, name: &str, labels: &[String]) -> Vec<String> {
    let start = format!("{name}{{");
    runner
        .metrics()
        .lines()
        .filter(|line| line.starts_with(&start) && labels.iter().all(|l| line.contains(l)))
        .map(str::to_owned)
        .collect()
}

fn ran(runner: &RunnerProcess, name: &str) -> bool {
    runner.instances_from(name).iter().any(|i| runs(i) >= 1)
}

#[test]
fn a_labelled_container_is_checked_with_its_tags_and_unscheduled_when_it_stops() {
    let _daemon = docker::shared();
    let image = docker::image();
    let runner = runner(&[]);
    let name = unique_name("web");
    let container = Container::run(
        &name,
        &[
            "-l",
            HTTP_CHECK_LABEL,
            "-l",
            "com.datadoghq.tags.env=test",
            image,
        ],
    );
    let took = runner.wait_for("the container's check to run", WAIT, |r| ran(r, &name));
    println!("container started -> first check result: {took:?}");
    let instances = runner.instances_from(&name);
    assert_eq!(instances.len(), 1, "{instances:?}");
    assert_eq!(instances[0]["errors"], 0, "{}", instances[0]);
    assert_eq!(instances[0]["check"], "http_check");

    let labels = [
        format!("container_name=\"{name}\""),
        format!("container_id=\"{}\"", container.id),
        "env=\"test\"".to_owned(),
        "short_image=\"httpd\"".to_owned(),
        "image_tag=\"1\"".to_owned(),
    ];
    let tagged = |r: &RunnerProcess| {
        series(r, "network_http_can_connect", &labels)
            .iter()
            .any(|line| line.ends_with(" 1"))
    };
    runner.wait_for(
        "the check's metrics with the container's tags",
        WAIT,
        tagged,
    );

    container.stop();
    runner.wait_for("the check to be unscheduled", WAIT, |r| {
        r.instances_from(&name).is_empty()
    });
}

#[test]
fn confd_templates_and_v1_labels_resolve_and_unresolvable_variables_are_reported() {
    let _daemon = docker::shared();
    let image = docker::image();
    let runner = runner(&[(
        "http_check.d/auto.yaml",
        // Unquoted variables, as users write them.
        "ad_identifiers:\n  - kennel-test/httpd\ninit_config:\ninstances:\n  - name: from-template\n    url: http://%%host%%:%%port%%/\n    tags: [via:template]\n",
    )]);

    let plain = unique_name("plain");
    let _plain = Container::run(&plain, &[image]);
    let v1 = unique_name("v1");
    let _v1 = Container::run(
        &v1,
        &[
            "-l",
            r#"com.datadoghq.ad.check_names=["http_check"]"#,
            "-l",
            "com.datadoghq.ad.init_configs=[{}]",
            "-l",
            r#"com.datadoghq.ad.instances=[{"name":"from-v1","url":"http://%%host%%:%%port_0%%/"}]"#,
            image,
        ],
    );
    let secret = unique_name("secret");
    let _secret = Container::run(
        &secret,
        &[
            "-l",
            r#"com.datadoghq.ad.checks={"http_check":{"instances":[{"name":"leak","url":"http://%%host%%/?k=%%env_HOME%%"}]}}"#,
            "-l",
            "com.datadoghq.ad.tags=team:core",
            image,
        ],
    );

    runner.wait_for("the template to run for the plain container", WAIT, |r| {
        ran(r, &plain)
    });
    let plain_instances = runner.instances_from(&plain);
    assert_eq!(plain_instances.len(), 1, "{plain_instances:?}");
    assert!(
        plain_instances[0]["source"]
            .as_str()
            .is_some_and(|s| s.contains("template") && s.contains("auto.yaml")),
        "{}",
        plain_instances[0]
    );
    assert_eq!(plain_instances[0]["errors"], 0, "{}", plain_instances[0]);

    runner.wait_for("the v1 labels and the template to run", WAIT, |r| {
        let instances = r.instances_from(&v1);
        instances.len() == 2 && instances.iter().all(|i| runs(i) >= 1)
    });
    let v1_sources: Vec<String> = runner
        .instances_from(&v1)
        .iter()
        .filter_map(|i| i["source"].as_str().map(str::to_owned))
        .collect();
    assert!(
        v1_sources
            .iter()
            .any(|s| s.contains("com.datadoghq.ad.check_names")),
        "{v1_sources:?}"
    );

    // `HOME` is not in `ad_allowed_env_vars`: the label's instance is refused and reported;
    // the conf.d template still applies to the container.
    runner.wait_for("the unresolvable variable to be reported", WAIT, |r| {
        r.config_errors()
            .iter()
            .any(|e| e.contains(&secret) && e.contains("%%env_HOME%%"))
    });
    // So is a tags label that is not a JSON list; the container's other tags still apply.
    assert!(
        runner
            .config_errors()
            .iter()
            .any(|e| e.contains(&secret) && e.contains("com.datadoghq.ad.tags")),
        "{:?}",
        runner.config_errors()
    );
    let secret_instances = runner.instances_from(&secret);
    assert_eq!(secret_instances.len(), 1, "{secret_instances:?}");
    assert!(
        secret_instances[0]["source"]
            .as_str()
            .is_some_and(|s| s.contains("auto.yaml")),
        "{}",
        secret_instances[0]
    );
}

#[test]
fn dogstatsd_metrics_from_a_container_carry_its_tags() {
    let _daemon = docker::shared();
    let image = docker::image();
    let sockets = tempfile::tempdir().expect("temp dir");
    let socket = sockets.path().join("dsd.socket");
    let runner = RunnerProcess::start(
        Options {
            docker: Some(SOCKET.to_owned()),
            dogstatsd_socket: Some(socket),
            extra: "aggregator:\n  bucket_size_seconds: 1\n".to_owned(),
            ..Options::default()
        },
        &[],
    );
    let name = unique_name("sender");
    let mount = format!("{}:/run/kennel", sockets.path().display());
    let container = Container::run(
        &name,
        &[
            "-v",
            &mount,
            "-l",
            "com.datadoghq.tags.service=shop",
            image,
            "/bin/sh",
            "-c",
            // A spoofed container id must not win over the kernel's answer.
            "/bin/dsd_send /run/kennel/dsd.socket 100 100 'app.orders:1|c|#route:checkout|c:ci-0000000000000000000000000000000000000000000000000000000000000000'; sleep 30",
        ],
    );
    let labels = [
        format!("container_name=\"{name}\""),
        format!("container_id=\"{}\"", container.id),
        "service=\"shop\"".to_owned(),
        "short_image=\"httpd\"".to_owned(),
        "route=\"checkout\"".to_owned(),
    ];
    runner.wait_for("the container's metrics with its tags", WAIT, |r| {
        !series(r, "app_orders_total", &labels).is_empty()
    });
    assert!(
        !runner.metrics().contains("container_id=\"0000000000"),
        "the spoofed container id was used"
    );
}

#[test]
fn a_docker_restart_resyncs_without_doubling_or_losing_checks() {
    let _daemon = docker::exclusive();
    let image = docker::image();
    let runner = runner(&[]);
    let kept = unique_name("kept");
    let _kept = Container::run(
        &kept,
        &[
            "--restart",
            "always",
            "--stop-timeout",
            "1",
            "-l",
            HTTP_CHECK_LABEL,
            image,
        ],
    );
    let gone = unique_name("gone");
    let _gone = Container::run(
        &gone,
        &["--stop-timeout", "1", "-l", HTTP_CHECK_LABEL, image],
    );
    runner.wait_for("both containers' checks to run", WAIT, |r| {
        ran(r, &kept) && ran(r, &gone)
    });

    docker::restart_daemon();
    let restarted = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();

    // The container without a restart policy stayed down: its check goes. The other came back
    // (with a new pid, perhaps a new address): exactly one check for it, succeeding again.
    runner.wait_for("the store to resync", Duration::from_secs(60), |r| {
        let kept = r.instances_from(&kept);
        r.instances_from(&gone).is_empty()
            && kept.len() == 1
            && kept[0]["last_success"]
                .as_f64()
                .is_some_and(|t| t > restarted)
    });
    // Not a wait: time for a doubled check, which would come from a second resync, to show.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(runner.instances_from(&kept).len(), 1, "no doubled check");
    let log = runner.log();
    assert!(
        log.matches("connected to Docker").count() >= 2,
        "connected, then connected again after the restart:\n{log}"
    );
}

#[test]
fn container_churn_leaks_no_schedules_and_no_memory() {
    let _daemon = docker::shared();
    let runner = runner(&[]);
    let prefix = unique_name("churn");
    // Each round ends only once all of its checks are unscheduled: a leaked schedule times out.
    let rss = churn::run(&runner, &prefix, HTTP_CHECK_LABEL, 3, 12);
    println!("runner RSS after each round of 12 containers: {rss:?} KiB");
    // The first round warms up allocations. After it the RSS moves by a MiB or so either way
    // (the `discovery` benchmark prints it over ten rounds), a little more when a loaded
    // machine spreads the work over more of the allocator's per-thread arenas. 32 MiB is far
    // past that, and a runner that kept 1.5 MiB of every container it saw go would pass it
    // over the 24 containers of the next two rounds.
    let growth = rss[2].saturating_sub(rss[0]);
    assert!(
        growth < 32 * 1024,
        "RSS grew by {growth} KiB over two rounds: {rss:?}"
    );
    assert!(
        runner.config_errors().is_empty(),
        "{:?}",
        runner.config_errors()
    );
}

#[test]
fn test_check_resolves_templates_against_the_running_containers() {
    let _daemon = docker::shared();
    let image = docker::image();
    let name = unique_name("tc");
    let container = Container::run(&name, &["-l", HTTP_CHECK_LABEL, image]);
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("conf.d")).unwrap();
    let config = dir.path().join("kennel.yaml");
    std::fs::write(
        &config,
        format!("docker_socket: {SOCKET}\nplugins:\n  cache_path: null\n  state_path: null\n"),
    )
    .unwrap();
    let out = std::process::Command::new(kennel_tests::runner_bin())
        .args(["test-check", "http_check", "--json", "--config"])
        .arg(&config)
        .arg("--confd")
        .arg(dir.path().join("conf.d"))
        .arg("--plugins")
        .arg(kennel_tests::plugins_dir())
        .output()
        .expect("runner test-check runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let results: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "JSON output ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    // Other tests' containers may show up too; this one must, resolved and passing.
    let ours: Vec<&serde_json::Value> = results
        .as_array()
        .expect("a list of instances")
        .iter()
        .filter(|r| r["source"].as_str().is_some_and(|s| s.contains(&name)))
        .collect();
    assert_eq!(ours.len(), 1, "{stdout}");
    assert_eq!(ours[0]["status"], "OK", "{}", ours[0]);
    let metrics = ours[0]["runs"][0]["metrics"].as_array().expect("metrics");
    let can_connect = metrics
        .iter()
        .find(|m| m["name"] == "network.http.can_connect")
        .expect("network.http.can_connect");
    assert_eq!(can_connect["value"], 1.0);
    let tags: Vec<&str> = can_connect["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .filter_map(|t| t.as_str())
        .collect();
    assert!(
        tags.contains(&format!("container_id:{}", container.id).as_str())
            && tags.contains(&format!("container_name:{name}").as_str()),
        "{tags:?}"
    );
    assert!(
        tags.iter()
            .any(|t| t.starts_with("url:http://") && t.ends_with(":80/")),
        "the url was resolved: {tags:?}"
    );
}

#[test]
fn without_docker_the_runner_says_so_once_and_runs_its_checks() {
    let runner = RunnerProcess::start(
        Options {
            docker: Some("/nonexistent/docker.sock".to_owned()),
            ..Options::default()
        },
        &[(
            "test_plugin.yaml",
            "instances:\n  - mode: ok\n    min_collection_interval: 0.2\n",
        )],
    );
    runner.wait_for("the conf.d check to run", WAIT, |r| {
        r.instances_from("test_plugin.yaml")
            .iter()
            .any(|i| runs(i) >= 3)
    });
    // Not a wait: past the watcher's longest back-off, so that a repeated notice would show.
    std::thread::sleep(Duration::from_secs(11));
    let log = runner.log();
    assert_eq!(
        log.matches("no Docker daemon socket").count(),
        1,
        "one notice:\n{log}"
    );
    assert_eq!(runner.status()["containers"], serde_json::json!([]));
}

#[test]
fn editing_a_confd_template_re_resolves_it_for_running_containers() {
    let _daemon = docker::shared();
    let image = docker::image();
    let template = |version: u32| {
        format!(
            "ad_identifiers: [kennel-test/httpd]\ninstances:\n  - name: edited\n    url: http://%%host%%:%%port%%/\n    tags: [template_version:{version}]\n"
        )
    };
    let runner = runner(&[("http_check.d/auto.yaml", &template(1))]);
    let name = unique_name("edited");
    let _container = Container::run(&name, &[image]);
    runner.wait_for("the template to run for the container", WAIT, |r| {
        ran(r, &name)
    });
    let first: Vec<serde_json::Value> = runner.instances_from(&name);
    assert_eq!(first.len(), 1, "{first:?}");

    runner.write_confd("http_check.d/auto.yaml", &template(2));
    runner.wait_for(
        "the edited template to replace the old instance",
        WAIT,
        |r| {
            let now = r.instances_from(&name);
            now.len() == 1 && now[0]["instance_id"] != first[0]["instance_id"] && runs(&now[0]) >= 1
        },
    );
    let labels = [
        format!("container_name=\"{name}\""),
        "template_version=\"2\"".to_owned(),
    ];
    runner.wait_for("the new tag on the container's metrics", WAIT, |r| {
        !series(r, "network_http_can_connect", &labels).is_empty()
    });

    std::fs::remove_file(runner.confd().join("http_check.d/auto.yaml")).unwrap();
    runner.wait_for("the removed template's instance to go", WAIT, |r| {
        r.instances_from(&name).is_empty()
    });
}
