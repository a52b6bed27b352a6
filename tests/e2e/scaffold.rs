//! Writing a check as a new user does: `runner new-check`, its tests, `runner build-check`,
//! `runner test-check`, and its results on a running runner's `/metrics`, all from a fresh
//! temporary directory.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use kennel_tests::http_server::{HttpServer, Reply};
use kennel_tests::runner_process::{Options, RunnerProcess};
use kennel_tests::{runner_bin, wait};

fn run(command: &mut Command) -> Output {
    let output = command.output().expect("the command runs");
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// The lines of Rust a user reads and owns in the generated check, tests and comments left
/// out.
fn check_lines(lib: &Path) -> usize {
    let text = std::fs::read_to_string(lib).expect("src/lib.rs");
    let code = text.split("#[cfg(test)]").next().expect("the check");
    code.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("//"))
        .count()
}

#[test]
fn a_new_check_builds_tests_and_runs_from_a_fresh_directory() {
    let started = Instant::now();
    let work = tempfile::tempdir().expect("a fresh directory");
    let written = work.path().join("written");
    let plugins = work.path().join("plugins");
    let created = run(Command::new(runner_bin())
        .env_remove("KENNEL_SDK")
        .args(["new-check", "demo", "--dir"])
        .arg(&written));
    let created = String::from_utf8_lossy(&created.stdout);
    assert!(
        created.contains("this runner's sdk (kennel-sdk "),
        "{created}"
    );
    for file in [
        "Cargo.toml",
        "src/lib.rs",
        "conf.yaml.example",
        ".gitignore",
        "vendor/kennel/sdk/Cargo.toml",
        "vendor/kennel/sdk/src/lib.rs",
        "vendor/kennel/wit/check.wit",
    ] {
        assert!(written.join(file).exists(), "{file}");
    }
    // The same name again is refused rather than overwritten.
    let again = Command::new(runner_bin())
        .args(["new-check", "demo", "--dir"])
        .arg(&written)
        .output()
        .expect("runner runs");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
    // The crate carries its sdk: moved elsewhere, as a clone on another machine is, it builds,
    // with nothing of this source tree on its paths.
    let crate_dir = work.path().join("elsewhere/demo");
    std::fs::create_dir_all(crate_dir.parent().expect("a parent")).expect("elsewhere");
    std::fs::rename(&written, &crate_dir).expect("the crate moves");
    let manifest = std::fs::read_to_string(crate_dir.join("Cargo.toml")).expect("Cargo.toml");
    assert!(
        manifest.contains("kennel-sdk = { path = \"vendor/kennel/sdk\" }"),
        "{manifest}"
    );

    // Its own unit tests, natively, on the sdk's harness.
    let tests = run(cargo().arg("test").current_dir(&crate_dir));
    let tests = String::from_utf8_lossy(&tests.stdout);
    assert!(tests.contains("test result: ok. 4 passed"), "{tests}");

    run(Command::new(runner_bin())
        .arg("build-check")
        .arg(&crate_dir)
        .arg("--plugins")
        .arg(&plugins));
    assert!(plugins.join("demo.wasm").exists());
    assert!(
        std::fs::read_dir(&plugins).expect("plugins").count() == 1,
        "no partial file left behind"
    );

    // Against a real endpoint, with the example config's url pointed at it.
    let io = tokio::runtime::Runtime::new().expect("a runtime for the HTTP server");
    let server = io.block_on(HttpServer::start(|_| Reply::ok("ok")));
    let example = std::fs::read_to_string(crate_dir.join("conf.yaml.example")).expect("example");
    let conf = example.replace(
        "http://localhost:8080/health",
        &format!("http://127.0.0.1:{}/health", server.addr.port()),
    );
    let confd = work.path().join("conf.d");
    std::fs::create_dir_all(confd.join("demo.d")).expect("conf.d");
    std::fs::write(confd.join("demo.d/conf.yaml"), &conf).expect("conf");
    let tested = run(Command::new(runner_bin())
        .args(["test-check", "demo", "--confd"])
        .arg(&confd)
        .arg("--plugins")
        .arg(&plugins));
    let tested = String::from_utf8_lossy(&tested.stdout);
    assert!(tested.contains("\"demo.response_time\""), "{tested}");
    assert!(tested.contains("\"status_name\": \"OK\""), "{tested}");
    assert!(
        tested.contains("team:example"),
        "the instance's tags: {tested}"
    );

    let runner = RunnerProcess::start(
        Options {
            plugins: Some(plugins.clone()),
            ..Options::default()
        },
        &[(
            "demo.d/conf.yaml",
            &conf.replace("min_collection_interval: 15", "min_collection_interval: 1"),
        )],
    );
    let page = wait::until(
        Duration::from_secs(40),
        || runner.metrics(),
        |page| page.contains("demo_response_time{") && page.contains("service_check_demo_up{"),
    );
    assert!(
        page.lines()
            .any(|l| l.starts_with("service_check_demo_up{") && l.ends_with(" 0")),
        "{page}"
    );
    println!(
        "new-check to a first result on /metrics: {:.1} s, cold build included; the check is {} lines of Rust",
        started.elapsed().as_secs_f64(),
        check_lines(&crate_dir.join("src/lib.rs"))
    );
    drop(server);
}

/// `--sdk` depends on an sdk elsewhere, such as a Kennel source tree's, by its absolute path,
/// and writes no copy; a directory that is not an sdk is refused, saying what to give.
#[test]
fn new_check_on_a_given_sdk_depends_on_it_by_path() {
    let work = tempfile::tempdir().expect("a fresh directory");
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../sdk")
        .canonicalize()
        .expect("the source tree's sdk");
    let crate_dir = work.path().join("mine");
    run(Command::new(runner_bin())
        .args(["new-check", "mine", "--sdk"])
        .arg(&sdk)
        .arg("--dir")
        .arg(&crate_dir));
    let manifest = std::fs::read_to_string(crate_dir.join("Cargo.toml")).expect("Cargo.toml");
    assert!(
        manifest.contains(&format!("kennel-sdk = {{ path = \"{}\" }}", sdk.display())),
        "{manifest}"
    );
    assert!(!crate_dir.join("vendor").exists());

    let refused = Command::new(runner_bin())
        .args(["new-check", "other", "--dir"])
        .arg(work.path().join("other"))
        .env("KENNEL_SDK", work.path())
        .output()
        .expect("runner runs");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("is not the Kennel sdk"), "{stderr}");
    assert!(!work.path().join("other").exists(), "nothing written");
}
