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
//! use kennel_sdk::options::Flag;
//! use kennel_sdk::{Check, ConfigError, Ctx, HttpRequest, Status, export_check};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! pub struct Config {
//!     url: String,
//!     /// `verify_tls: no` works too, as in Datadog's configs. Defaults to true.
//!     verify_tls: Option<Flag>,
//! }
//!
//! pub struct Ping;
//!
//! impl Check for Ping {
//!     type Config = Config;
//!
//!     fn run(cx: &mut Ctx, config: Config) -> kennel_sdk::Result {
//!         let tags = [format!("url:{}", config.url)];
//!         let verify_tls = config.verify_tls.is_none_or(|Flag(verify)| verify);
//!         match cx.http(HttpRequest::get(&config.url).verify_tls(verify_tls)) {
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
//!
//!     // A bad instance (`verify_tls: maybe`) still turns `ping.up` CRITICAL, tagged with the
//!     // url when it can be read, and the message names the key.
//!     fn config_error(cx: &mut Ctx, error: &ConfigError) -> kennel_sdk::Result {
//!         let url = error.raw().get("url").and_then(|url| url.as_str());
//!         let tags: Vec<String> = url.map(|url| format!("url:{url}")).into_iter().collect();
//!         cx.service_check("ping.up", Status::Critical, Some(&error.to_string()), &tags);
//!         Err(error.clone().into())
//!     }
//! }
//!
//! export_check!(Ping);
//! # fn main() {}
//! ```
//!
//! The instance's keys that the runner acts on ([`RESERVED_KEYS`]: `min_collection_interval`,
//! `tags`, `service`, `timeout`, ...) never reach the check, so a `Config` may refuse unknown
//! keys with `#[serde(deny_unknown_fields)]`, and a typo (`timout: 3`) fails the run naming
//! it. The instance's `timeout` is [`Ctx::timeout`]. [`options`] has types that read values the
//! way Datadog's checks do, for configs written for the Datadog Agent.
//!
//! [`testing::Harness`] runs the same logic natively against a recording host, so a check's
//! behaviour is unit tested with plain `cargo test`.
//!
//! Rates and monotonic counters are stateless here: submit the raw counter with [`Ctx::rate`] or
//! [`Ctx::monotonic_count`] and the runner computes the per-second rate or the delta from the
//! previous run, keyed by metric name, tags and host.

// The bindings wit-bindgen generates are `unsafe` FFI glue, but the lint does not reach into
// what a macro of another crate expands to: this covers every line written here.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
mod ctx;
pub mod options;
mod types;

pub mod testing;

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod __private;

pub use config::ConfigError;
pub use ctx::{Ctx, Host, Level, NO_TAGS};
pub use types::{
    AlertType, Error, Event, HttpError, HttpRequest, HttpResponse, Metric, MetricType, Priority,
    Result, Rows, ServiceCheck, SqlError, Status, Value,
};

extern crate self as kennel_sdk;

/// The instance keys the runner acts on, left out of the instance a check reads:
/// - `min_collection_interval`: seconds between runs (15 by default);
/// - `tags`: added to everything the instance emits; the check need not add them again;
/// - `service`: adds `service:<service>` the same way;
/// - `timeout`: the run's deadline, which the check reads as [`Ctx::timeout`];
/// - `empty_default_hostname`: submit without a hostname unless the check sets one;
/// - `allowed_hosts`: the hosts [`Ctx::http`] may reach, besides the host of a `url` key;
/// - `allowed_paths`: directories the check may read with `std::fs`.
pub const RESERVED_KEYS: [&str; 7] = [
    "min_collection_interval",
    "tags",
    "service",
    "timeout",
    "empty_default_hostname",
    "allowed_hosts",
    "allowed_paths",
];

/// A check: its instance configuration type, what one run does, and what a run does when the
/// configuration is wrong.
pub trait Check {
    /// The instance section of the check's YAML, deserialized with serde, without the
    /// [`RESERVED_KEYS`] the runner handles: the type may deny unknown fields.
    ///
    /// Validation belongs here too: a type whose `Deserialize` rejects a bad value (a
    /// `#[serde(try_from = ...)]` newtype, say) has the error reported under its key.
    type Config: serde::de::DeserializeOwned;

    /// Runs the check once. Returning an error marks the run failed with that reason; what was
    /// submitted before is still sent.
    fn run(cx: &mut Ctx, config: Self::Config) -> Result;

    /// Runs instead of [`Check::run`] when the instance does not deserialize into
    /// [`Check::Config`]. By default the run fails with the error, which names the key.
    /// Override it to report the failure as the check reports others (a CRITICAL service
    /// check, say), reading what it needs from [`ConfigError::raw`]; return an error so that
    /// the run is still marked failed.
    fn config_error(cx: &mut Ctx, error: &ConfigError) -> Result {
        let _ = cx; // the default reports nothing but the run's error
        Err(Error::msg(error))
    }
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
