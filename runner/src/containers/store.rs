//! The shared map of running containers, by id.
//!
//! Written by one watcher ([`super::docker`]), read by many: the autodiscovery loop, and the
//! aggregation thread when it tags a DogStatsD sender's metrics. Readers take a read lock only
//! for a lookup; the aggregation thread avoids even that by caching answers and dropping its
//! cache whenever [`ContainerStore::generation`] moves.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::{Container, ContainerEvent};

/// The running containers, shared.
#[derive(Clone, Default)]
pub(crate) struct ContainerStore {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    containers: RwLock<HashMap<String, Arc<Container>>>,
    generation: AtomicU64,
}

impl ContainerStore {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The container with this full id.
    pub(crate) fn get(&self, id: &str) -> Option<Arc<Container>> {
        self.read().get(id).cloned()
    }

    /// Every container, ordered by name.
    pub(crate) fn all(&self) -> Vec<Arc<Container>> {
        let mut all: Vec<_> = self.read().values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
        all
    }

    /// Moves on every change, so readers can cache lookups and notice when to drop them.
    pub(crate) fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// Applies `event`; returns whether anything changed (a container set to what it already
    /// was, or unset when it was not there, changes nothing).
    pub(crate) fn apply(&self, event: &ContainerEvent) -> bool {
        let mut containers = self
            .inner
            .containers
            .write()
            .unwrap_or_else(|p| p.into_inner());
        let changed = match event {
            ContainerEvent::Set(container) => match containers.get(&container.id) {
                Some(known) if known == container => false,
                _ => {
                    containers.insert(container.id.clone(), container.clone());
                    true
                }
            },
            ContainerEvent::Unset(id) => containers.remove(id).is_some(),
        };
        if changed {
            self.inner.generation.fetch_add(1, Ordering::AcqRel);
        }
        changed
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Container>>> {
        self.inner
            .containers
            .read()
            .unwrap_or_else(|p| p.into_inner())
    }
}
