//! `/metrics`: the store behind a page cache, kept current by the `openmetrics` sink.
//!
//! A scrape never touches the aggregation thread: the store is updated by its sink's own
//! thread. Rendering (about 50 ms for 100,000 series, proportionally more for more) runs on a
//! blocking thread, not an async worker. And it runs at most once per flush: the first scrape
//! after a flush renders, holding the cache while it does, and every scrape until the next
//! flush gets that same page, so four scrapers in a loop cost one render a second, not four
//! renders each. The next flush drops the cached page, so a runner nobody scrapes holds none.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Response, StatusCode};

use super::Store;
use crate::aggregator::Flush;
use crate::endpoint::{self, Handler};
use crate::sink::Sink;

/// The OpenMetrics store and its rendered page.
#[derive(Default)]
pub(crate) struct Page {
    store: Mutex<Versioned>,
    /// The last page rendered, and the store version it shows.
    cache: Mutex<Option<(u64, Bytes)>>,
}

#[derive(Default)]
struct Versioned {
    store: Store,
    version: u64,
}

impl Page {
    pub(crate) fn new() -> Arc<Self> {
        Arc::default()
    }

    /// The sink that keeps this page current.
    pub(crate) fn sink(self: &Arc<Self>) -> Box<dyn Sink> {
        Box::new(PageSink(self.clone()))
    }

    /// The page as of the latest flush: rendered now if it changed since the last render.
    /// Blocks for the render: call it off the async workers.
    pub(crate) fn scrape(&self) -> Bytes {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let store = self.store();
        if let Some((version, page)) = &*cache
            && *version == store.version
        {
            return page.clone();
        }
        let version = store.version;
        let page = Bytes::from(store.store.render());
        drop(store);
        *cache = Some((version, page.clone()));
        page
    }

    fn store(&self) -> MutexGuard<'_, Versioned> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct PageSink(Arc<Page>);

impl Sink for PageSink {
    fn name(&self) -> &str {
        "openmetrics"
    }

    fn send(&mut self, flush: &Flush) -> Result<(), String> {
        let mut store = self.0.store();
        store.store.update(flush, Instant::now());
        store.version += 1;
        drop(store);
        // The cached page is out of date now: give its memory back (12 MB at 100,000 series)
        // rather than hold it until the next scrape. A render in progress holds the cache;
        // its page, of the previous version, is replaced by the next scrape's.
        if let Ok(mut cache) = self.0.cache.try_lock() {
            *cache = None;
        }
        Ok(())
    }
}

/// Binds `listen` and serves `page` at `/metrics`.
pub(crate) async fn serve(listen: SocketAddr, page: Arc<Page>) -> std::io::Result<SocketAddr> {
    let handler: Handler = Arc::new(move |request| {
        let page = page.clone();
        Box::pin(async move {
            if (request.method(), request.uri().path()) != (&Method::GET, "/metrics") {
                return endpoint::json(
                    StatusCode::NOT_FOUND,
                    &serde_json::json!({"error": "not found: try /metrics"}),
                );
            }
            match tokio::task::spawn_blocking(move || page.scrape()).await {
                Ok(body) => {
                    let mut response = Response::new(Full::new(body));
                    response.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static(
                            "text/plain; version=0.0.4; charset=utf-8",
                        ),
                    );
                    response
                }
                Err(error) => endpoint::json(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &serde_json::json!({"error": format!("rendering the page failed: {error}")}),
                ),
            }
        })
    });
    endpoint::serve(listen, handler).await
}
