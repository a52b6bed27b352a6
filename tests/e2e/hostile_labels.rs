//! Container labels as an attacker writes them, against a real runner, a real Docker daemon
//! and a real PostgreSQL: a label must not borrow the runner's reach (host sockets, loopback
//! services, other hosts), nor hold the runners every other check needs.

use std::net::TcpListener;
use std::time::Duration;

use kennel_tests::docker::{self, Container, SOCKET, unique_name};
use kennel_tests::postgres::Postgres;
use kennel_tests::runner_process::{Options, RunnerProcess};

const WAIT: Duration = Duration::from_secs(20);

fn start_runner(extra: &str) -> RunnerProcess {
    RunnerProcess::start(
        Options {
            docker: Some(SOCKET.to_owned()),
            extra: format!("aggregator:\n  bucket_size_seconds: 1\n{extra}"),
            ..Options::default()
        },
        &[],
    )
}

fn runs(instance: &serde_json::Value) -> u64 {
    instance["runs"].as_u64().unwrap_or(0)
}

/// A label asking the postgres check to log in as the superuser over the host's socket and
/// publish `pg_authid` (password hashes) as tags, and an http_check reading the runner's own
/// status API on loopback, beside an honest http_check of the container itself.
fn intruder_label(postgres: &Postgres, status_port: u16) -> String {
    let checks = serde_json::json!({
        "postgres": {"instances": [{
            "host": postgres.socket_dir().display().to_string(),
            "port": postgres.port,
            "username": "postgres",
            "dbname": "postgres",
            "min_collection_interval": 1,
            "custom_queries": [{
                "metric_prefix": "stolen",
                "query": "SELECT rolname, rolpassword, 1 FROM pg_authid WHERE rolpassword IS NOT NULL",
                "columns": [{"name": "role", "type": "tag"}, {"name": "hash", "type": "tag"},
                            {"name": "roles", "type": "gauge"}]
            }]
        }]},
        "http_check": {"instances": [
            {"name": "self", "url": "http://%%host%%:%%port%%/", "min_collection_interval": 1},
            {"name": "loopback", "url": format!("http://127.0.0.1:{status_port}/status"),
             "min_collection_interval": 1}
        ]}
    });
    format!("com.datadoghq.ad.checks={checks}")
}

#[test]
fn a_label_reaches_only_its_own_container_unless_the_operator_widens_it() {
    let _daemon = docker::shared();
    let image = docker::image();
    let postgres = Postgres::start();
    let runner = start_runner("");
    let name = unique_name("intruder");
    let label = intruder_label(&postgres, runner.status_port);
    let _container = Container::run(&name, &["-l", &label, image]);

    // The container's own check runs; the other two are refused, each saying why and which
    // runner config key would allow it.
    runner.wait_for("the container's own check to run", WAIT, |r| {
        r.instances_from(&name).iter().any(|i| runs(i) >= 1)
    });
    let instances = runner.instances_from(&name);
    assert_eq!(
        instances.len(),
        1,
        "only the honest instance runs: {instances:?}"
    );
    assert_eq!(instances[0]["check"], "http_check");
    let errors = runner.config_errors();
    let mentions = |what: &[&str]| {
        errors
            .iter()
            .any(|e| e.contains(&name) && what.iter().all(|w| e.contains(w)))
    };
    assert!(
        mentions(&[
            "postgres",
            "not scheduled",
            "socket directory",
            "label_checks.allowed_paths"
        ]),
        "{errors:#?}"
    );
    assert!(
        mentions(&[
            &format!("127.0.0.1:{}", runner.status_port),
            "not one of the container's own addresses",
            "label_checks.allowed_hosts"
        ]),
        "{errors:#?}"
    );
    std::thread::sleep(Duration::from_secs(2));
    let metrics = runner.metrics();
    assert!(
        !metrics.contains("SCRAM-SHA-256") && !metrics.contains("stolen"),
        "password hashes on /metrics:\n{metrics}"
    );
    assert!(
        !metrics.contains("url=\"http://127.0.0.1"),
        "the loopback check ran:\n{metrics}"
    );

    // The operator may allow it: then the very same label runs, which is what the default
    // keeps from happening.
    let socket_dir = postgres.socket_dir().display().to_string();
    let widened = start_runner(&format!(
        "label_checks:\n  allowed_paths: [{socket_dir}]\n  allowed_hosts: [127.0.0.1]\n"
    ));
    widened.wait_for("all three label instances to run", WAIT, |r| {
        let instances = r.instances_from(&name);
        instances.len() == 3 && instances.iter().all(|i| runs(i) >= 1)
    });
    widened.wait_for("the label's query on /metrics", WAIT, |r| {
        r.metrics().contains("stolen_roles")
    });
}

/// A listener that completes connections and never answers: a request to it hangs until the
/// run's timeout.
fn silent_server() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    (listener, port)
}

