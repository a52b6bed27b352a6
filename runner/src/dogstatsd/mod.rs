//! DogStatsD, from socket to aggregator: the listeners ([`listener`]) read datagrams in batches
//! and tell who sent them ([`origin`]); the aggregation thread turns each batch into samples
//! ([`decode`], with the wire-format [`parser`]).

pub mod decode;
pub mod listener;
pub mod origin;
pub use kennel_parsers::dogstatsd as parser;
