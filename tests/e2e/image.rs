//! The container image (`make image`), run the way the README's "Deploying" section documents
//! the node-agent mode, against a real Docker daemon and real application containers:
//! autodiscovery from labels, DogStatsD from another container over the shared socket with
//! that container's tags (origin detection across PID namespaces), the collector's container
//! metrics, the forwarder's delivery to VictoriaMetrics, the image's health check, `runner
//! status` inside it, and a clean `docker stop`.
//!
//! The command run is the README's, read from it, with what a test must change replaced (each
//! replacement fails the test if the README no longer has what it replaces): the container's
//! name, the host paths (a scratch directory's), the published port (a free one), and four
//! variables more: the intake, a VictoriaMetrics on the Docker bridge's gateway taking v1 JSON
//! with zlib, and a collection interval of 2 s rather than 15.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use kennel_tests::docker::{self, Container, docker, unique_name};
use kennel_tests::victoria::VictoriaMetrics;

/// The tag `make image` builds.
const IMAGE: &str = "kennel:dev";
/// The image's user.
const UID: u32 = 10001;
const WAIT: Duration = Duration::from_secs(60);

fn kennel_image() -> &'static str {
    let out = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", IMAGE])
        .output()
        .expect("docker runs");
    assert!(
        out.status.success(),
        "no image {IMAGE}: run `make image` (make test does)"
    );
    IMAGE
}

/// `docker exec <container> runner <args>`: its exit status and output.
fn runner_in(container: &Container, args: &[&str]) -> (bool, String) {
    let out = Command::new("docker")
        .args(["exec", &container.id, "/usr/bin/runner"])
        .args(args)
        .output()
        .expect("docker runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn metrics(url: &str) -> String {
    reqwest::blocking::get(url)
        .and_then(|r| r.text())
        .unwrap_or_default()
}

/// The lines of a `/metrics` page for `name` carrying every one of `labels`.
fn series<'a>(page: &'a str, name: &str, labels: &[&str]) -> Vec<&'a str> {
    let start = format!("{name}{{");
    page.lines()
        .filter(|line| line.starts_with(&start) && labels.iter().all(|l| line.contains(l)))
        .collect()
}

