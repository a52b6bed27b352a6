//! A real Docker daemon for the tests: a locally built image, containers that clean up after
//! themselves, and a daemon restart.
//!
//! No registry is reachable, so the test image is imported from a root filesystem holding
//! Debian's static busybox (`httpd` serves HTTP on port 80) and `dsd_send`, a static DogStatsD
//! client built from `tests/fixtures/dsd_send.c`. It is built once per test process.
//!
//! Docker tests share one daemon; the daemon-restart test takes [`exclusive`] while every other
//! Docker test holds [`shared`], so a restart never pulls the daemon out from under another
//! test. Every container a test starts carries the label `kennel.test=<pid>` and is removed
//! when its [`Container`] drops.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

/// The test image: busybox httpd on port 80 serving `/www`, and `/bin/dsd_send`.
pub const IMAGE: &str = "kennel-test/httpd:1";
/// The daemon's socket, as `runner run` is given it.
pub const SOCKET: &str = "/var/run/docker.sock";

static DAEMON: RwLock<()> = RwLock::new(());

/// Held by a test that uses the daemon.
pub fn shared() -> RwLockReadGuard<'static, ()> {
    DAEMON.read().unwrap_or_else(|p| p.into_inner())
}

/// Held by a test that restarts the daemon.
pub fn exclusive() -> RwLockWriteGuard<'static, ()> {
    DAEMON.write().unwrap_or_else(|p| p.into_inner())
}

/// Runs `docker <args>` and returns its trimmed stdout; panics with its stderr on failure.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("the docker command runs");
    assert!(
        out.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Builds the test image once (and checks that the daemon answers).
pub fn image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        assert!(
            Command::new("docker")
                .arg("version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
            "no Docker daemon answers at {SOCKET}: tests/prepare-machine (run by `make test`) installs docker.io and starts dockerd"
        );
        build_image();
    });
    IMAGE
}

fn build_image() {
    let root = tempfile::tempdir().expect("temp dir");
    let bin = root.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(root.path().join("www")).unwrap();
    std::fs::create_dir_all(root.path().join("tmp")).unwrap();
    std::fs::write(root.path().join("www/index.html"), "kennel test page\n").unwrap();
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.exists(),
        "Debian's busybox-static is not installed (tests/prepare-machine, run by `make test`, installs it)"
    );
    std::fs::copy(busybox, bin.join("busybox")).unwrap();
    for applet in ["sh", "httpd", "sleep", "true", "cat", "ls"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
    let source = crate::repo_root().join("tests/fixtures/dsd_send.c");
    let status = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(bin.join("dsd_send"))
        .arg(&source)
        .status()
        .expect("gcc runs");
    assert!(status.success(), "dsd_send builds");

    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(root.path())
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .expect("tar runs");
    let import = Command::new("docker")
        .args([
            "import",
            "-c",
            r#"CMD ["/bin/httpd", "-f", "-p", "80", "-h", "/www"]"#,
            "-c",
            "EXPOSE 80",
            "-",
            IMAGE,
        ])
        .stdin(tar.stdout.take().expect("tar output"))
        .stdout(Stdio::null())
        .status()
        .expect("docker import runs");
    assert!(import.success(), "the test image imports");
    assert!(
        tar.wait().is_ok_and(|s| s.success()),
        "tar archives the image"
    );
}

/// A running container, removed (forcibly) when dropped.
pub struct Container {
    pub id: String,
    pub name: String,
}

impl Container {
    /// `docker run -d` with `args` (options, then the image and command as the test gives
    /// them), labelled for clean-up.
    pub fn run(name: &str, args: &[&str]) -> Self {
        let label = format!("kennel.test={}", std::process::id());
        let mut all = vec!["run", "-d", "--name", name, "--label", &label];
        all.extend_from_slice(args);
        let id = docker(&all);
        Self {
            id,
            name: name.to_owned(),
        }
    }

    /// The container's address on the default bridge.
    pub fn ip(&self) -> String {
        docker(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", &self.id])
    }

    pub fn stop(&self) {
        docker(&["stop", "-t", "1", &self.id]);
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A name unique to this test process.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Stops the daemon and starts it again with the same command line (hold [`exclusive`]).
/// Returns once it answers again.
pub fn restart_daemon() {
    let pid_file = PathBuf::from("/var/run/docker.pid");
    let pid = std::fs::read_to_string(&pid_file)
        .expect("dockerd writes /var/run/docker.pid")
        .trim()
        .to_owned();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("dockerd's command line");
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(status.success(), "dockerd is signalled");
    let deadline = Instant::now() + Duration::from_secs(60);
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < deadline, "dockerd did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(std::env::temp_dir().join("kennel-test-dockerd.log"))
        .expect("dockerd log");
    // `setsid -f` forks the daemon into its own session and returns at once.
    let started = Command::new("setsid")
        .arg("-f")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .status()
        .expect("dockerd starts again");
    assert!(started.success(), "dockerd starts again");
    wait_for_daemon(deadline);
}

fn wait_for_daemon(deadline: Instant) {
    loop {
        let up = Command::new("docker")
            .arg("version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if up {
            return;
        }
        assert!(Instant::now() < deadline, "dockerd did not come back");
        std::thread::sleep(Duration::from_millis(200));
    }
}
