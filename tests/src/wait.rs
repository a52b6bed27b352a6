//! Waiting for something to happen (a run, a flush, a file picked up) by polling for it, never
//! by sleeping a fixed time: a wait returns as soon as the condition holds, and its timeout is
//! generous, because a loaded machine is slow, not wrong.
//!
//! A wait returns the last thing it saw whether or not the condition came to hold, so the
//! test's own assertions say what was missing instead of a bare "timed out".

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is looked at.
pub const POLL: Duration = Duration::from_millis(20);

/// Calls `look` every [`POLL`] until what it returns satisfies `done`, for up to `timeout`;
/// returns the last look either way.
pub fn until<T>(timeout: Duration, mut look: impl FnMut() -> T, done: impl Fn(&T) -> bool) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let seen = look();
        if done(&seen) || Instant::now() >= deadline {
            return seen;
        }
        std::thread::sleep(POLL);
    }
}

/// [`until`] for async tests: `look` is awaited, and the pauses between looks are tokio's, so
/// the runtime's workers stay free.
pub async fn until_async<T, F>(
    timeout: Duration,
    mut look: impl FnMut() -> F,
    done: impl Fn(&T) -> bool,
) -> T
where
    F: Future<Output = T>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let seen = look().await;
        if done(&seen) || Instant::now() >= deadline {
            return seen;
        }
        tokio::time::sleep(POLL).await;
    }
}