#[test]
fn the_image_runs_as_the_readme_documents_it_and_stops_cleanly() {
    let _daemon = docker::shared();
    let app_image = docker::image();
    let image = kennel_image();
    let scratch = tempfile::tempdir().expect("temp dir");
    let gateway = bridge_address();
    let victoria = VictoriaMetrics::start_on(&gateway);
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("the hostname")
        .trim()
        .to_owned();

    // The host side: the socket directory the image's user owns (the README's `install -d`),
    // conf.d with one check of the runner's own, and a volume for the state.
    let socket_dir = scratch.path().join("run-kennel");
    std::fs::create_dir(&socket_dir).unwrap();
    std::os::unix::fs::chown(&socket_dir, Some(UID), Some(UID)).unwrap();
    std::fs::set_permissions(
        &socket_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let confd = scratch.path().join("conf.d");
    std::fs::create_dir_all(confd.join("http_check.d")).unwrap();
    std::fs::write(
        confd.join("http_check.d/conf.yaml"),
        "init_config:\ninstances:\n  - name: own_health\n    url: http://127.0.0.1:5010/health\n    min_collection_interval: 1\n",
    )
    .unwrap();
    let volume = unique_name("kennel-state");
    docker(&["volume", "create", &volume]);
    let _volume = Removal(vec!["volume", "rm", "-f"], volume.clone());
    let name = unique_name("kennel");
    let command = readme_command()
        .replace_once(
            "--name kennel ",
            &format!("--name {name} --label kennel.test={} ", std::process::id()),
        )
        .replace_once(
            "-v /var/run/kennel:/var/run/kennel",
            &format!("-v {}:/var/run/kennel", socket_dir.display()),
        )
        .replace_once(
            r#""$PWD/conf.d":/etc/kennel/conf.d:ro"#,
            &format!("{}:/etc/kennel/conf.d:ro", confd.display()),
        )
        .replace_once("kennel-state:/var/lib/kennel", &format!("{volume}:/var/lib/kennel"))
        .replace_once("-p 127.0.0.1:9125:9125", "-p 127.0.0.1::9125")
        .replace_once(
            " kennel:dev",
            &format!(
                " -e DD_DD_URL={} -e DD_USE_V2_API='{{series: false}}' \
                 -e DD_SERIALIZER_COMPRESSOR_KIND=zlib -e DD_CONTAINER_COLLECTION_INTERVAL=2 {image}",
                victoria.datadog_url()
            ),
        );
    let started = Instant::now();
    let out = Command::new("bash")
        .args(["-c", &command])
        .env("DD_API_KEY", "image-test-key")
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "{command}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kennel = Container {
        id: String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        name,
    };
    let port = docker(&["port", &kennel.id, "9125/tcp"]);
    let url = format!("http://{port}/metrics");
    let logs = || {
        let out = Command::new("docker")
            .args(["logs", &kennel.id])
            .output()
            .expect("docker runs");
        // The runner logs to stderr.
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    // Cold start: `docker run` to the first run of a check (as `runner status` inside the
    // image shows it), then to its result on /metrics (the aggregator's first closed bucket).
    let ran = kennel_tests::wait::until(
        WAIT,
        || runner_in(&kennel, &["status", "--json"]).1,
        |status| {
            serde_json::from_str::<serde_json::Value>(status).is_ok_and(|status| {
                status["instances"]
                    .as_array()
                    .is_some_and(|all| all.iter().any(|i| i["runs"].as_u64() >= Some(1)))
            })
        },
    );
    let first_run = started.elapsed();
    assert!(
        ran.contains("own_health") || ran.contains("http_check"),
        "{ran}\n{}",
        logs()
    );
    let page = kennel_tests::wait::until(
        WAIT,
        || metrics(&url),
        |page| {
            !series(
                page,
                "network_http_can_connect",
                &["instance=\"own_health\""],
            )
            .is_empty()
        },
    );
    assert!(
        !series(
            &page,
            "network_http_can_connect",
            &["instance=\"own_health\""]
        )
        .is_empty(),
        "no check result on the image's /metrics within {WAIT:?}: {}",
        logs()
    );
    eprintln!(
        "figure: image cold start, docker run -> first check run: {} ms; -> its result on /metrics: {} ms",
        first_run.as_millis(),
        started.elapsed().as_millis()
    );

    // An application container: a labelled check, and DogStatsD over the shared socket.
    let app_name = unique_name("app");
    let app = Container::run(
        &app_name,
        &[
            "-l",
            r#"com.datadoghq.ad.checks={"http_check":{"instances":[{"name":"app","url":"http://%%host%%:%%port%%/","min_collection_interval":1}]}}"#,
            "-l",
            "com.datadoghq.tags.service=shop",
            "-v",
            &format!("{}:/var/run/kennel:ro", socket_dir.display()),
            app_image,
            "/bin/sh",
            "-c",
            "/bin/httpd -p 80 -h /www; /bin/dsd_send /var/run/kennel/dsd.socket 600 100 'app.orders:1|c|#route:checkout'; sleep 60",
        ],
    );
    let container_name = format!("container_name=\"{app_name}\"");
    let wanted: [(&str, Vec<&str>); 4] = [
        // The label's check, with the container's tags.
        (
            "network_http_can_connect",
            vec!["instance=\"app\"", &container_name, "service=\"shop\""],
        ),
        // DogStatsD from the container, tagged by origin detection.
        (
            "app_orders_total",
            vec!["route=\"checkout\"", &container_name, "service=\"shop\""],
        ),
        // The collector's readings of its cgroups and of its network namespace.
        ("container_memory_usage", vec![&container_name]),
        ("container_net_rcvd", vec![&container_name]),
    ];
    let page = kennel_tests::wait::until(
        WAIT,
        || metrics(&url),
        |page| {
            wanted
                .iter()
                .all(|(name, labels)| !series(page, name, labels).is_empty())
        },
    );
    for (name, labels) in &wanted {
        assert!(
            !series(&page, name, labels).is_empty(),
            "no {name} with {labels:?} on the image's /metrics; the runner said:\n{}",
            logs()
        );
    }

    // The forwarder delivered the application's metrics, tagged, from inside the image.
    let stored = kennel_tests::wait::until(
        WAIT,
        || victoria.export("app.orders"),
        |stored| !stored.is_empty(),
    );
    let tags = format!("{stored:?}");
    assert!(
        tags.contains(&app_name) && tags.contains(&hostname),
        "VictoriaMetrics has app.orders with the container's name and the runner's host: {tags}"
    );

    // Inside the image: its health check, `runner health` and `runner status`.
    let health = kennel_tests::wait::until(
        WAIT,
        || {
            docker(&[
                "inspect",
                "--format",
                "{{.State.Health.Status}}",
                &kennel.id,
            ])
        },
        |state| state == "healthy",
    );
    assert_eq!(health, "healthy", "{}", logs());
    let (healthy, said) = runner_in(&kennel, &["health"]);
    assert!(healthy && status_is_ok(&said), "{said}");
    let (answered, status) = runner_in(&kennel, &["status"]);
    assert!(answered, "{status}");
    for expected in [
        "conf.d: /etc/kennel/conf.d",
        &app_name,
        "forwarder:",
        "collector",
        "dogstatsd:uds",
    ] {
        assert!(status.contains(expected), "{expected} in:\n{status}");
    }
    assert_eq!(
        docker(&["inspect", "--format", "{{.Config.User}}", &kennel.id]),
        format!("{UID}:{UID}"),
        "the runner is not root"
    );

    // `docker stop`: SIGTERM, a clean exit well before Docker's SIGKILL, the socket removed.
    let stopping = Instant::now();
    docker(&["stop", "--time", "20", &kennel.id]);
    let took = stopping.elapsed();
    let exit = docker(&["inspect", "--format", "{{.State.ExitCode}}", &kennel.id]);
    assert_eq!(exit, "0", "{}", logs());
    assert!(took < Duration::from_secs(15), "docker stop took {took:?}");
    let said = logs();
    assert!(said.contains("stopped"), "{said}");
    assert!(
        !Path::new(&socket_dir).join("dsd.socket").exists(),
        "the runner removes its socket"
    );
    eprintln!("figure: image docker stop: {} ms", took.as_millis());
    drop(app);
}

/// Whether a `/health` answer says ok.
fn status_is_ok(answer: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(answer).is_ok_and(|health| health["status"] == "ok")
}

/// The host's address on Docker's default bridge (Docker leaves the gateway out of the
/// bridge's IPAM config, so it is read from the bridge's interface).
fn bridge_address() -> String {
    let bridge = docker(&[
        "network",
        "inspect",
        "bridge",
        "--format",
        r#"{{index .Options "com.docker.network.bridge.name"}}"#,
    ]);
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "dev", &bridge])
        .output()
        .expect("ip runs");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .skip_while(|word| *word != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .unwrap_or_else(|| panic!("no IPv4 address on {bridge}: {text}"))
        .to_owned()
}

