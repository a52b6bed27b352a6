//! The `runner` binary as a user runs it: `test-check` output and exit codes, `run` start-up
//! and clean stop.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use kennel_tests::http_server::{HttpServer, Reply, closed_port};
use kennel_tests::{plugins_dir, repo_root, runner_bin, wait};

/// How long a test waits for `runner run` to get to what it looks for.
const WAIT: Duration = Duration::from_secs(20);

fn confd(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

fn runner(args: &[&str], confd: &Path) -> Command {
    let mut command = Command::new(runner_bin());
    command
        .args(args)
        .arg("--confd")
        .arg(confd)
        .arg("--plugins")
        .arg(plugins_dir())
        .env("XDG_CACHE_HOME", confd.join(".cache"))
        // Containers started by the Docker tests running alongside must not show up here.
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .env_remove("RUST_LOG");
    command
}

async fn output(mut command: Command) -> Output {
    tokio::task::spawn_blocking(move || command.output().expect("runner starts"))
        .await
        .expect("runner finishes")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `GET http://127.0.0.1:{port}{path}`: the status code and the body, or `None` while nothing
/// answers.
async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    runner::plugin::http::install_crypto_provider();
    let response = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("an HTTP client")
        .get(format!("http://127.0.0.1:{port}{path}"))
        .send()
        .await
        .ok()?;
    let code = response.status().as_u16();
    Some((code, response.text().await.ok()?))
}

/// `get`, for a JSON body.
async fn get_json(port: u16, path: &str) -> Option<(u16, serde_json::Value)> {
    let (code, body) = get(port, path).await?;
    Some((code, serde_json::from_str(&body).ok()?))
}

#[tokio::test(flavor = "multi_thread")]
async fn test_check_prints_what_the_check_emitted_and_exits_zero() {
    let server = HttpServer::start(|_| Reply::ok("fine")).await;
    let dir = confd(&[(
        "http_check.d/conf.yaml",
        &format!(
            "instances:\n  - name: local\n    url: {}\n",
            server.url("/")
        ),
    )]);
    let out = output(runner(&["test-check", "http_check"], dir.path())).await;
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        text(&out.stderr)
    );
    for expected in [
        "=== Series ===",
        "\"metric\": \"network.http.response_time\"",
        "=== Service Checks ===",
        "\"check\": \"http.can_connect\"",
        "instance:local",
        "Running Checks",
        "[OK]",
        "Total Runs: 1",
        "Metric Samples: Last Run: 3, Total: 3",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn test_check_exits_non_zero_when_the_check_fails() {
    let dir = confd(&[("test_plugin.yaml", "instances:\n  - mode: panic\n")]);
    let out = output(runner(&["test-check", "test_plugin"], dir.path())).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("[ERROR]"), "{stdout}");
    assert!(stdout.contains("asked to panic"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn test_check_without_config_says_where_it_looked() {
    let dir = confd(&[]);
    let out = output(runner(&["test-check", "nope"], dir.path())).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("no configuration found for check `nope`"),
        "{stderr}"
    );
    assert!(stderr.contains("nope.d/*.yaml"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn test_check_reports_a_broken_config_with_file_and_line() {
    let dir = confd(&[(
        "test_plugin.d/conf.yaml",
        "instances:\n  - mode: ok\n    timeout: never\n",
    )]);
    let out = output(runner(&["test-check", "test_plugin"], dir.path())).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("test_plugin.d/conf.yaml:3:"), "{stderr}");
    assert!(stderr.contains("timeout"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn test_check_rate_shows_rates_and_json_is_machine_readable() {
    let dir = confd(&[(
        "test_plugin.yaml",
        "instances:\n  - mode: count\n    value: 42\n",
    )]);
    let out = output(runner(
        &["test-check", "test_plugin", "--check-rate", "--json"],
        dir.path(),
    ))
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    let instance = &json[0];
    assert_eq!(instance["status"], "OK");
    let runs = instance["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2);
    assert_eq!(
        runs[0]["metrics"].as_array().unwrap().len(),
        0,
        "the first run has no previous sample"
    );
    let second = runs[1]["metrics"].as_array().unwrap();
    let rate = second
        .iter()
        .find(|m| m["name"] == "test.rate")
        .expect("a rate after two runs");
    assert_eq!(rate["type"], "gauge");
    assert_eq!(rate["value"], 0.0);
    let count = second
        .iter()
        .find(|m| m["name"] == "test.monotonic")
        .expect("a count after two runs");
    assert_eq!(count["type"], "count");
}

#[tokio::test(flavor = "multi_thread")]
async fn test_check_runs_a_wasm_file_with_an_instance_config() {
    let dir = confd(&[("mine.yaml", "instances:\n  - mode: ok\n")]);
    let wasm = plugins_dir().join("test_plugin.wasm");
    let mut command = runner(&["test-check"], dir.path());
    command
        .arg("--wasm")
        .arg(&wasm)
        .arg("--instance-config")
        .arg(dir.path().join("mine.yaml"));
    let out = output(command).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("test.ok"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn run_refuses_an_unknown_config_key_naming_it() {
    let dir = confd(&[("kennel.yaml", "hostname: a\ncheck_runner: 4\n")]);
    let mut command = Command::new(runner_bin());
    command
        .args(["run", "--config"])
        .arg(dir.path().join("kennel.yaml"))
        .env("XDG_CACHE_HOME", dir.path().join(".cache"));
    let out = output(command).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("unknown field `check_runner`"), "{stderr}");
    assert!(stderr.contains("line 2"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn run_schedules_checks_reports_status_and_stops_cleanly_on_sigterm() {
    let port = closed_port();
    let dir = confd(&[
        (
            "test_plugin.yaml",
            "instances:\n  - mode: ok\n    min_collection_interval: 0.5\n",
        ),
        ("broken.yaml", "instances: [\n"),
    ]);
    let elsewhere = tempfile::tempdir().expect("temp dir");
    let config = elsewhere.path().join("kennel.yaml");
    std::fs::write(
        &config,
        format!(
            "status_listen: 127.0.0.1:{port}\ndogstatsd_port: 0\nopenmetrics_listen: null\ndocker_socket: null\n"
        ),
    )
    .unwrap();
    let mut command = runner(&["run"], dir.path());
    command
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "runner=debug")
        .stderr(Stdio::piped())
        .stdout(Stdio::null());
    let child = command.spawn().expect("runner starts");
    // Three runs of the 0.5 s check, which the log read below must show.
    let status = wait::until_async(
        WAIT,
        || get_json(port, "/status"),
        |status| {
            status.as_ref().is_some_and(|(_, status)| {
                status["instances"][0]["runs"]
                    .as_u64()
                    .is_some_and(|runs| runs >= 3)
            })
        },
    )
    .await;
    assert!(status.is_some(), "the status API answers");

    let (code, health) = get_json(port, "/health")
        .await
        .expect("the status API answers with JSON");
    assert_eq!(code, 200, "{health}");
    assert_eq!(health["status"], "ok");
    assert_eq!(health["instances"], 1);
    assert_eq!(health["config_errors"], 1);

    let mut status = Command::new(runner_bin());
    status.arg("status").arg("--config").arg(&config);
    let shown = output(status).await;
    let shown_text = text(&shown.stdout);
    assert!(shown.status.success(), "{}", text(&shown.stderr));
    for expected in [
        "Config Errors",
        "broken.yaml:2:",
        "Running Checks",
        "test_plugin (test_plugin:",
        "[OK]",
        "Errors: 0",
    ] {
        assert!(
            shown_text.contains(expected),
            "missing {expected:?} in:\n{shown_text}"
        );
    }

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(kill.expect("kill runs").success(), "SIGTERM sent");
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().expect("runner exits"))
        .await
        .expect("wait");
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("broken.yaml:2:"),
        "the broken file is reported: {stderr}"
    );
    assert!(
        stderr.contains("runner started") && stderr.contains("instances=1"),
        "{stderr}"
    );
    let runs = stderr
        .lines()
        .filter(|l| l.contains("test_plugin") && l.contains(" run "))
        .count();
    assert!(
        runs >= 3,
        "expected a run every 0.5 s, saw {runs}:\n{stderr}"
    );
    assert!(stderr.contains("stopped"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn status_without_a_running_runner_says_so() {
    let dir = confd(&[]);
    let config = dir.path().join("kennel.yaml");
    std::fs::write(
        &config,
        format!("status_listen: 127.0.0.1:{}\n", closed_port()),
    )
    .unwrap();
    let mut command = Command::new(runner_bin());
    command.arg("status").arg("--config").arg(&config);
    let out = output(command).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("is `runner run` running"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn default_config_runs_and_its_check_is_ok() {
    let cache = tempfile::tempdir().expect("temp dir");
    let mut command = Command::new(runner_bin());
    command
        .args(["run", "--config", "kennel.yaml"])
        .current_dir(repo_root())
        .env("XDG_CACHE_HOME", cache.path())
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .stdout(Stdio::null());
    let child = command.spawn().expect("runner starts");
    let status = || {
        let mut status = Command::new(runner_bin());
        status
            .args(["status", "--config", "kennel.yaml"])
            .current_dir(repo_root());
        output(status)
    };
    let shown = wait::until_async(WAIT, status, |shown| {
        shown.status.success() && text(&shown.stdout).contains("[OK]")
    })
    .await;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().expect("runner exits"))
        .await
        .expect("wait");
    let shown_text = text(&shown.stdout);
    assert!(
        shown.status.success(),
        "status: {}\nrunner: {}",
        text(&shown.stderr),
        text(&out.stderr)
    );
    assert!(
        shown_text.contains("http_check (http_check:"),
        "{shown_text}"
    );
    assert!(shown_text.contains("[OK]"), "{shown_text}");
    assert!(!shown_text.contains("Config Errors"), "{shown_text}");
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn run_serves_dogstatsd_and_check_metrics_on_a_valid_prometheus_page() {
    let dir = confd(&[(
        "test_plugin.yaml",
        "instances:\n  - mode: ok\n    min_collection_interval: 0.5\n",
    )]);
    let elsewhere = tempfile::tempdir().expect("temp dir");
    let socket = elsewhere.path().join("dsd.socket");
    let (status_port, metrics_port) = (closed_port(), closed_port());
    let config = elsewhere.path().join("kennel.yaml");
    std::fs::write(
        &config,
        format!(
            "status_listen: 127.0.0.1:{status_port}\nopenmetrics_listen: 127.0.0.1:{metrics_port}\ndocker_socket: null\n\
             dogstatsd_socket: {}\ndogstatsd_port: 0\naggregator:\n  bucket_size_seconds: 1\n",
            socket.display()
        ),
    )
    .unwrap();
    let mut command = runner(&["run"], dir.path());
    command
        .arg("--config")
        .arg(&config)
        .stderr(Stdio::null())
        .stdout(Stdio::null());
    let mut child = command.spawn().expect("runner starts");
    let listening = wait::until_async(WAIT, || async { socket.exists() }, |up| *up).await;
    assert!(listening, "the runner listens on {}", socket.display());
    let sent = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import socket\ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
             s.sendto(b'shop.orders:3|c|#env:prod\\nshop.basket.size:4|g', '{}')",
            socket.display()
        ))
        .status()
        .expect("python3 runs");
    assert!(sent.success());
    // A sender may put quotes and backslashes in a name and a tag: the page stays valid.
    std::os::unix::net::UnixDatagram::unbound()
        .and_then(|client| client.send_to(br#"hostile"name\x:1|g|#q:a"b\c"#, &socket))
        .expect("a datagram sent");

    let expected = [
        "shop_orders_total{env=\"prod\"} 3",
        "shop_basket_size 4",
        r#"hostile_name_x{q="a\"b\\c"} 1"#,
        r#"# HELP hostile_name_x hostile"name\\x"#,
        "test_ok{host=\"",
        "kennel_dogstatsd_datagrams_total{transport=\"uds\"} 2",
    ];
    let page = wait::until_async(
        WAIT,
        || get(metrics_port, "/metrics"),
        |page| {
            page.as_ref()
                .is_some_and(|(_, page)| expected.iter().all(|e| page.contains(e)))
        },
    )
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let (_, page) = page.expect("the OpenMetrics endpoint answers");
    for expected in expected {
        assert!(page.contains(expected), "missing {expected:?} in:\n{page}");
    }
    let (accepted, findings) = kennel_tests::prometheus::check_metrics(&page);
    // The Agent's own names end in `.total` for gauges (`system.mem.total`, `system.disk.total`):
    // promtool's naming lint asks Prometheus's conventions of them, which the page keeps the
    // Agent's names over. Any other finding (a format error above all) fails.
    let other: Vec<&str> = findings
        .lines()
        .filter(|line| !line.ends_with("non-counter metrics should not have \"_total\" suffix"))
        .filter(|line| !line.trim().is_empty())
        .collect();
    assert!(
        accepted || other.is_empty(),
        "promtool: {}",
        other.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn test_check_leaves_the_runners_stored_state_alone() {
    let reports = tempfile::tempdir().expect("temp dir");
    let report = reports.path().join("chef-run-report-20261120110000.json");
    std::fs::copy(
        kennel_tests::repo_root().join("checks/chef/tests/fixtures/success.json"),
        &report,
    )
    .unwrap();
    let file = std::fs::File::options().write(true).open(&report).unwrap();
    file.set_modified(std::time::SystemTime::now() - Duration::from_secs(60))
        .unwrap();
    let dir = reports.path().display().to_string();
    let conf = confd(&[(
        "chef.yaml",
        &format!("instances:\n  - reports_dir: {dir}\n    allowed_paths: [{dir}]\n"),
    )]);
    for attempt in 1..=2 {
        let mut command = runner(&["test-check", "chef"], conf.path());
        command.env("XDG_STATE_HOME", conf.path().join("state"));
        let out = output(command).await;
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
        assert!(
            stdout.contains("Chef completed in 42 seconds on web01.example.com"),
            "attempt {attempt} still sees the report:\n{stdout}"
        );
    }
}

#[test]
fn a_missing_config_file_is_said_once_naming_it() {
    let out = Command::new(runner_bin())
        .args(["status", "--config", "/nonexistent/kennel.yaml"])
        .output()
        .expect("runner starts");
    let said = text(&out.stderr);
    assert!(!out.status.success());
    assert!(said.contains("/nonexistent/kennel.yaml"), "{said}");
    assert_eq!(
        said.matches("No such file or directory").count(),
        1,
        "{said}"
    );
}

#[test]
fn an_environment_variable_that_does_not_fit_its_key_stops_the_start_naming_it() {
    let dir = confd(&[]);
    let out = runner(&["run"], dir.path())
        .env("DD_CHECK_RUNNERS", "several")
        .stdin(Stdio::null())
        .output()
        .expect("runner starts");
    let said = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        said.contains("DD_CHECK_RUNNERS") && said.contains("`check_runners`"),
        "{said}"
    );
}

/// The id `runner test-check` shows for the one instance of `check`.
fn shown_instance_id(stdout: &str, check: &str) -> String {
    let start = stdout
        .find(&format!("{check} ({check}:"))
        .unwrap_or_else(|| panic!("no instance id in:\n{stdout}"))
        + check.len()
        + 2;
    stdout[start..start + check.len() + 17].to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn instance_ids_are_keyed_per_install_and_reveal_nothing_of_the_config() {
    let config = r#"{"mode":"ok","password":"hunter2"}"#;
    let conf = confd(&[(
        "test_plugin.yaml",
        "instances:\n  - mode: ok\n    password: hunter2\n",
    )]);
    let id_with_state = |state: std::path::PathBuf| {
        let mut command = runner(&["test-check", "test_plugin"], conf.path());
        command.env("XDG_STATE_HOME", state);
        async move {
            let out = output(command).await;
            let stdout = text(&out.stdout);
            assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
            shown_instance_id(&stdout, "test_plugin")
        }
    };
    let install = conf.path().join("state");
    let first = id_with_state(install.clone()).await;
    assert_eq!(
        id_with_state(install.clone()).await,
        first,
        "an install keeps its ids across starts"
    );
    let key = install.join("kennel/instance-id.key");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&key)
            .unwrap_or_else(|e| panic!("{}: {e}", key.display()))
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "only the runner's user reads the key");
    let other = id_with_state(conf.path().join("other-state")).await;
    assert_ne!(other, first, "another install has other ids");

    // What a dictionary attack on the old ids computed: the plain digest of the config.
    let mut sha256sum = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum runs");
    std::io::Write::write_all(
        sha256sum.stdin.as_mut().expect("stdin"),
        format!("test_plugin\0{config}\0null\0").as_bytes(),
    )
    .expect("sha256sum reads");
    let digest = text(&sha256sum.wait_with_output().expect("sha256sum ends").stdout);
    let plain = format!("test_plugin:{}", &digest[..16]);
    assert_ne!(first, plain, "the id is the config's plain digest");
}

/// Issue 14: service checks used to be invisible under `runner run` (only counted). A check
/// that passes and one that fails: both service checks are gauges of their status code on
/// `/metrics` (0 OK, 2 CRITICAL), and `runner status` shows each instance's latest, with its
/// message.
#[test]
fn service_checks_show_on_metrics_and_in_status() {
    use kennel_tests::runner_process::{Options, RunnerProcess};
    let runner = RunnerProcess::start(
        Options::default(),
        &[
            (
                "test_plugin.d/ok.yaml",
                "instances:\n  - mode: ok\n    min_collection_interval: 1\n",
            ),
            (
                "test_plugin.d/fail.yaml",
                "instances:\n  - mode: fail\n    min_collection_interval: 1\n",
            ),
        ],
    );
    let ok = "service_check_test_can_run{";
    let page = wait::until(
        Duration::from_secs(30),
        || runner.metrics(),
        |page| page.matches(ok).count() >= 2,
    );
    let rows: Vec<&str> = page.lines().filter(|l| l.starts_with(ok)).collect();
    assert!(
        rows.iter()
            .any(|l| l.contains("mode=\"ok\"") && l.ends_with(" 0")),
        "{page}"
    );
    assert!(
        rows.iter()
            .any(|l| l.contains("mode=\"fail\"") && l.ends_with(" 2")),
        "{page}"
    );
    let status = Command::new(runner_bin())
        .arg("status")
        .arg("--config")
        .arg(runner.config_path())
        .output()
        .expect("runner status runs");
    let status = text(&status.stdout);
    assert!(
        status.contains("Service Check test.can_run: OK"),
        "{status}"
    );
    assert!(
        status.contains("Service Check test.can_run: CRITICAL (asked to fail)"),
        "{status}"
    );
}

/// Issue 14: after an endpoint dies, `http_check`'s last response time used to stay on
/// `/metrics` for five minutes, looking healthy. Now a check's series that its latest run did
/// not emit leave the page as soon as that run is flushed, while the service check turns
/// CRITICAL; when the endpoint comes back, so does the series.
#[test]
fn a_failing_checks_stale_series_leave_the_page() {
    use kennel_tests::runner_process::{Options, RunnerProcess};
    let io = tokio::runtime::Runtime::new().expect("a runtime for the HTTP server");
    let server = io.block_on(HttpServer::start(|_| Reply::ok("up")));
    let port = server.addr.port();
    let runner = RunnerProcess::start(
        Options::default(),
        &[(
            "http_check.d/site.yaml",
            &format!(
                "instances:\n  - name: site\n    url: http://127.0.0.1:{port}/\n    min_collection_interval: 1\n"
            ),
        )],
    );
    let response_time = "network_http_response_time{";
    let can_connect = "service_check_http_can_connect{";
    let row = |page: &str, name: &str| {
        page.lines()
            .find(|l| l.starts_with(name))
            .map(str::to_owned)
    };
    let page = wait::until(
        Duration::from_secs(40),
        || runner.metrics(),
        |page| row(page, response_time).is_some(),
    );
    assert!(
        row(&page, can_connect).is_some_and(|r| r.ends_with(" 0")),
        "{page}"
    );

    drop(server);
    let page = wait::until(
        Duration::from_secs(40),
        || runner.metrics(),
        |page| row(page, can_connect).is_some_and(|r| r.ends_with(" 2")),
    );
    // The run that found it down, flushed with its CRITICAL, sent no response time.
    let page = match row(&page, response_time) {
        None => page,
        Some(_) => wait::until(
            Duration::from_secs(15),
            || runner.metrics(),
            |page| row(page, response_time).is_none(),
        ),
    };
    assert_eq!(row(&page, response_time), None, "{page}");
    let retired = row(&page, "kennel_aggregator_contexts_retired_total");
    assert!(retired.is_some_and(|r| !r.ends_with(" 0")), "{page}");

    // Back up on the same port: the series comes back.
    let server = io.block_on(HttpServer::start_on(port, |_| Reply::ok("up")));
    wait::until(
        Duration::from_secs(40),
        || runner.metrics(),
        |page| {
            row(page, response_time).is_some()
                && row(page, can_connect).is_some_and(|r| r.ends_with(" 0"))
        },
    );
    drop(server);
}
