//! The `http` capability: outgoing HTTP(S) made by the host on a plugin's behalf.
//!
//! Egress is deny-by-default. An instance may reach the host of its own `url` key and the
//! entries of its `allowed_hosts` list: `host` (any port), `host:port`, `*.domain` (any
//! subdomain) or `*` (anywhere). Every redirect hop is checked the same way, which is why
//! redirects are followed here rather than by reqwest.
//!
//! Design decisions:
//! - One reqwest client per TLS mode, shared by all plugins; connections are not kept between
//!   requests (as the Datadog http_check does by default), so `elapsed` always includes the
//!   connection and a check sees a dead server the moment it dies.
//! - The peer certificate's expiry is read from the TLS session (`tls_info`), so it is known
//!   even when verification is off, which is how expiry of self-signed certificates is watched.
//! - Requests run on a runtime of their own ([`IoRuntime`], one thread), not on the one that
//!   executes plugins, and `elapsed` is measured there. A plugin's wasm code yields only at
//!   epoch ticks (10 ms), so when busy plugins keep the plugin runtime's threads working, a
//!   request polled there would see its answer late and report the wait as the server's
//!   response time (ten busy-looping instances made a 2 ms answer read as 630 ms). On its own
//!   thread, which the kernel wakes as soon as the socket is ready, a request is timed as the
//!   server answered, whatever other plugins do.
//! - A request never outlives its run: its timeout is cut to the time left before the run's
//!   deadline, less a small reserve so the plugin can still report the failure.
//! - Headers that steer the connection (`Host`, `Connection`, `Proxy-*`, `Transfer-Encoding`,
//!   `Content-Length`) are refused: a plugin granted a reverse proxy must not pick the virtual
//!   host behind it. On a redirect to another origin, credentials (`Authorization`, `Cookie`,
//!   `Proxy-Authorization`) are dropped, and a redirect from https to http is refused.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use reqwest::header::{
    AUTHORIZATION, COOKIE, HeaderMap, HeaderName, HeaderValue, LOCATION, PROXY_AUTHORIZATION,
};

use super::bindings::kennel::check::http::{Error, Request, Response};

const MAX_REDIRECTS: usize = 10;

/// The instance's egress grant.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    /// `<check> instance <id>`, for messages.
    pub(crate) who: String,
    pub(crate) hosts: Vec<String>,
}

impl Grant {
    pub(crate) fn allows(&self, host: &str, port: u16) -> bool {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        self.hosts.iter().any(|entry| {
            let entry = entry.trim().to_ascii_lowercase();
            if entry == "*" {
                return true;
            }
            if let Some(domain) = entry.strip_prefix("*.") {
                return host.ends_with(&format!(".{domain}"));
            }
            match split_host_port(&entry) {
                (name, Some(p)) => name == host && p == port,
                (name, None) => name == host,
            }
        })
    }
}

fn split_host_port(entry: &str) -> (&str, Option<u16>) {
    let entry_host = entry.trim_start_matches('[');
    if let Some((name, port)) = entry_host.rsplit_once(':')
        && (!name.contains(':') || name.ends_with(']'))
        && let Ok(port) = port.parse()
    {
        return (name.trim_end_matches(']'), Some(port));
    }
    (entry_host.trim_end_matches(']'), None)
}

/// Makes ring the process's TLS crypto backend, which every reqwest client needs before it is
/// built (reqwest is linked without a backend of its own). Idempotent.
pub fn install_crypto_provider() {
    // Err means a provider is installed already, which is all that is asked.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Kept back from the run's deadline so the plugin can still report a timed-out request.
const DEADLINE_RESERVE: Duration = Duration::from_millis(50);

/// Makes the requests of every plugin.
pub(crate) struct HttpClient {
    requests: Arc<Requests>,
    io: IoRuntime,
}

/// What a request needs, shared with the tasks on the I/O runtime.
struct Requests {
    verified: reqwest::Client,
    unverified: reqwest::Client,
    body_limit: usize,
}

/// The runtime requests run on: one thread of its own, shut down (without waiting for what is
/// in flight) when dropped, which may happen on an async thread.
pub(crate) struct IoRuntime(Option<tokio::runtime::Runtime>);

impl IoRuntime {
    pub(crate) fn start() -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("kennel-io")
            .enable_all()
            .build()?;
        Ok(Self(Some(runtime)))
    }

    /// Runs `task` there; dropping the returned future stops it.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        task: impl Future<Output = T> + Send + 'static,
    ) -> Option<T> {
        let runtime = self.0.as_ref()?;
        let mut task = AbortOnDrop(runtime.spawn(task));
        (&mut task.0).await.ok()
    }
}