/// `count` http_check instances to the silent server, with an hour's timeout, every second.
fn hog_label(count: usize, port: u16) -> String {
    let instances: Vec<serde_json::Value> = (0..count)
        .map(|i| {
            serde_json::json!({"name": format!("hang{i}"), "url": format!("http://127.0.0.1:{port}/{i}"),
                               "timeout": 3600, "min_collection_interval": 1})
        })
        .collect();
    let checks = serde_json::json!({"http_check": {"instances": instances}});
    format!("com.datadoghq.ad.checks={checks}")
}

/// The conf.d check every test of runner sharing watches: the runner's own `/health`, every
/// second.
fn watched_check(runner: &RunnerProcess) {
    runner.write_confd(
        "http_check.d/health.yaml",
        &format!(
            "instances:\n  - name: health\n    url: http://127.0.0.1:{}/health\n    min_collection_interval: 1\n",
            runner.status_port
        ),
    );
}

fn confd_instance(runner: &RunnerProcess) -> serde_json::Value {
    runner
        .instances_from("health.yaml")
        .into_iter()
        .next()
        .expect("the conf.d check is scheduled")
}

#[test]
fn a_label_cannot_hold_the_runners_of_other_checks_and_starved_runs_say_why() {
    let _daemon = docker::shared();
    let image = docker::image();
    let (_silent, port) = silent_server();
    let hog_name = unique_name("hog");
    let hog = hog_label(40, port);

    // First the attack as it was: labels allowed everything, and 40 hanging instances take
    // all 8 runners. The conf.d check no longer runs, and says so: skipped, waiting for a
    // runner, with the reason.
    let open = start_runner(
        "check_runners: 8\nlabel_checks:\n  allowed_hosts: ['*']\n  max_instances: 100\n  \
         max_timeout: 3600\n  max_runners: 100\n  max_runners_total: 8\n",
    );
    let hog_container = Container::run(&hog_name, &["-l", &hog, image]);
    open.wait_for("the label's 40 instances", WAIT, |r| {
        r.instances_from(&hog_name).len() == 40
    });
    watched_check(&open);
    open.wait_for(
        "the starved conf.d check to count skipped runs",
        WAIT,
        |r| {
            r.instances_from("health.yaml")
                .first()
                .is_some_and(|i| i["skipped_waiting"].as_u64().unwrap_or(0) >= 2)
        },
    );
    let starved = confd_instance(&open);
    assert_eq!(runs(&starved), 0, "{starved}");
    assert!(
        starved["last_skip"]
            .as_str()
            .is_some_and(|why| why.contains("all 8 runners are busy")),
        "{starved}"
    );
    let text = std::process::Command::new(kennel_tests::runner_bin())
        .args(["status", "--config"])
        .arg(open.config_path())
        .output()
        .expect("runner status runs");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("[SKIPPED]") && text.contains("Last Skipped Because: no runner free"),
        "{text}"
    );
    drop(open);
    drop(hog_container);

    // With the defaults bounding labels (10 instances, 30 s, 2 runners per container, half of
    // the runners for all labels), the same label leaves the conf.d check on time, and a
    // second container's own label check runs too.
    let bounded = start_runner(&format!(
        "check_runners: 8\nlabel_checks:\n  allowed_hosts: ['127.0.0.1:{port}']\n"
    ));
    let hog_name = unique_name("hog");
    let _hog = Container::run(&hog_name, &["-l", &hog, image]);
    bounded.wait_for("the label's instances", WAIT, |r| {
        r.instances_from(&hog_name).len() == 10
    });
    let errors = bounded.config_errors();
    assert!(
        errors
            .iter()
            .any(|e| e.contains(&hog_name) && e.contains("more than 10 instances")),
        "{errors:#?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains(&hog_name) && e.contains("3600 s is lowered to 30 s")),
        "{errors:#?}"
    );
    let web_name = unique_name("web");
    let _web = Container::run(
        &web_name,
        &[
            "-l",
            r#"com.datadoghq.ad.checks={"http_check":{"instances":[{"name":"web","url":"http://%%host%%:%%port%%/","min_collection_interval":1}]}}"#,
            image,
        ],
    );
    watched_check(&bounded);
    // Let the hog's instances take what they can, then watch for a while.
    std::thread::sleep(Duration::from_secs(3));
    let before = runs(&confd_instance(&bounded));
    std::thread::sleep(Duration::from_secs(8));
    let after = confd_instance(&bounded);
    assert!(
        runs(&after) >= before + 6,
        "the conf.d check ran {} times in 8 s: {after}",
        runs(&after) - before
    );
    assert_eq!(after["skipped_waiting"], 0, "{after}");
    bounded.wait_for("the other container's check to run", WAIT, |r| {
        r.instances_from(&web_name)
            .iter()
            .any(|i| runs(i) >= 3 && i["errors"] == 0)
    });
    // The hog's instances wait their turn, two at a time, and say why.
    let hog_instances = bounded.instances_from(&hog_name);
    assert!(
        hog_instances.iter().any(|i| i["last_skip"]
            .as_str()
            .is_some_and(|why| why.contains("`label_checks.max_runners`"))),
        "{hog_instances:#?}"
    );
}
