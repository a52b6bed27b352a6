//! A small HTTP/1 server for the runner's own endpoints (`/metrics`, `/health`, `/status`).
//!
//! Handlers are async, so one that has real work to do (rendering a large page) moves it to a
//! blocking thread and never holds an async worker that check runs need.
//!
//! A connection must send a request's headers within [`HEADER_READ_TIMEOUT`] of opening or of
//! its previous response, or it is closed: a client that connects and says nothing (or keeps
//! an idle keep-alive connection open forever) would otherwise hold a task and a file
//! descriptor for as long as it likes. Scrapers and probes send their request at once.
//!
//! At most [`MAX_CONNECTIONS`] connections are served at once; past that, a new connection is
//! accepted and closed at once (and logged, once a minute), so that a client opening thousands
//! cannot run the runner out of file descriptors: with the header timeout, it can hold the
//! endpoint for ten seconds at worst, never the rest of the runner.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use serde::Serialize;
use tokio::net::TcpListener;

/// How long a connection may take to send a request's headers (see the module docs).
pub(crate) const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Connections served at once by one endpoint (see the module docs).
pub(crate) const MAX_CONNECTIONS: usize = 512;

/// A response, being made.
pub(crate) type Reply = Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>>;
/// What answers each request.
pub(crate) type Handler = Arc<dyn Fn(Request<Incoming>) -> Reply + Send + Sync>;

/// Binds `listen` (at start-up, so a taken port is an error the user sees at once) and serves
/// `handler` until the runtime shuts down; returns the bound address.
pub(crate) async fn serve(listen: SocketAddr, handler: Handler) -> std::io::Result<SocketAddr> {
    serve_at_most(listen, handler, MAX_CONNECTIONS).await
}

async fn serve_at_most(
    listen: SocketAddr,
    handler: Handler,
    max_connections: usize,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(listen).await?;
    let bound = listener.local_addr()?;
    let open = Arc::new(tokio::sync::Semaphore::new(max_connections));
    tokio::spawn(async move {
        let mut refused = 0u64;
        let mut last_warned: Option<std::time::Instant> = None;
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, typically: wait rather than spin.
                    tracing::warn!(%error, address = %bound, "HTTP endpoint: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
                drop(stream);
                refused += 1;
                if last_warned.is_none_or(|at| at.elapsed() >= std::time::Duration::from_secs(60)) {
                    last_warned = Some(std::time::Instant::now());
                    tracing::warn!(
                        address = %bound,
                        max_connections,
                        refused,
                        "HTTP endpoint: connections closed unserved, as many as it serves at once are open"
                    );
                }
                continue;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let service = hyper::service::service_fn(move |request| {
                    let reply = handler(request);
                    async move { Ok::<_, Infallible>(reply.await) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                if let Err(error) = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .serve_connection(io, service)
                    .await
                {
                    tracing::debug!(%error, "HTTP endpoint: connection ended with an error");
                }
            });
        }
    });
    Ok(bound)
}

/// A JSON response.
pub(crate) fn json<T: Serialize>(status: StatusCode, body: &T) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec_pretty(body)
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}").into_bytes());
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test]
    async fn connections_past_the_cap_are_closed_and_freed_slots_serve_again() {
        let handler: Handler = Arc::new(|_| {
            Box::pin(async { json(StatusCode::OK, &serde_json::json!({"ok": true})) })
        });
        let bound = serve_at_most("127.0.0.1:0".parse().unwrap(), handler, 4)
            .await
            .unwrap();
        let mut idle = Vec::new();
        for _ in 0..4 {
            idle.push(tokio::net::TcpStream::connect(bound).await.unwrap());
        }
        // Let the server take the four in.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let mut fifth = tokio::net::TcpStream::connect(bound).await.unwrap();
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(std::time::Duration::from_secs(5), fifth.read(&mut buf))
            .await
            .expect("closed at once, not left hanging");
        assert!(matches!(read, Ok(0) | Err(_)), "closed unserved: {read:?}");
        drop(idle);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let mut again = tokio::net::TcpStream::connect(bound).await.unwrap();
        again
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        again.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
}