impl Drop for IoRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// A task that stops when whoever waits for it stops waiting.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl HttpClient {
    pub(crate) fn new(body_limit: usize) -> anyhow::Result<Self> {
        install_crypto_provider();
        let build = |verify: bool| {
            reqwest::Client::builder()
                .user_agent(concat!("Kennel/", env!("CARGO_PKG_VERSION")))
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .pool_max_idle_per_host(0)
                .tls_info(true)
                .tls_danger_accept_invalid_certs(!verify)
                .build()
        };
        Ok(Self {
            requests: Arc::new(Requests {
                verified: build(true)?,
                unverified: build(false)?,
                body_limit,
            }),
            io: IoRuntime::start()?,
        })
    }

    /// Sends `request` for the instance holding `grant`, finishing before `deadline`.
    pub(crate) async fn send(
        &self,
        grant: &Grant,
        request: Request,
        deadline: Instant,
    ) -> Result<Response, Error> {
        if request.timeout_ms == 0 {
            return Err(Error::InvalidRequest(
                "the timeout must be at least 1 ms".to_owned(),
            ));
        }
        let left = deadline
            .saturating_duration_since(Instant::now())
            .saturating_sub(DEADLINE_RESERVE);
        let asked = Duration::from_millis(u64::from(request.timeout_ms));
        let timeout = asked.min(left);
        if timeout.is_zero() {
            return Err(Error::Timeout(
                "the run's deadline leaves no time for this request".to_owned(),
            ));
        }
        let (requests, grant) = (self.requests.clone(), grant.clone());
        let exchange = async move {
            let started = Instant::now();
            match tokio::time::timeout(timeout, requests.exchange(&grant, request, timeout)).await {
                Ok(result) => result.map(|mut response| {
                    response.elapsed_ns =
                        started.elapsed().as_nanos().try_into().unwrap_or(u64::MAX);
                    response
                }),
                Err(_) => Err(Error::Timeout(format!(
                    "no complete response within {} ms",
                    timeout.as_millis()
                ))),
            }
        };
        self.io
            .run(exchange)
            .await
            .unwrap_or_else(|| Err(Error::Other("the runner is stopping".to_owned())))
    }
}

impl Requests {
    async fn exchange(
        &self,
        grant: &Grant,
        request: Request,
        timeout: Duration,
    ) -> Result<Response, Error> {
        let mut method = Method::from_bytes(request.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| Error::InvalidRequest(format!("invalid method `{}`", request.method)))?;
        let mut url = reqwest::Url::parse(&request.url)
            .map_err(|e| Error::InvalidRequest(format!("invalid URL `{}`: {e}", request.url)))?;
        let mut headers = header_map(&request.headers)?;
        let mut body = request.body;
        let client = if request.verify_tls {
            &self.verified
        } else {
            &self.unverified
        };

        for _ in 0..=MAX_REDIRECTS {
            check_grant(grant, &url)?;
            let mut builder = client
                .request(method.clone(), url.clone())
                .headers(headers.clone())
                .timeout(timeout);
            if let Some(body) = &body {
                builder = builder.body(body.clone());
            }
            let response = builder.send().await.map_err(classify)?;
            let status = response.status();
            if request.follow_redirects
                && status.is_redirection()
                && let Some(location) = response.headers().get(LOCATION)
            {
                let location = location
                    .to_str()
                    .map_err(|_| Error::Other("redirect with a non-text Location".to_owned()))?;
                let next = url.join(location).map_err(|e| {
                    Error::Other(format!("redirect to invalid URL `{location}`: {e}"))
                })?;
                if url.scheme() == "https" && next.scheme() == "http" {
                    return Err(Error::Other(format!(
                        "refused a redirect from https to http ({next})"
                    )));
                }
                if next.origin() != url.origin() {
                    for credential in [AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION] {
                        headers.remove(credential);
                    }
                }
                url = next;
                // 301/302/303 turn into a GET without a body, as every browser does.
                if matches!(status.as_u16(), 301..=303) && method != Method::HEAD {
                    method = Method::GET;
                    body = None;
                }
                continue;
            }
            return self.read(response).await;
        }
        Err(Error::Other(format!("more than {MAX_REDIRECTS} redirects")))
    }

