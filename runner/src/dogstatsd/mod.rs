//! DogStatsD: the listeners, the wire-format parser and origin detection.

pub mod parser;
