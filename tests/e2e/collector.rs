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
            "--memory",
            "16m",
            "--memory-swap",
            "16m",
            image,
            "sh",
            "-c",
            "sleep 1; x=$(head -c 64000000 /dev/zero | tr '\\0' a); sleep 60",
        ],
    );
    let failing = Container::run(
        &unique_name("failing"),
        &[image, "sh", "-c", "sleep 1; exit 3"],
    );

    let oom_title = format!("Container {}: oom", hungry.id);
    let die_title = format!("Container {}: die", failing.id);
    let flushes = pipeline.wait_for(Duration::from_secs(30), |f| {
        !events(f, &oom_title).is_empty() && !events(f, &die_title).is_empty()
    });

    // Docker may report one OOM kill more than once; each report is passed on.
    let oom = events(&flushes, &oom_title)[0];
    assert_eq!(oom.alert_type, runner::check::AlertType::Error);
    assert_eq!(oom.source_type_name.as_deref(), Some("docker"));
    let oom_tags = format!("{oom:?}");
    for tag in ["event_type:oom", &format!("container_name:{}", hungry.name)] {
        assert!(oom_tags.contains(tag), "{tag} in {oom_tags}");
    }

    let exit = flushes
        .iter()
        .flat_map(|f| &f.service_checks)
        .find(|c| {
            c.name == "docker.exit" && c.tags.contains(&format!("container_name:{}", failing.name))
        })
        .unwrap_or_else(|| panic!("a docker.exit for {}", failing.name));
    assert_eq!(exit.status, runner::check::Status::Critical);
    assert_eq!(
        exit.message,
        format!("Container {} exited with 3", failing.name)
    );
    assert!(
        exit.tags.iter().any(|t| t.starts_with("short_image:")),
        "{exit:?}"
    );

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

/// The points of `name` for the container named `container`, in flush order.
fn points(flushes: &[Flush], name: &str, container: &str) -> Vec<f64> {
    let tag = format!("container_name:{container}");
    flushes
        .iter()
        .flat_map(|f| &f.series)
        .filter(|s| &*s.name == name && s.tags().any(|t| t == tag))
        .flat_map(|s| s.points.iter().map(|p| p.value))
        .collect()
}

fn last(flushes: &[Flush], name: &str, container: &str) -> f64 {
    *points(flushes, name, container).last().unwrap_or_else(|| {
        let mut seen: Vec<String> = flushes
            .iter()
            .flat_map(|f| &f.series)
            .filter(|s| s.name.starts_with("container.") || s.name.starts_with("kennel.collector"))
            .map(|s| {
                format!(
                    "{} {:?}",
                    s.name,
                    s.tags()
                        .filter(|t| t.starts_with("container_name"))
                        .collect::<Vec<_>>()
                )
            })
            .collect();
        seen.sort();
        seen.dedup();
        panic!("no {name} for {container}; the collector's series: {seen:#?}")
    })
}

/// A value of the container's v1 memory cgroup, read straight from the kernel.
fn cgroup_file(id: &str, file: &str) -> f64 {
    std::fs::read_to_string(format!("/sys/fs/cgroup/memory/docker/{id}/{file}"))
        .unwrap_or_else(|e| panic!("{file}: {e}"))
        .trim()
        .parse()
        .unwrap()
}

/// `docker stats --no-stream`'s memory usage, in bytes.
fn docker_stats_memory(id: &str) -> f64 {
    let text = docker::docker(&["stats", "--no-stream", "--format", "{{.MemUsage}}", id]);
    let used = text.split('/').next().unwrap().trim();
    let (number, unit) = used.split_at(used.find(|c: char| c.is_ascii_alphabetic()).unwrap());
    let factor = match unit {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        other => panic!("unit {other} in {text}"),
    };
    number.parse::<f64>().unwrap() * factor
}

