//! Write Kennel check plugins in Rust.
//!
//! A check is a type implementing [`Check`], with a serde type for its instance configuration.
//! [`export_check!`] turns it into a WebAssembly component that the Kennel runner loads from its
//! plugins directory and runs in a sandbox, once per configured instance, every
//! `min_collection_interval`. Everything a check does to the outside world goes through the
//! [`Ctx`] it is handed: submitting metrics, service checks and events, logging, and the
//! capabilities its instance is granted: [`Ctx::http`], [`Ctx::sql`], a key-value store kept
//! across runs ([`Ctx::kv_get`], [`Ctx::kv_set`]), and reading files with `std::fs` under the
//! directories of the instance's `allowed_paths`.
//!
//! A complete check, built with `cargo build --release --target wasm32-wasip2`:
//!
//! ```
//! use kennel_sdk::{Check, Ctx, HttpRequest, Status, export_check};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! pub struct Config {
//!     url: String,
//!     #[serde(default)]
//!     tags: Vec<String>,
//! }
//!
//! pub struct Ping;
//!
//! impl Check for Ping {
//!     type Config = Config;
//!
//!     fn run(cx: &mut Ctx, config: Config) -> kennel_sdk::Result {
//!         let mut tags = config.tags.clone();
//!         tags.push(format!("url:{}", config.url));
//!         match cx.http(HttpRequest::get(&config.url)) {
//!             Ok(response) => {
//!                 cx.gauge("ping.status_code", f64::from(response.status), &tags);
//!                 cx.service_check("ping.up", Status::Ok, None, &tags);
//!                 Ok(())
//!             }
//!             Err(error) => {
//!                 cx.service_check("ping.up", Status::Critical, Some(&error.to_string()), &tags);
//!                 Err(error.into())
//!             }
//!         }
//!     }
//! }
//!
//! export_check!(Ping);
//! # fn main() {}
//! ```
//!
//! With the `testing` feature, [`testing::Harness`] runs the same logic natively against a
//! recording host, so a check's behaviour is unit tested with plain `cargo test`.
//!
//! Rates and monotonic counters are stateless here: submit the raw counter with [`Ctx::rate`] or
//! [`Ctx::monotonic_count`] and the runner computes the per-second rate or the delta from the
//! previous run, keyed by metric name, tags and host.

mod ctx;
pub mod options;
mod types;

#[cfg(feature = "testing")]
pub mod testing;

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod __private;

pub use ctx::{Ctx, Host, Level, NO_TAGS};
pub use types::{
    AlertType, Error, Event, HttpError, HttpRequest, HttpResponse, Metric, MetricType, Priority,
    Result, Rows, ServiceCheck, SqlError, Status, Value,
};

extern crate self as kennel_sdk;

/// A check: its instance configuration type and what one run does.
pub trait Check {
    /// The instance section of the check's YAML, deserialized with serde. Reserved keys the
    /// runner handles (`min_collection_interval`, `tags`, `service`, `timeout`, ...) are present
    /// too: ignore them, or read them if they matter to the check.
    type Config: serde::de::DeserializeOwned;

    /// Runs the check once. Returning an error marks the run failed with that reason; what was
    /// submitted before is still sent.
    fn run(cx: &mut Ctx, config: Self::Config) -> Result;
}

/// Exports a [`Check`] as the plugin's entry point. Use it once, in the plugin's `lib.rs`
/// (crate type `cdylib`). On targets other than wasm32 it expands to nothing, so the crate
/// still builds natively for its unit tests.
#[macro_export]
macro_rules! export_check {
    ($check:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct KennelExport;

            impl $crate::__private::Guest for KennelExport {
                fn run(context: $crate::__private::Context) -> ::core::result::Result<(), String> {
                    $crate::__private::run::<$check>(context)
                }
            }

    $crate::__private::export!(KennelExport with_types_in $crate::__private::bindings);
        };
    };
}
