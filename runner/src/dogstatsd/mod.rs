//! DogStatsD: the listeners, the wire-format parser and origin detection.

pub mod listener;
pub mod origin;
pub mod parser;
