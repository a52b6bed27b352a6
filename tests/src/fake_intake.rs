//! A fake Datadog intake: the one part of the forwarder's path that cannot run here (the
//! Datadog SaaS), for what no installable server decodes: v2 protobuf series, sketches, check
//! runs, `/intake/` events, API-key validation. It takes Prometheus remote write too, so a test
//! can read the exact requests of both outputs; what a real backend stores is checked against
//! VictoriaMetrics and Prometheus ([`crate::victoria`], [`crate::prometheus`]).
//!
//! It is a real HTTP/1.1 server (hyper, keep-alive) on a free loopback port, on a thread and
//! runtime of its own, so sync and async tests use it alike; it stops when dropped. Every
//! request is recorded whole: method, path, headers, the body as received and as decompressed
//! per its `Content-Encoding` (`zstd`, `deflate` as zlib, `gzip`, `snappy` as the block
//! format, `identity` or none), and the status it was answered.
//!
//! It is honest about what it accepts. A payload is decoded with the forwarder's own schema
//! (`runner::forwarder::schema`, the agent-payload and remote-write protobufs) or parsed as
//! JSON when it arrives, and answered 400 if it does not decode, so a malformed payload fails
//! the test instead of being counted as delivered. Like the real intake, a data request whose
//! `DD-API-KEY` is not among the accepted keys gets 403, and `GET /api/v1/validate` answers
//! `{"valid":true}` or 403. Remote write needs no key, but must be snappy. Unknown paths get
//! 404 and other methods 405. The decoding helpers ([`FakeIntake::series_v2`] and the rest)
//! read only requests answered 2xx: what was delivered, once per delivery, so a payload
//! retried after a 503 is seen once and one sent twice is seen twice.
//!
//! Scripted outages: [`FakeIntake::respond`] answers every data request with a status until
//! [`FakeIntake::reset`]; [`FakeIntake::respond_next`] answers the next few; [`FakeIntake::delay`]
//! answers late (the request is recorded, and its status, even if the client gave up: a timed
//! out request may well have been stored); [`FakeIntake::set_down`] closes the listener and
//! every open connection, so clients get connection errors, until it is set up again on the
//! same port. Validation is a key check, not data: only `set_down` affects it.
//!
//! Missing on purpose: payload size limits (script a 413 instead), the `api_key` query
//! parameter, and routes Kennel does not send to (metadata, processes, logs).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderMap};
use hyper::{Method, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prost::Message;
use runner::forwarder::schema::{MetricPayload, SketchPayload, WriteRequest};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

/// The API key a [`FakeIntake::start`]ed intake accepts.
pub const API_KEY: &str = "0123456789abcdef0123456789abcdef";

/// One request as the intake received it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    /// The body as sent.
    pub body: Bytes,
    /// The body decompressed per `Content-Encoding`, or why it could not be.
    pub decoded: Result<Bytes, String>,
    /// What the intake answered.
    pub status: u16,
    pub received: Instant,
}

