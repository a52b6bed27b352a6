//! A small HTTP/1 server for the runner's own endpoints (`/metrics`, `/health`, `/status`).
//!
//! Handlers are async, so one that has real work to do (rendering a large page) moves it to a
//! blocking thread and never holds an async worker that check runs need.
//!
//! A connection must send a request's headers within [`HEADER_READ_TIMEOUT`] of opening or of
//! its previous response, or it is closed: a client that connects and says nothing (or keeps
//! an idle keep-alive connection open forever) would otherwise hold a task and a file
//! descriptor for as long as it likes. Scrapers and probes send their request at once.

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

/// A response, being made.
pub(crate) type Reply = Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>>;
/// What answers each request.
pub(crate) type Handler = Arc<dyn Fn(Request<Incoming>) -> Reply + Send + Sync>;

/// Binds `listen` (at start-up, so a taken port is an error the user sees at once) and serves
/// `handler` until the runtime shuts down; returns the bound address.
pub(crate) async fn serve(listen: SocketAddr, handler: Handler) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(listen).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
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
            let handler = handler.clone();
            tokio::spawn(async move {
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
