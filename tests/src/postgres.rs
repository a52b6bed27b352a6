//! A throwaway PostgreSQL cluster: `initdb` into a temporary directory, `pg_ctl start` on a
//! free loopback port, stopped and removed when dropped.
//!
//! PostgreSQL refuses to run as root, so when the tests run as root (as CI does) the cluster
//! runs as the `postgres` system user that Debian's packages create. Local socket connections
//! are trusted (for the fixture's own set-up); TCP connections need a password, so the checks
//! under test authenticate for real.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The role the checks under test log in as.
pub const USER: &str = "kennel";
/// Its password.
pub const PASSWORD: &str = "kennel-test-secret";

/// The Datadog docs' `custom_metrics` example: connections by database, application and
/// state, as instance YAML.
pub const CONNECTION_STATE: &str = r#"
    custom_metrics:
      - descriptors:
          - [datname, database]
          - [application_name, application_name]
          - [state, state]
        metrics:
          COUNT(state): [postgresql.connection_state, GAUGE]
        query: >
          SELECT datname, application_name, state, %s FROM pg_stat_activity
          GROUP BY datname, application_name, state HAVING COUNT(state) > 0;
        relation: false
"#;

/// A running cluster.
pub struct Postgres {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
    run_as_postgres: bool,
}

impl Postgres {
    /// Starts a fresh cluster with the `kennel` role and a database `app`.
    pub fn start() -> Self {
        let bin = find_bin_dir();
        let run_as_postgres = running_as_root();
        let dir = std::env::temp_dir().join(format!(
            "kennel-pg-{}-{}",
            std::process::id(),
            crate::http_server::closed_port()
        ));
        std::fs::create_dir_all(&dir).expect("create the cluster directory");
        if run_as_postgres {
            let status = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&dir)
                .status()
                .expect("chown runs");
            assert!(
                status.success(),
                "cannot give {} to postgres",
                dir.display()
            );
        }
        let postgres = Self {
            port: crate::http_server::closed_port(),
            dir,
            bin,
            run_as_postgres,
        };
        postgres.pg(
            "initdb",
            &[
                "-D",
                &postgres.data(),
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        postgres.start_server();
        postgres.psql(
            "postgres",
            &format!("CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'; GRANT pg_monitor TO {USER};"),
        );
        postgres.psql("postgres", &format!("CREATE DATABASE app OWNER {USER}"));
        postgres
    }

    /// The directory of the server's Unix socket, where local connections are trusted.
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    /// Starts the server (again, after [`Postgres::stop`]).
    pub fn start_server(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("server.log").display().to_string();
        self.pg(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &options,
                "-l",
                &log,
                "-w",
                "start",
            ],
        );
    }

    /// Stops the server at once, dropping every connection.
    pub fn stop(&self) {
        self.pg(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }

    /// Runs SQL as the superuser over the local socket and returns psql's output.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let port = self.port.to_string();
        let host = self.dir.display().to_string();
        self.pg(
            "psql",
            &[
                "-h",
                &host,
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-Atc",
                sql,
            ],
        )
    }

    /// The instance keys that point a check at this server over TCP, as YAML lines indented
    /// for an instance.
    pub fn instance_keys(&self, dbname: &str) -> String {
        format!(
            "    host: 127.0.0.1\n    port: {}\n    username: {USER}\n    password: {PASSWORD}\n    dbname: {dbname}\n",
            self.port
        )
    }

    /// A tokio-postgres connection string for clients that play the monitored application.
    pub fn client_url(&self, dbname: &str, application_name: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={USER} password={PASSWORD} dbname={dbname} application_name={application_name}",
            self.port
        )
    }

    /// One of the server's programs, run as the cluster's owner.
    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        let mut command = if self.run_as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&program);
            command
        } else {
            Command::new(&program)
        };
        command.current_dir(&self.dir);
        command
    }

    fn pg(&self, program: &str, args: &[&str]) -> String {
        let output = self
            .command(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        assert!(
            output.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self
            .command("pg_ctl")
            .args(["-D", &data, "-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The directory of `initdb` and `pg_ctl`: Debian keeps them out of PATH, under
/// /usr/lib/postgresql/<version>/bin.
fn find_bin_dir() -> PathBuf {
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    candidates.sort();
    if let Some(newest) = candidates.pop() {
        return newest;
    }
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .find(|dir| dir.join("initdb").exists() && dir.join("pg_ctl").exists())
        .unwrap_or_else(|| {
            panic!(
                "PostgreSQL server binaries not found: install `postgresql` (tests/prepare-machine, run by `make test`, does)"
            )
        })
}

fn running_as_root() -> bool {
    // /proc/self is the running test; its owner is the effective user.
    std::os::unix::fs::MetadataExt::uid(
        &std::fs::metadata(Path::new("/proc/self")).expect("procfs is mounted"),
    ) == 0
}