    async fn read(&self, mut response: reqwest::Response) -> Result<Response, Error> {
        let cert_not_after = response
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|info| info.peer_certificate())
            .and_then(|der| x509_parser::parse_x509_certificate(der).ok())
            .map(|(_, cert)| cert.validity().not_after.timestamp());
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let mut body = Vec::new();
        let mut body_truncated = false;
        while let Some(chunk) = response.chunk().await.map_err(classify)? {
            let room = self.body_limit - body.len();
            if chunk.len() > room {
                body.extend_from_slice(&chunk[..room]);
                body_truncated = true;
                break;
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Response {
            status,
            headers,
            body,
            body_truncated,
            elapsed_ns: 0,
            cert_not_after,
        })
    }
}

fn check_grant(grant: &Grant, url: &reqwest::Url) -> Result<(), Error> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::InvalidRequest(format!(
            "unsupported scheme `{}` in `{url}`: only http and https",
            url.scheme()
        )));
    }
    let host = url.host_str().unwrap_or_default();
    let port = url.port_or_known_default().unwrap_or(0);
    if grant.allows(host, port) {
        return Ok(());
    }
    Err(Error::Denied(format!(
        "{} may not reach {host}:{port} ({url}): add \"{host}\" to the instance's `allowed_hosts` to grant it",
        grant.who
    )))
}

fn header_map(headers: &[(String, String)]) -> Result<HeaderMap, Error> {
    let mut map = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        if matches!(
            lower.as_str(),
            "host" | "connection" | "transfer-encoding" | "content-length" | "te" | "upgrade"
        ) || lower.starts_with("proxy-")
        {
            return Err(Error::InvalidRequest(format!(
                "header `{name}` is set by the runner, not by checks"
            )));
        }
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| Error::InvalidRequest(format!("invalid header name `{name}`")))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| Error::InvalidRequest(format!("invalid value for header `{name}`")))?;
        map.append(name, value);
    }
    Ok(map)
}

/// Sorts a reqwest failure into the capability's error kinds, with the whole cause chain as text.
fn classify(error: reqwest::Error) -> Error {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    let mut tls = false;
    while let Some(cause) = source {
        tls |= cause.downcast_ref::<rustls::Error>().is_some();
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    if error.is_timeout() {
        Error::Timeout(message)
    } else if tls {
        Error::Tls(message)
    } else if error.is_connect() {
        Error::Connect(message)
    } else if error.is_builder() {
        Error::InvalidRequest(message)
    } else {
        Error::Other(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(hosts: &[&str]) -> Grant {
        Grant {
            who: "http_check instance http_check:0".to_owned(),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
        }
    }

    #[test]
    fn grant_matches_host_port_and_wildcards() {
        let g = grant(&["localhost", "api.example.com:8443", "*.internal"]);
        assert!(g.allows("localhost", 80));
        assert!(g.allows("LOCALHOST", 9000));
        assert!(g.allows("api.example.com", 8443));
        assert!(!g.allows("api.example.com", 443));
        assert!(g.allows("db.internal", 5432));
        assert!(!g.allows("internal", 80));
        assert!(!g.allows("example.com", 80));
        assert!(grant(&["*"]).allows("anything", 1));
        assert!(!grant(&[]).allows("localhost", 80));
    }

    #[test]
    fn grant_matches_ipv6_literals() {
        let g = grant(&["[::1]:8080", "127.0.0.1"]);
        assert!(g.allows("[::1]", 8080));
        assert!(!g.allows("[::1]", 8081));
        assert!(g.allows("127.0.0.1", 1));
    }

    #[test]
    fn connection_steering_headers_are_refused() {
        for name in [
            "Host",
            "connection",
            "Proxy-Authorization",
            "Content-Length",
        ] {
            let headers = [(name.to_owned(), "x".to_owned())];
            assert!(
                matches!(header_map(&headers), Err(Error::InvalidRequest(_))),
                "{name} accepted"
            );
        }
        assert!(header_map(&[("Authorization".into(), "Bearer x".into())]).is_ok());
    }

    #[test]
    fn denial_names_host_and_how_to_grant() {
        let url = reqwest::Url::parse("http://evil.example:8080/x").unwrap();
        let Err(Error::Denied(message)) = check_grant(&grant(&["localhost"]), &url) else {
            panic!("not denied");
        };
        assert!(message.contains("evil.example:8080"), "{message}");
        assert!(message.contains("allowed_hosts"), "{message}");
    }
}
