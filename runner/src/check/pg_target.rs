//! The PostgreSQL server an instance names (`host`, `port`, `username`, `password`, `dbname`,
//! `ssl`, `query_timeout`): part of the instance's grants, read by the conf.d loader and used
//! by the `sql` capability. The password appears in no message: a target prints as
//! `postgres://user@host:port/db`.

use std::fmt;
use std::time::Duration;

use serde_json::Value as Json;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SslMode {
    Disable,
    Require,
    VerifyFull,
}

/// The server an instance names.
#[derive(Clone, PartialEq)]
pub struct PgTarget {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) user: String,
    password: Option<String>,
    pub(crate) dbname: String,
    pub(crate) ssl: SslMode,
    /// The instance's `query_timeout`, when set.
    pub(crate) query_timeout: Option<Duration>,
}

impl fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self} (ssl: {:?})", self.ssl)
    }
}

impl fmt::Display for PgTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "postgres://{}@{}:{}/{}",
            self.user, self.host, self.port, self.dbname
        )
    }
}

impl PgTarget {
    /// The server named by an instance's config; `Ok(None)` when it names none (no `host`).
    pub(crate) fn from_instance(config: &Json) -> Result<Option<Self>, String> {
        let Some(host) = config.get("host") else {
            return Ok(None);
        };
        let host = host
            .as_str()
            .filter(|h| !h.is_empty())
            .ok_or("`host` must be a host name, an address, or a socket directory")?
            .to_owned();
        let port = match config.get("port") {
            None | Some(Json::Null) => 5432,
            Some(Json::Number(n)) => n
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .ok_or("`port` must be a port number")?,
            Some(Json::String(s)) => s.parse().map_err(|_| "`port` must be a port number")?,
            Some(_) => return Err("`port` must be a port number".to_owned()),
        };
        let text = |key: &str| -> Result<Option<String>, String> {
            match config.get(key) {
                None | Some(Json::Null) => Ok(None),
                Some(Json::String(s)) => Ok(Some(s.clone())),
                Some(Json::Number(n)) => Ok(Some(n.to_string())),
                Some(_) => Err(format!("`{key}` must be text")),
            }
        };
        let user = match text("username")? {
            Some(user) => user,
            None => text("user")?.unwrap_or_else(|| "datadog".to_owned()),
        };
        let ssl = match config.get("ssl") {
            None | Some(Json::Null) | Some(Json::Bool(false)) => SslMode::Disable,
            Some(Json::Bool(true)) => SslMode::Require,
            Some(Json::String(mode)) => match mode.to_ascii_lowercase().as_str() {
                "disable" | "allow" | "prefer" | "false" => SslMode::Disable,
                "require" | "true" => SslMode::Require,
                "verify-ca" | "verify-full" => SslMode::VerifyFull,
                other => {
                    return Err(format!(
                        "`ssl: {other}` is not a mode: use disable, require, verify-ca or verify-full"
                    ));
                }
            },
            Some(_) => return Err("`ssl` must be true, false or a mode name".to_owned()),
        };
        let query_timeout = match config.get("query_timeout") {
            None | Some(Json::Null) => None,
            Some(value) => Some(
                value
                    .as_f64()
                    .filter(|ms| *ms > 0.0)
                    .map(|ms| Duration::from_secs_f64(ms / 1000.0))
                    .ok_or("`query_timeout` must be a positive number of milliseconds")?,
            ),
        };
        Ok(Some(Self {
            host,
            port,
            user,
            password: text("password")?,
            dbname: text("dbname")?.unwrap_or_else(|| "postgres".to_owned()),
            ssl,
            query_timeout,
        }))
    }

    /// The password, for the connection only.
    pub(crate) fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_comes_from_the_instance_and_hides_the_password() {
        let config = serde_json::json!({
            "host": "db.local", "port": "6432", "username": "kennel", "password": "hunter2",
            "dbname": "app", "ssl": "require", "query_timeout": 500
        });
        let target = PgTarget::from_instance(&config).unwrap().unwrap();
        assert_eq!(target.to_string(), "postgres://kennel@db.local:6432/app");
        assert_eq!(target.ssl, SslMode::Require);
        assert_eq!(target.query_timeout, Some(Duration::from_millis(500)));
        assert!(!format!("{target:?}").contains("hunter2"));
        assert_eq!(
            PgTarget::from_instance(&serde_json::json!({"url": "x"})).unwrap(),
            None
        );
        let error =
            PgTarget::from_instance(&serde_json::json!({"host": "h", "ssl": "maybe"})).unwrap_err();
        assert!(error.contains("ssl: maybe"), "{error}");
    }
}