#[test]
fn memory_and_cpu_match_the_kernel_and_docker_stats() {
    let _daemon = docker::shared();
    let image = docker::image();
    let dir = tempfile::tempdir().unwrap();
    let pipeline = docker_pipeline(dir.path());
    // 20 MB held in a shell variable, and a busy loop capped at half a core.
    let busy = Container::run(
        &unique_name("busy"),
        &[
            "--memory",
            "64m",
            "--cpus",
            "0.5",
            image,
            "sh",
            "-c",
            "x=$(head -c 20000000 /dev/zero | tr '\\0' a); while true; do :; done",
        ],
    );
    let flushes = pipeline.wait_for(Duration::from_secs(30), |f| {
        points(f, "container.cpu.usage", &busy.name).len() >= 4
            && points(f, "container.memory.usage", &busy.name)
                .last()
                .is_some_and(|v| *v > 20e6)
    });
    let name = &busy.name;
    assert_eq!(
        last(&flushes, "container.memory.limit", name),
        64.0 * 1024.0 * 1024.0
    );
    assert_eq!(
        last(&flushes, "docker.mem.limit", name),
        64.0 * 1024.0 * 1024.0
    );
    let usage = last(&flushes, "container.memory.usage", name);
    let kernel = cgroup_file(&busy.id, "memory.usage_in_bytes");
    assert!(
        (usage - kernel).abs() / kernel < 0.05,
        "usage {usage}, the cgroup says {kernel}"
    );
    let stats = docker_stats_memory(&busy.id);
    let working_set = last(&flushes, "container.memory.working_set", name);
    assert!(
        (working_set - stats).abs() / stats < 0.05,
        "working set {working_set}, docker stats {stats}"
    );
    let in_use = last(&flushes, "docker.mem.in_use", name);
    assert!(
        (in_use - usage / (64.0 * 1024.0 * 1024.0)).abs() < 0.02,
        "in_use {in_use} against usage {usage}"
    );

    // Half a core: 5e8 ns of CPU a second (docker.cpu.usage: 50, in USER_HZ).
    assert_eq!(last(&flushes, "container.cpu.limit", name), 5e8);
    let usage = points(&flushes, "container.cpu.usage", name);
    let recent = usage[usage.len() - 2..].iter().sum::<f64>() / 2.0;
    assert!((3.5e8..=6e8).contains(&recent), "cpu usage {usage:?}");
    let docker_usage = last(&flushes, "docker.cpu.usage", name);
    assert!(
        (35.0..=60.0).contains(&docker_usage),
        "docker.cpu.usage {docker_usage}"
    );
    assert!(
        last(&flushes, "container.cpu.throttled.periods", name) > 0.0,
        "throttled"
    );
    assert!(last(&flushes, "container.pid.thread_count", name) >= 1.0);
}

#[test]
fn an_oom_inside_a_container_raises_its_oom_counters() {
    let _daemon = docker::shared();
    let image = docker::image();
    let dir = tempfile::tempdir().unwrap();
    let pipeline = docker_pipeline(dir.path());
    // A child is OOM-killed; the container's first process lives on.
    let leaky = Container::run(
        &unique_name("leaky"),
        &[
            "--memory",
            "16m",
            "--memory-swap",
            "16m",
            image,
            "sh",
            "-c",
            // The child offers itself to the OOM killer first, so the kill never takes the
            // container's first process (and with it the cgroup the counters are read from).
            "sleep 2; sh -c \"echo 1000 > /proc/self/oom_score_adj; x=\\$(head -c 64000000 /dev/zero | tr '\\\\0' a)\"; sleep 120",
        ],
    );
    // Alone it takes seconds; beside the whole suite on two cores, filling 16 MiB through a
    // pipe under memory pressure has taken over 30. The container outlives the whole wait.
    let flushes = pipeline.wait_for(Duration::from_secs(90), |f| {
        points(f, "docker.mem.failed_count", &leaky.name)
            .last()
            .is_some_and(|v| *v > 0.0)
    });
    assert!(last(&flushes, "docker.mem.failed_count", &leaky.name) > 0.0);
    assert!(last(&flushes, "container.memory.oom_events", &leaky.name) > 0.0);
    assert!(
        last(&flushes, "docker.mem.sw_in_use", &leaky.name) <= 1.0,
        "rss + swap within the memory+swap limit"
    );
}

