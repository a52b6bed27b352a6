//! Hostile conf.d files dropped into a running `runner run`: alias bombs, deeply nested flow
//! YAML and a symlink to a secret file are refused with an error naming the file and the bound
//! crossed, the other checks keep running, and nothing of the secret reaches the log or
//! `/status`.
//!
//! The memory bound: while the runner reloads a refused file, its peak RSS (VmHWM, reset just
//! before the file is written) rises at most [`GROWTH_PER_FILE_BYTE`] times the file's size
//! plus [`GROWTH_SLACK_KIB`] above its RSS before. Before the bounds, the 40 KB alias bomb took
//! a runner from 19 MB to 1.65 GB, kept after the error.

use std::time::Duration;

use kennel_tests::runner_process::{Options, RunnerProcess};

const WAIT: Duration = Duration::from_secs(30);
/// How much the peak RSS may grow per byte of a refused file.
const GROWTH_PER_FILE_BYTE: u64 = 4;
/// And beyond that, for what a reload costs whatever the file (a blocking thread, the log).
const GROWTH_SLACK_KIB: u64 = 8 * 1024;
/// A line of `/etc/shadow`, in a file outside conf.d.
const SECRET: &str = "root:$6$Zq1xkennel$kT0pSecretHashOfRoot:19000:0:99999:7:::\n";

const STEADY: &str = "test_plugin.d/steady.yaml";

/// A "billion laughs" that grows with the square of its length, past serde_norway's own
/// repetition guard: `width` scalars under one anchor, `width` aliases to it, under a key the
/// runner ignores. About `4 * width` bytes, `width²` nodes once expanded.
fn quadratic_alias_bomb(width: usize) -> String {
    format!(
        "instances:\n  - mode: ok\nlogs:\n  - &a [{}]\n  - [{}]\n",
        vec!["1"; width].join(","),
        vec!["*a"; width].join(",")
    )
}

fn steady_runs(runner: &RunnerProcess) -> u64 {
    runner
        .instances_from(STEADY)
        .iter()
        .filter_map(|i| i["runs"].as_u64())
        .sum()
}

fn error_about(runner: &RunnerProcess, file: &str) -> Option<String> {
    runner
        .config_errors()
        .into_iter()
        .find(|e| e.contains(&format!("/{file}")))
}

#[test]
fn hostile_confd_files_are_refused_within_a_memory_bound_while_other_checks_run() {
    let runner = RunnerProcess::start(
        Options::default(),
        &[(
            STEADY,
            "instances:\n  - mode: ok\n    min_collection_interval: 0.2\n",
        )],
    );
    runner.wait_for("the steady instance to run", WAIT, |r| steady_runs(r) > 0);

    let cases = [
        (
            "test_plugin.d/bomb-40k.yaml",
            quadratic_alias_bomb(8_000),
            "aliases expand the file past its length plus 65536",
            5,
        ),
        (
            "test_plugin.d/bomb-400k.yaml",
            quadratic_alias_bomb(80_000),
            "aliases expand the file past its length plus 65536",
            5,
        ),
        (
            "test_plugin.d/nested-100k.yaml",
            "[".repeat(100_000),
            "nest more than 64 levels deep",
            1,
        ),
    ];
    for (file, text, bound, line) in cases {
        let runs_before = steady_runs(&runner);
        let cpu_before = runner.cpu_seconds();
        runner.reset_peak_rss();
        let before_kib = runner.rss_kib();
        runner.write_confd(file, &text);
        let took = runner.wait_for("the file to be refused", WAIT, |r| {
            error_about(r, file).is_some_and(|e| e.contains(bound))
        });
        let peak_kib = runner.peak_rss_kib();
        let cpu = runner.cpu_seconds() - cpu_before;
        let error = error_about(&runner, file).unwrap_or_default();
        println!(
            "{file} ({} bytes): refused in {took:?}; RSS {before_kib} KiB before, peak {peak_kib} KiB; \
             {cpu:.2} s of CPU meanwhile; {error}",
            text.len()
        );
        assert!(error.contains(&format!("{file}:{line}:")), "{error}");
        let allowed_kib = GROWTH_PER_FILE_BYTE * text.len() as u64 / 1024 + GROWTH_SLACK_KIB;
        assert!(
            peak_kib.saturating_sub(before_kib) <= allowed_kib,
            "{file}: peak RSS {peak_kib} KiB, {before_kib} KiB before: more than {allowed_kib} KiB of growth"
        );
        runner.wait_for("the steady instance to keep running", WAIT, |r| {
            steady_runs(r) >= runs_before + 3
        });
        std::fs::remove_file(runner.confd().join(file)).expect("remove the refused file");
    }

    let outside = tempfile::tempdir().expect("temp dir");
    std::fs::write(outside.path().join("shadow"), SECRET).expect("secret file");
    std::os::unix::fs::symlink(
        outside.path().join("shadow"),
        runner.confd().join("test_plugin.d/shadow.yaml"),
    )
    .expect("symlink into conf.d");
    runner.wait_for("the symlink to be refused", WAIT, |r| {
        error_about(r, "shadow.yaml")
            .is_some_and(|e| e.contains("leads outside the conf.d directory"))
    });
    let runs_before = steady_runs(&runner);
    runner.wait_for("the steady instance to keep running", WAIT, |r| {
        steady_runs(r) >= runs_before + 3
    });
    let status = runner.status().to_string();
    for secret in ["$6$", "SecretHashOfRoot"] {
        assert!(
            !status.contains(secret),
            "/status quotes the secret: {status}"
        );
        assert!(!runner.log().contains(secret), "the log quotes the secret");
    }
}