impl Request {
    /// A header's value, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Whether the intake took it (a 2xx answer).
    pub fn accepted(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// A running fake intake; stops when dropped.
pub struct FakeIntake {
    addr: SocketAddr,
    state: Arc<State>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct State {
    requests: Mutex<Vec<Request>>,
    api_keys: Mutex<HashSet<String>>,
    script: Mutex<Script>,
    /// Whether the test wants the intake down.
    down: watch::Sender<bool>,
    /// Whether the listener is bound, as the server thread last set it.
    listening: AtomicBool,
}

/// How data requests are answered instead of normally.
#[derive(Default)]
struct Script {
    /// Answered once each, before `always`.
    next: VecDeque<u16>,
    always: Option<u16>,
    delay: Duration,
}

impl FakeIntake {
    /// Starts an intake that accepts [`API_KEY`].
    pub fn start() -> Self {
        Self::start_with_keys(&[API_KEY])
    }

    /// Starts an intake that accepts these API keys.
    pub fn start_with_keys(keys: &[&str]) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("bound address");
        let state = Arc::new(State {
            requests: Mutex::default(),
            api_keys: Mutex::new(keys.iter().map(|k| (*k).to_owned()).collect()),
            script: Mutex::default(),
            down: watch::Sender::new(false),
            listening: AtomicBool::new(true),
        });
        let (shutdown, stop) = oneshot::channel();
        let server_state = state.clone();
        let thread = std::thread::Builder::new()
            .name("fake-intake".to_owned())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("the fake intake's runtime starts");
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener).expect("tokio listener");
                    serve(listener, addr, server_state, stop).await;
                });
            })
            .expect("the fake intake's thread starts");
        Self {
            addr,
            state,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// The base URL, `http://127.0.0.1:PORT`: the runner's `dd_url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The remote-write receiver, `<base>/api/v1/write`.
    pub fn remote_write_url(&self) -> String {
        format!("{}/api/v1/write", self.url())
    }

    /// Replaces the accepted API keys.
    pub fn set_api_keys(&self, keys: &[&str]) {
        *lock(&self.state.api_keys) = keys.iter().map(|k| (*k).to_owned()).collect();
    }

    /// Answers every data request with `status` (and no decoding) until [`FakeIntake::reset`].
    pub fn respond(&self, status: u16) {
        lock(&self.state.script).always = Some(status);
    }

    /// Answers the next data requests with these statuses, one each, then as before.
    pub fn respond_next(&self, statuses: &[u16]) {
        lock(&self.state.script).next.extend(statuses);
    }

    /// Answers every data request `by` late, until [`FakeIntake::reset`].
    pub fn delay(&self, by: Duration) {
        lock(&self.state.script).delay = by;
    }

    /// Takes the intake off the network (listener closed, open connections dropped, so
    /// clients see refused and reset connections) or back on, on the same port; returns once
    /// that is done.
    pub fn set_down(&self, down: bool) {
        self.state.down.send_replace(down);
        let done = crate::wait::until(
            Duration::from_secs(10),
            || self.state.listening.load(Ordering::SeqCst) != down,
            |done| *done,
        );
        assert!(
            done,
            "the fake intake did not go {} within 10 s",
            if down { "down" } else { "up" }
        );
    }

    /// Back to normal: up, no scripted statuses, no delay. Recorded requests are kept.
    pub fn reset(&self) {
        *lock(&self.state.script) = Script::default();
        self.set_down(false);
    }

    /// Forgets every recorded request.
    pub fn clear(&self) {
        lock(&self.state.requests).clear();
    }

    /// Every request received, in order.
    pub fn requests(&self) -> Vec<Request> {
        lock(&self.state.requests).clone()
    }

    /// Every request received at `path`, in order.
    pub fn requests_to(&self, path: &str) -> Vec<Request> {
        lock(&self.state.requests)
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// How many requests `path` received, whatever they were answered.
    pub fn count(&self, path: &str) -> usize {
        lock(&self.state.requests)
            .iter()
            .filter(|r| r.path == path)
            .count()
    }

    /// How many requests each path received.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for request in lock(&self.state.requests).iter() {
            *counts.entry(request.path.clone()).or_default() += 1;
        }
        counts
    }

    /// The `/api/v2/series` payloads delivered, in order.
    pub fn series_v2(&self) -> Vec<MetricPayload> {
        self.delivered(Route::SeriesV2)
            .iter()
            .map(|body| MetricPayload::decode(body.as_ref()).expect("decoded when received"))
            .collect()
    }

    /// The `/api/beta/sketches` payloads delivered, in order.
    pub fn sketches(&self) -> Vec<SketchPayload> {
        self.delivered(Route::Sketches)
            .iter()
            .map(|body| SketchPayload::decode(body.as_ref()).expect("decoded when received"))
            .collect()
    }

    /// The remote-write requests delivered, in order.
    pub fn remote_writes(&self) -> Vec<WriteRequest> {
        self.delivered(Route::RemoteWrite)
            .iter()
            .map(|body| WriteRequest::decode(body.as_ref()).expect("decoded when received"))
            .collect()
    }

    /// The `/api/v1/series` payloads delivered (`{"series": [...]}`), in order.
    pub fn series_v1(&self) -> Vec<serde_json::Value> {
        self.delivered_json(Route::SeriesV1)
    }

    /// Every check run delivered to `/api/v1/check_run`, in order (a payload is a list of
    /// them).
    pub fn check_runs(&self) -> Vec<serde_json::Value> {
        self.delivered_json(Route::CheckRun)
            .into_iter()
            .flat_map(|payload| match payload {
                serde_json::Value::Array(runs) => runs,
                _ => unreachable!("check_run payloads are checked to be lists when received"),
            })
            .collect()
    }

    /// The `/intake/` payloads delivered (events and host metadata), in order.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.delivered_json(Route::Intake)
    }

    /// The decompressed bodies of the requests to `route` answered 2xx.
    fn delivered(&self, route: Route) -> Vec<Bytes> {
        lock(&self.state.requests)
            .iter()
            .filter(|r| r.path == route.path() && r.accepted())
            .map(|r| r.decoded.clone().expect("decoded when received"))
            .collect()
    }

    fn delivered_json(&self, route: Route) -> Vec<serde_json::Value> {
        self.delivered(route)
            .iter()
            .map(|body| serde_json::from_slice(body).expect("parsed when received"))
            .collect()
    }
}