#[test]
fn network_traffic_between_two_containers_is_counted_on_both_sides() {
    let _daemon = docker::shared();
    let image = docker::image();
    let dir = tempfile::tempdir().unwrap();
    let config = RunnerConfig {
        docker_socket: Some(SOCKET.into()),
        container_collection_interval: 2.0,
        ..pipeline::config(dir.path())
    };
    let pipeline = TestPipeline::start(config, vec![]);
    const SIZE: usize = 4_000_000;
    const TIMES: usize = 5;
    let server = Container::run(
        &unique_name("server"),
        &[
            image,
            "sh",
            "-c",
            &format!("head -c {SIZE} /dev/urandom > /www/blob; exec httpd -f -p 80 -h /www"),
        ],
    );
    let host_network = Container::run(
        &unique_name("hostnet"),
        &["--network", "host", image, "sleep", "60"],
    );
    let sidecar = Container::run(
        &unique_name("sidecar"),
        &[
            "--network",
            &format!("container:{}", server.id),
            image,
            "sleep",
            "60",
        ],
    );
    // Two passes before the transfer, so the rates have a baseline.
    pipeline.wait_for(Duration::from_secs(20), |f| {
        points(f, "container.net.rcvd", &server.name).len() >= 2
    });
    let client = Container::run(
        &unique_name("client"),
        &[
            image,
            "sh",
            "-c",
            &format!(
                "sleep 5; for i in $(seq {TIMES}); do wget -q -O /dev/null http://{}/blob; done; sleep 60",
                server.ip()
            ),
        ],
    );
    let expected = (SIZE * TIMES) as f64;
    // Each point is a rate over the 2 s between passes: their sum × 2 is the bytes moved.
    let moved = |f: &[Flush], name: &str, container: &str| {
        points(f, name, container).iter().sum::<f64>() * 2.0
    };
    let flushes = pipeline.wait_for(Duration::from_secs(60), |f| {
        moved(f, "container.net.rcvd", &client.name) >= expected
            && moved(f, "container.net.sent", &server.name) >= expected
    });
    for (name, container) in [
        ("container.net.rcvd", &client.name),
        ("container.net.sent", &server.name),
        ("docker.net.bytes_rcvd", &client.name),
        ("docker.net.bytes_sent", &server.name),
    ] {
        let got = moved(&flushes, name, container);
        assert!(
            (got - expected).abs() / expected < 0.08,
            "{name} of {container}: {got} bytes, {expected} moved"
        );
    }
    let bridge = flushes
        .iter()
        .flat_map(|f| &f.series)
        .find(|s| {
            &*s.name == "docker.net.bytes_rcvd"
                && s.tags()
                    .any(|t| t == format!("container_name:{}", client.name))
        })
        .unwrap();
    assert!(
        bridge.tags().any(|t| t == "docker_network:bridge"),
        "{bridge:?}"
    );
    assert!(
        points(&flushes, "container.net.rcvd", &host_network.name).is_empty(),
        "host network skipped"
    );
    assert!(
        points(&flushes, "container.net.rcvd", &sidecar.name).is_empty(),
        "a shared namespace is counted once, for its owner"
    );
    assert!(
        !points(&flushes, "container.memory.usage", &sidecar.name).is_empty(),
        "its cgroup is its own"
    );
}

/// The whole disk holding `path`, as `/dev/<name>`.
fn disk_of(path: &std::path::Path) -> String {
    use std::os::unix::fs::MetadataExt as _;
    let dev = std::fs::metadata(path).unwrap().dev();
    let (major, minor) = (libc_major(dev), libc_minor(dev));
    let sys = std::fs::canonicalize(format!("/sys/dev/block/{major}:{minor}")).unwrap();
    let disk = if sys.join("partition").exists() {
        sys.parent().unwrap().to_owned()
    } else {
        sys
    };
    format!("/dev/{}", disk.file_name().unwrap().to_string_lossy())
}

fn libc_major(dev: u64) -> u64 {
    ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff)
}

fn libc_minor(dev: u64) -> u64 {
    ((dev >> 12) & 0xffff_ff00) | (dev & 0xff)
}

#[test]
fn direct_io_writes_are_counted_per_device() {
    let _daemon = docker::shared();
    let image = docker::image();
    let dir = tempfile::tempdir().unwrap();
    let config = RunnerConfig {
        docker_socket: Some(SOCKET.into()),
        container_collection_interval: 2.0,
        ..pipeline::config(dir.path())
    };
    let pipeline = TestPipeline::start(config, vec![]);
    let data = tempfile::tempdir_in("/var/tmp").unwrap();
    let disk = disk_of(data.path());
    const MIB: usize = 16;
    // cgroup v1 counts a disk's IO only once some cgroup has a throttle rule on it: a limit no
    // write reaches turns the accounting on.
    let writer = Container::run(
        &unique_name("writer"),
        &[
            "-v",
            &format!("{}:/data", data.path().display()),
            "--device-write-bps",
            &format!("{disk}:1tb"),
            image,
            "sh",
            "-c",
            &format!(
                "sleep 5; dd if=/dev/zero of=/data/f bs=1M count={MIB} oflag=direct; sleep 60"
            ),
        ],
    );
    let name = disk.trim_start_matches("/dev/").to_owned();
    let written = |f: &[Flush]| {
        f.iter()
            .flat_map(|f| &f.series)
            .filter(|s| {
                &*s.name == "container.io.write"
                    && s.tags()
                        .any(|t| t == format!("container_name:{}", writer.name))
                    && s.tags().any(|t| t == format!("device:{name}"))
            })
            .flat_map(|s| s.points.iter().map(|p| p.value))
            .sum::<f64>()
            * 2.0
    };
    let expected = (MIB << 20) as f64;
    let flushes = pipeline.wait_for(Duration::from_secs(40), |f| written(f) >= expected * 0.95);
    let got = written(&flushes);
    assert!(
        got >= expected * 0.95,
        "{got} bytes written to {disk} counted, {expected} written"
    );
    assert!(
        last(&flushes, "docker.io.write_operations", &writer.name) >= 0.0,
        "the Docker family has it too"
    );
}
