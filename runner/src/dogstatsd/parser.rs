//! The DogStatsD wire format.