/// The README's `docker run` of the node agent, as one line.
fn readme_command() -> String {
    let readme = std::fs::read_to_string(kennel_tests::repo_root().join("README.md")).unwrap();
    let start = readme
        .find("docker run -d --name kennel ")
        .expect("the README documents `docker run -d --name kennel ...`");
    let end = start
        + readme[start..]
            .find(" kennel:dev\n")
            .expect("the README's command ends with the image")
        + " kennel:dev".len();
    readme[start..end].replace("\\\n", " ")
}

trait ReplaceOnce {
    /// `self` with the first `from` replaced; panics when the README's command no longer has
    /// it, so the test follows the README rather than drifting from it.
    fn replace_once(self, from: &str, to: &str) -> String;
}

impl ReplaceOnce for String {
    fn replace_once(self, from: &str, to: &str) -> String {
        assert!(
            self.contains(from),
            "the README's command has no `{from}`: {self}"
        );
        self.replacen(from, to, 1)
    }
}

/// Runs `docker <args> <name>` when dropped: a volume removed whatever the test's end.
struct Removal(Vec<&'static str>, String);

impl Drop for Removal {
    fn drop(&mut self) {
        let mut args = self.0.clone();
        args.push(&self.1);
        let _ = Command::new("docker").args(&args).output();
    }
}

/// The README's command's `-v` mounts: the path in the container → read-only.
fn readme_mounts() -> std::collections::BTreeMap<String, bool> {
    let command = readme_command();
    let words: Vec<&str> = command.split_whitespace().collect();
    words
        .windows(2)
        .filter(|pair| pair[0] == "-v")
        .map(|pair| {
            let parts: Vec<&str> = pair[1].split(':').collect();
            (parts[1].to_owned(), parts.get(2) == Some(&"ro"))
        })
        .collect()
}

#[test]
fn the_daemonset_is_the_counterpart_of_the_documented_docker_run() {
    let text =
        std::fs::read_to_string(kennel_tests::repo_root().join("deploy/kubernetes/kennel.yaml"))
            .unwrap();
    let documents: Vec<serde_json::Value> = text
        .split("\n---\n")
        .map(|doc| serde_norway::from_str(doc).expect("each document parses"))
        .collect();
    let daemonset = documents
        .iter()
        .find(|d| d["kind"] == "DaemonSet")
        .expect("a DaemonSet");
    let pod = &daemonset["spec"]["template"]["spec"];
    let runner = &pod["containers"][0];
    let command = readme_command();

    let mounts: std::collections::BTreeMap<String, bool> = runner["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["mountPath"].as_str().unwrap().to_owned(),
                m["readOnly"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert_eq!(mounts, readme_mounts(), "the same mounts, read-only alike");
    assert!(command.contains("--pid host") && pod["hostPID"] == true);
    assert!(
        command.contains("--read-only")
            && runner["securityContext"]["readOnlyRootFilesystem"] == true
    );
    assert!(
        command.contains("--cap-drop ALL")
            && runner["securityContext"]["capabilities"]["drop"][0] == "ALL"
    );
    assert!(
        command.contains("no-new-privileges")
            && runner["securityContext"]["allowPrivilegeEscalation"] == false
    );
    assert_eq!(pod["securityContext"]["runAsUser"], UID);
    assert!(
        command.contains("--sysctl net.unix.max_dgram_qlen=1024")
            && pod["securityContext"]["sysctls"][0]
                == serde_json::json!({"name": "net.unix.max_dgram_qlen", "value": "1024"})
    );
    assert_eq!(runner["image"], IMAGE);
    let dockerfile =
        std::fs::read_to_string(kennel_tests::repo_root().join("deploy/image/Dockerfile")).unwrap();
    assert!(dockerfile.contains(&format!("USER {UID}:{UID}")));
    assert!(dockerfile.contains(r#"CMD ["/usr/bin/runner", "health"]"#));
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(
            runner[probe]["exec"]["command"],
            serde_json::json!(["/usr/bin/runner", "health"]),
            "{probe} asks what the image's HEALTHCHECK asks"
        );
    }
    let env: Vec<&str> = runner["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    for variable in env {
        assert!(command.contains(variable), "{variable} is set by both");
    }
}
