//! The built-in collector against a real Docker daemon and the real kernel: container
//! lifecycle events, and (as they land) cgroup and network readings compared with what the
//! kernel and Docker say.

use std::time::Duration;

use kennel_tests::docker::{self, Container, SOCKET, unique_name};
use kennel_tests::pipeline::{self, TestPipeline};
use runner::aggregator::Flush;
use runner::config::RunnerConfig;

fn docker_pipeline(dir: &std::path::Path) -> TestPipeline {
    let config = RunnerConfig {
        docker_socket: Some(SOCKET.into()),
        container_collection_interval: 1.0,
        ..pipeline::config(dir)
    };
    TestPipeline::start(config, vec![])
}

fn events<'a>(flushes: &'a [Flush], title: &str) -> Vec<&'a runner::check::Event> {
    flushes
        .iter()
        .flat_map(|f| &f.events)
        .filter(|e| e.title == title)
        .collect()
}

#[test]
fn an_oom_kill_and_an_exit_code_are_reported_with_the_containers_tags() {
    let _daemon = docker::shared();
    let image = docker::image();
    let dir = tempfile::tempdir().unwrap();
    let pipeline = docker_pipeline(dir.path());

    let hungry = Container::run(
        &unique_name("hungry"),
        &[
            "--memory", "16m", "--memory-swap", "16m", image, "sh", "-c",
            "sleep 1; x=$(head -c 64000000 /dev/zero | tr '\\0' a); sleep 60",
        ],
    );
    let failing = Container::run(&unique_name("failing"), &[image, "sh", "-c", "sleep 1; exit 3"]);

    let oom_title = format!("Container {}: oom", hungry.id);
    let die_title = format!("Container {}: die", failing.id);
    let flushes = pipeline.wait_for(Duration::from_secs(30), |f| {
        !events(f, &oom_title).is_empty() && !events(f, &die_title).is_empty()
    });

    let oom = events(&flushes, &oom_title);
    assert_eq!(oom.len(), 1, "one oom event: {oom:?}");
    let oom = oom[0];
    assert_eq!(oom.alert_type, runner::check::AlertType::Error);
    assert_eq!(oom.source_type_name.as_deref(), Some("docker"));
    let oom_tags = format!("{oom:?}");
    for tag in ["event_type:oom", &format!("container_name:{}", hungry.name)] {
        assert!(oom_tags.contains(tag), "{tag} in {oom_tags}");
    }

    let exit = flushes
        .iter()
        .flat_map(|f| &f.service_checks)
        .find(|c| c.name == "docker.exit" && c.tags.contains(&format!("container_name:{}", failing.name)))
        .unwrap_or_else(|| panic!("a docker.exit for {}", failing.name));
    assert_eq!(exit.status, runner::check::Status::Critical);
    assert_eq!(exit.message, format!("Container {} exited with 3", failing.name));
    assert!(exit.tags.iter().any(|t| t.starts_with("short_image:")), "{exit:?}");

    // The daemon's counts, with the running container among them.
    let flushes = pipeline.wait_for(Duration::from_secs(10), |f| {
        f.iter()
            .flat_map(|f| &f.series)
            .any(|s| &*s.name == "docker.images.available")
    });
    let gauge = |name: &str| {
        flushes
            .iter()
            .flat_map(|f| &f.series)
            .filter(|s| &*s.name == name)
            .flat_map(|s| s.points.iter().map(|p| p.value))
            .last()
    };
    assert!(gauge("docker.images.available").unwrap() >= 1.0);
    assert!(gauge("docker.containers.running.total").unwrap() >= 1.0);
    drop((hungry, failing));
}