impl Drop for FakeIntake {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The routes the intake knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    SeriesV2,
    Sketches,
    SeriesV1,
    CheckRun,
    Intake,
    Validate,
    RemoteWrite,
}

impl Route {
    const ALL: [Self; 7] = [
        Self::SeriesV2,
        Self::Sketches,
        Self::SeriesV1,
        Self::CheckRun,
        Self::Intake,
        Self::Validate,
        Self::RemoteWrite,
    ];

    const fn path(self) -> &'static str {
        match self {
            Self::SeriesV2 => "/api/v2/series",
            Self::Sketches => "/api/beta/sketches",
            Self::SeriesV1 => "/api/v1/series",
            Self::CheckRun => "/api/v1/check_run",
            Self::Intake => "/intake/",
            Self::Validate => "/api/v1/validate",
            Self::RemoteWrite => "/api/v1/write",
        }
    }

    fn of(path: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|route| route.path() == path)
    }

    /// Checks that a decompressed body is what the route takes.
    fn check(self, body: &[u8]) -> Result<(), String> {
        let protobuf = |e: prost::DecodeError| format!("not a {self:?} protobuf: {e}");
        let json = |e: serde_json::Error| format!("not JSON: {e}");
        match self {
            Self::SeriesV2 => MetricPayload::decode(body).map(drop).map_err(protobuf),
            Self::Sketches => SketchPayload::decode(body).map(drop).map_err(protobuf),
            Self::RemoteWrite => WriteRequest::decode(body).map(drop).map_err(protobuf),
            Self::SeriesV1 | Self::Intake => serde_json::from_slice::<serde_json::Value>(body)
                .map_err(json)
                .and_then(|v| match v {
                    serde_json::Value::Object(_) => Ok(()),
                    _ => Err("not a JSON object".to_owned()),
                }),
            Self::CheckRun => serde_json::from_slice::<serde_json::Value>(body)
                .map_err(json)
                .and_then(|v| match v {
                    serde_json::Value::Array(_) => Ok(()),
                    _ => Err("not a JSON list".to_owned()),
                }),
            Self::Validate => Ok(()),
        }
    }

    /// The real receiver's answer to a payload it took.
    const fn accepted(self) -> (u16, &'static str) {
        match self {
            Self::SeriesV2 | Self::Sketches => (202, r#"{"errors":[]}"#),
            Self::RemoteWrite => (204, ""),
            Self::Validate => (200, r#"{"valid":true}"#),
            Self::SeriesV1 | Self::CheckRun | Self::Intake => (202, r#"{"status":"ok"}"#),
        }
    }
}

impl State {
    /// The status and body for a request, and how long to wait before answering.
    fn answer(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        decoded: &Result<Bytes, String>,
    ) -> (u16, String, Duration) {
        let Some(route) = Route::of(path) else {
            return (404, format!("no route {path}"), Duration::ZERO);
        };
        let key_ok = headers
            .get("dd-api-key")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|key| lock(&self.api_keys).contains(key));
        let forbidden = || (403, r#"{"errors":["Forbidden"]}"#.to_owned());
        if route == Route::Validate {
            let (status, body) = match *method {
                Method::GET if key_ok => (200, route.accepted().1.to_owned()),
                Method::GET => forbidden(),
                _ => (405, "GET only".to_owned()),
            };
            return (status, body, Duration::ZERO);
        }
        let (scripted, delay) = {
            let mut script = lock(&self.script);
            (script.next.pop_front().or(script.always), script.delay)
        };
        let (status, body) = if let Some(status) = scripted {
            (status, format!(r#"{{"errors":["scripted {status}"]}}"#))
        } else if method != Method::POST {
            (405, "POST only".to_owned())
        } else if route != Route::RemoteWrite && !key_ok {
            forbidden()
        } else if route == Route::RemoteWrite
            && headers.get(CONTENT_ENCODING).is_none_or(|e| e != "snappy")
        {
            (400, "remote write is snappy-compressed".to_owned())
        } else {
            match decoded.clone().and_then(|body| route.check(&body)) {
                Err(e) => (400, e),
                Ok(()) => {
                    let (status, body) = route.accepted();
                    (status, body.to_owned())
                }
            }
        };
        (status, body, delay)
    }
}

/// Accepts connections while the intake is up; closes the listener and every connection when
/// it goes down, and binds the same address again when it comes back.
async fn serve(
    listener: TcpListener,
    addr: SocketAddr,
    state: Arc<State>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut down = state.down.subscribe();
    let mut listener = Some(listener);
    loop {
        let Some(bound) = listener.take() else {
            // Down: wait to come back up (or to stop).
            tokio::select! {
                _ = &mut stop => return,
                changed = down.wait_for(|down| !*down) => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
            // Listeners set SO_REUSEADDR, so the port is free again at once.
            listener = Some(
                TcpListener::bind(addr)
                    .await
                    .expect("rebind the intake's port"),
            );
            state.listening.store(true, Ordering::SeqCst);
            continue;
        };
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                _ = &mut stop => return,
                changed = down.wait_for(|down| *down) => {
                    if changed.is_err() {
                        return;
                    }
                    break;
                }
                accepted = bound.accept() => {
                    if let Ok((stream, _)) = accepted {
                        connections.spawn(connection(stream, state.clone()));
                    }
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        drop(bound);
        connections.abort_all();
        while connections.join_next().await.is_some() {}
        state.listening.store(false, Ordering::SeqCst);
    }
}

async fn connection(stream: tokio::net::TcpStream, state: Arc<State>) {
    let service = hyper::service::service_fn(move |request| handle(request, state.clone()));
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

async fn handle(
    request: hyper::Request<Incoming>,
    state: Arc<State>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let received = Instant::now();
    let (parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        // The client went away mid-body: nothing to answer, nothing delivered.
        Err(_) => return Ok(reply(400, String::new())),
    };
    let decoded = decompress(&parts.headers, &body);
    let path = parts.uri.path().to_owned();
    let (status, answer, delay) = state.answer(&parts.method, &path, &parts.headers, &decoded);
    lock(&state.requests).push(Request {
        method: parts.method,
        path,
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers,
        body,
        decoded,
        status,
        received,
    });
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    Ok(reply(status, answer))
}

fn reply(status: u16, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::IM_A_TEAPOT);
    response.headers_mut().insert(
        CONTENT_TYPE,
        "application/json".parse().expect("a header value"),
    );
    response
}

/// The body decompressed per its `Content-Encoding`.
fn decompress(headers: &HeaderMap, body: &Bytes) -> Result<Bytes, String> {
    let encoding = match headers.get(CONTENT_ENCODING) {
        None => "identity",
        Some(value) => value
            .to_str()
            .map_err(|_| "Content-Encoding is not text".to_owned())?,
    };
    let read_all = |mut reader: Box<dyn Read + '_>| {
        let mut out = Vec::new();
        reader
            .read_to_end(&mut out)
            .map(|_| Bytes::from(out))
            .map_err(|e| format!("not valid {encoding}: {e}"))
    };
    match encoding {
        "identity" => Ok(body.clone()),
        "zstd" => zstd::stream::decode_all(body.as_ref())
            .map(Bytes::from)
            .map_err(|e| format!("not valid zstd: {e}")),
        "deflate" => read_all(Box::new(flate2::read::ZlibDecoder::new(body.as_ref()))),
        "gzip" => read_all(Box::new(flate2::read::GzDecoder::new(body.as_ref()))),
        "snappy" => snap::raw::Decoder::new()
            .decompress_vec(body)
            .map(Bytes::from)
            .map_err(|e| format!("not valid snappy: {e}")),
        other => Err(format!("unsupported Content-Encoding {other:?}")),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A test that panicked while holding a lock has failed already; the data is still sound.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use runner::forwarder::schema::{
        Dogsketch, MetricPoint, MetricSeries, MetricType, Resource, Sketch,
    };
    use serde_json::json;

    use super::*;
    use crate::prometheus::{client, now_ms, one_sample, remote_write_body};

    fn zlib(body: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(body).expect("compress");
        encoder.finish().expect("compress")
    }

    /// POSTs `body` to `path` with this encoding and API key; returns the status.
    fn post(intake: &FakeIntake, path: &str, encoding: &str, key: &str, body: Vec<u8>) -> u16 {
        let mut request = client()
            .post(format!("{}{path}", intake.url()))
            .header("DD-API-KEY", key)
            .body(body);
        if encoding != "identity" {
            request = request.header("Content-Encoding", encoding);
        }
        request
            .send()
            .expect("the intake answers")
            .status()
            .as_u16()
    }

    fn series() -> MetricPayload {
        MetricPayload {
            series: vec![MetricSeries {
                resources: vec![Resource {
                    r#type: "host".to_owned(),
                    name: "web-1".to_owned(),
                }],
                metric: "kennel.test".to_owned(),
                tags: vec!["env:prod".to_owned()],
                points: vec![MetricPoint {
                    value: 1.5,
                    timestamp: 1_700_000_000,
                }],
                r#type: MetricType::Gauge as i32,
                ..MetricSeries::default()
            }],
        }
    }

    #[test]
    fn every_route_is_recorded_and_decoded_per_content_encoding() {
        let intake = FakeIntake::start();
        let series = series();
        let sketches = SketchPayload {
            sketches: vec![Sketch {
                metric: "kennel.latency".to_owned(),
                host: "web-1".to_owned(),
                dogsketches: vec![Dogsketch {
                    ts: 1_700_000_000,
                    cnt: 2,
                    min: 1.0,
                    max: 3.0,
                    avg: 2.0,
                    sum: 4.0,
                    k: vec![1338, 1383],
                    n: vec![1, 1],
                }],
                ..Sketch::default()
            }],
            ..SketchPayload::default()
        };
        let v1 = json!({"series": [{"metric": "kennel.v1", "points": [[1_700_000_000, 2.0]]}]});
        let runs =
            json!([{"check": "kennel.up", "status": 0}, {"check": "kennel.db", "status": 2}]);
        let events = json!({"events": {"api": [{"msg_title": "deployed"}]}});
        let write = one_sample(&[("__name__", "kennel_rw")], 3.0, now_ms());

        let sent = [
            (
                "/api/v2/series",
                "zstd",
                zstd::encode_all(&series.encode_to_vec()[..], 1).unwrap(),
            ),
            (
                "/api/beta/sketches",
                "deflate",
                zlib(&sketches.encode_to_vec()),
            ),
            ("/api/v1/series", "identity", v1.to_string().into_bytes()),
            (
                "/api/v1/check_run",
                "deflate",
                zlib(runs.to_string().as_bytes()),
            ),
            (
                "/intake/",
                "zstd",
                zstd::encode_all(events.to_string().as_bytes(), 1).unwrap(),
            ),
            ("/api/v1/write", "snappy", remote_write_body(&write)),
        ];
        for (path, encoding, body) in sent {
            let status = post(&intake, path, encoding, API_KEY, body);
            assert!((200..300).contains(&status), "{path} answered {status}");
        }

        assert_eq!(intake.series_v2(), vec![series]);
        assert_eq!(intake.sketches(), vec![sketches]);
        assert_eq!(intake.series_v1(), vec![v1]);
        assert_eq!(intake.check_runs(), runs.as_array().unwrap().clone());
        assert_eq!(intake.events(), vec![events]);
        assert_eq!(intake.remote_writes(), vec![write]);
        let first = &intake.requests()[0];
        assert_eq!(
            (first.header("content-encoding"), first.header("DD-API-KEY")),
            (Some("zstd"), Some(API_KEY))
        );
        assert!(
            intake.counts().values().all(|&n| n == 1),
            "{:?}",
            intake.counts()
        );
    }

    #[test]
    fn a_key_not_accepted_is_forbidden_and_validation_says_which_keys_are() {
        let intake = FakeIntake::start();
        let validate = |key: &str| {
            let response = client()
                .get(format!("{}/api/v1/validate", intake.url()))
                .header("DD-API-KEY", key)
                .send()
                .expect("the intake answers");
            (
                response.status().as_u16(),
                response.text().unwrap_or_default(),
            )
        };
        assert_eq!(validate(API_KEY), (200, r#"{"valid":true}"#.to_owned()));
        assert_eq!(validate("wrong").0, 403);

        let body = || series().encode_to_vec();
        assert_eq!(
            post(&intake, "/api/v2/series", "identity", "wrong", body()),
            403
        );
        intake.set_api_keys(&["rotated"]);
        assert_eq!(
            post(&intake, "/api/v2/series", "identity", API_KEY, body()),
            403
        );
        assert_eq!(
            post(&intake, "/api/v2/series", "identity", "rotated", body()),
            202
        );
        assert_eq!(intake.count("/api/v2/series"), 3);
        assert_eq!(
            intake.series_v2().len(),
            1,
            "only the accepted payload is delivered"
        );
    }

    #[test]
    fn undecodable_payloads_are_refused() {
        let intake = FakeIntake::start();
        let cases = [
            ("/api/v2/series", "zstd", b"not zstd".to_vec()),
            ("/api/v2/series", "br", b"brotli".to_vec()),
            ("/api/v2/series", "identity", vec![0xff, 0xff, 0xff]),
            (
                "/api/v1/check_run",
                "identity",
                b"{\"check\":\"x\"}".to_vec(),
            ),
            ("/api/v1/series", "deflate", b"{}".to_vec()),
            (
                "/api/v1/write",
                "identity",
                one_sample(&[], 1.0, 0).encode_to_vec(),
            ),
        ];
        for (path, encoding, body) in cases {
            assert_eq!(
                post(&intake, path, encoding, API_KEY, body),
                400,
                "{path} {encoding}"
            );
        }
        assert_eq!(
            post(&intake, "/api/v1/unknown", "identity", API_KEY, vec![]),
            404
        );
        assert!(intake.series_v2().is_empty() && intake.check_runs().is_empty());
    }

    #[test]
    fn scripted_statuses_delays_and_outages_until_reset() {
        let intake = FakeIntake::start();
        let send = || {
            post(
                &intake,
                "/api/v2/series",
                "identity",
                API_KEY,
                series().encode_to_vec(),
            )
        };
        intake.respond_next(&[500, 413]);
        assert_eq!([send(), send(), send()], [500, 413, 202]);
        intake.respond(503);
        assert_eq!([send(), send()], [503, 503]);
        intake.reset();
        assert_eq!(send(), 202);

        intake.delay(Duration::from_secs(2));
        let impatient = reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(Duration::from_millis(200))
            .build()
            .unwrap();
        let timed_out = impatient
            .post(format!("{}/api/v2/series", intake.url()))
            .header("DD-API-KEY", API_KEY)
            .body(series().encode_to_vec())
            .send();
        assert!(timed_out.is_err_and(|e| e.is_timeout()));
        intake.reset();

        // A pooled keep-alive connection from before the outage must fail too.
        let keep_alive = client();
        let send_on = |client: &reqwest::blocking::Client| {
            client
                .post(format!("{}/api/v2/series", intake.url()))
                .header("DD-API-KEY", API_KEY)
                .body(series().encode_to_vec())
                .send()
                .map(|r| r.status().as_u16())
        };
        assert_eq!(send_on(&keep_alive).unwrap(), 202);
        intake.set_down(true);
        assert!(send_on(&keep_alive).is_err_and(|e| e.is_connect() || e.is_request()));
        assert!(send_on(&client()).is_err_and(|e| e.is_connect()));
        intake.set_down(false);
        assert_eq!(send_on(&keep_alive).unwrap(), 202);

        // Delivered: the first 202, the one after reset, the one the client gave up on, and
        // the two around the outage.
        assert_eq!(intake.series_v2().len(), 5);
        assert_eq!(intake.count("/api/v2/series"), 9);
    }
}
