//! Context quotas: who may create how many contexts, so that no sender can starve another.
//!
//! Every context is charged to the **origin** that created it: a check instance (by its
//! instance id), or a DogStatsD sender, identified as precisely as the kernel allows: a
//! container (its id, from the sender's cgroup), a host process (its pid), or, for datagrams
//! nobody identified (UDP, origin detection off or failed), one shared `unidentified` origin.
//! A context another origin later also writes to stays charged to its creator; samples to
//! an existing context are never refused here, so what already flows keeps flowing.
//!
//! Origins draw from two separate **pools**: check results from `max_check_contexts`,
//! DogStatsD senders from the rest of `max_contexts`. A DogStatsD flood can therefore never
//! drop a check's metrics, and a check can never drop a sender's.
//!
//! Within a pool a new context is refused, and counted against its origin, when:
//! - its origin holds `max_contexts_per_origin` already (`origin_quota`), or
//! - its origin holds at least its fair share and the pool is past 90 % (`origin_quota`): the
//!   last tenth is kept for origins below their share, so that a sender that starts while
//!   others hold the pool still gets contexts. The fair share divides the pool between the
//!   origins holding contexts, itself included, and one more: the next to come. Or
//! - the pool is full (`context_limit`).
//!
//! This is the Datadog Agent's context limiter (`dogstatsd_context_limiter_*`, which splits a
//! global limit equally between origins) made work-conserving: an origin may use what others
//! leave free, and is held to its share only when the pool runs short, so a single large
//! sender is not cut to a fraction of an idle pool. Unlike the Agent's, it is on by default
//! and keyed by what the kernel says, not by a tag the sender could choose.
//!
//! An origin is forgotten once it holds no context and has had nothing refused for
//! [`FORGET_AFTER`] seconds. At most [`MAX_ORIGINS`] are tracked; past that, new origins share
//! one `other` origin per pool, so a burst of short-lived senders cannot grow the table.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

/// The most origins tracked at once, both pools together.
pub(crate) const MAX_ORIGINS: usize = 4096;
/// Seconds an origin with no context and no refusal is remembered (for `runner status`).
pub(crate) const FORGET_AFTER: i64 = 600;

/// Who a new context is charged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner<'a> {
    /// A check instance's results, by instance id.
    Check(&'a str),
    /// A DogStatsD sender in this container (its full id).
    Container(&'a str),
    /// A DogStatsD sender outside any container, by pid.
    Process(u32),
    /// DogStatsD senders nobody identified: UDP, or origin detection off or failed.
    Unidentified,
}

impl Owner<'_> {
    const fn pool(self) -> Pool {
        match self {
            Self::Check(_) => Pool::Checks,
            Self::Container(_) | Self::Process(_) | Self::Unidentified => Pool::Dogstatsd,
        }
    }

    /// The origin's name: `check:<instance id>`, `container:<id>`, `process:<pid>`,
    /// `unidentified`.
    fn write_key(self, out: &mut String) {
        out.clear();
        // Writing to a String cannot fail.
        let _ = match self {
            Self::Check(id) => write!(out, "check:{id}"),
            Self::Container(id) => write!(out, "container:{id}"),
            Self::Process(pid) => write!(out, "process:{pid}"),
            Self::Unidentified => write!(out, "unidentified"),
        };
    }
}

/// Where an origin's contexts come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Pool {
    Checks,
    Dogstatsd,
}

impl Pool {
    const ALL: [Self; 2] = [Self::Checks, Self::Dogstatsd];

    const fn overflow_key(self) -> &'static str {
        match self {
            Self::Checks => "check:other",
            Self::Dogstatsd => "other",
        }
    }
}

/// Why a new context was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Its origin is at its quota, or at its fair share of a pool running short.
    OriginQuota,
    /// Its pool is full.
    PoolFull,
}

#[derive(Debug)]
struct Origin {
    key: Box<str>,
    pool: Pool,
    live: usize,
    /// New contexts refused, in all.
    refused: u64,
    /// Refused since the last [`Quotas::take_refusals`].
    refused_unreported: u64,
    /// When it last held a context or was refused one (Unix seconds).
    last_active: i64,
    /// When its refusals were last logged.
    last_warned: Option<i64>,
}

#[derive(Debug, Default, Clone, Copy)]
struct PoolState {
    budget: usize,
    live: usize,
    /// Origins holding at least one context.
    holders: usize,
}

/// The quotas of every origin: see the module docs.
#[derive(Debug)]
pub(crate) struct Quotas {
    per_origin: usize,
    pools: [PoolState; 2],
    index: HashMap<Box<str>, u32>,
    origins: Vec<Option<Origin>>,
    free: Vec<u32>,
    /// Reused to spell an origin's key.
    key: String,
}

/// One origin, as `runner status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct OriginStatus {
    /// `check:<instance id>`, `container:<id>`, `process:<pid>`, `unidentified` or `other`.
    pub(crate) origin: String,
    /// What the origin is, for people: a container's name, a check's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) name: Option<String>,
    pub(crate) pool: Pool,
    pub(crate) contexts: usize,
    /// New contexts refused since the origin was first seen.
    pub(crate) refused: u64,
}

/// One pool, as `runner status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PoolStatus {
    pub(crate) pool: Pool,
    pub(crate) contexts: usize,
    pub(crate) budget: usize,
    /// Origins holding contexts.
    pub(crate) origins: usize,
}

/// The aggregator's contexts, as `runner status` shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ContextsStatus {
    pub(crate) pools: Vec<PoolStatus>,
    pub(crate) max_per_origin: usize,
    /// The origins holding the most contexts, then every origin that had a context refused.
    pub(crate) origins: Vec<OriginStatus>,
}

/// The aggregator's contexts as of its latest flush, shared with the status API.
#[derive(Debug, Clone, Default)]
pub(crate) struct ContextsView(Arc<Mutex<ContextsStatus>>);

impl ContextsView {
    pub(crate) fn get(&self) -> ContextsStatus {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(super) fn set(&self, status: ContextsStatus) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = status;
    }
}

/// Origins listed in [`ContextsStatus`], at most.
const STATUS_ORIGINS: usize = 50;

impl Quotas {
    pub(crate) fn new(check_budget: usize, dogstatsd_budget: usize, per_origin: usize) -> Self {
        let mut pools = [PoolState::default(); 2];
        pools[Pool::Checks as usize].budget = check_budget;
        pools[Pool::Dogstatsd as usize].budget = dogstatsd_budget;
        Self {
            per_origin,
            pools,
            index: HashMap::new(),
            origins: Vec::new(),
            free: Vec::new(),
            key: String::new(),
        }
    }

    /// Charges a new context to `owner` at `now` (Unix seconds): the origin to give back to
    /// [`Self::release`] when the context goes, or why it may not be created. Kept out of line:
    /// it runs once per new context, and inlined it would crowd the lookup of existing ones.
    #[inline(never)]
    pub(crate) fn admit(&mut self, owner: Owner<'_>, now: i64) -> Result<u32, Refused> {
        let pool = owner.pool();
        let slot = self.origin(owner, now);
        let state = self.pools[pool as usize];
        let Some(origin) = self.origins.get_mut(slot as usize).and_then(Option::as_mut) else {
            // `origin` gives a live slot: nothing to charge otherwise.
            return Err(Refused::PoolFull);
        };
        origin.last_active = now;
        // One more than the holders, itself included: room for the next origin to come.
        let holders = state.holders + usize::from(origin.live == 0) + 1;
        let fair_share = state.budget / holders;
        let refused = if state.live >= state.budget {
            Some(Refused::PoolFull)
        } else if origin.live >= self.per_origin
            || (origin.live >= fair_share && state.live >= state.budget - state.budget / 10)
        {
            Some(Refused::OriginQuota)
        } else {
            None
        };
        if let Some(refused) = refused {
            origin.refused += 1;
            origin.refused_unreported += 1;
            return Err(refused);
        }
        if origin.live == 0 {
            self.pools[pool as usize].holders += 1;
        }
        origin.live += 1;
        self.pools[pool as usize].live += 1;
        Ok(slot)
    }

    /// Gives back a context charged to `origin` by [`Self::admit`].
    pub(crate) fn release(&mut self, origin: u32, now: i64) {
        let Some(Some(o)) = self.origins.get_mut(origin as usize) else {
            return;
        };
        o.live -= 1;
        o.last_active = now;
        let pool = &mut self.pools[o.pool as usize];
        pool.live -= 1;
        if o.live == 0 {
            pool.holders -= 1;
        }
    }

    /// The slot of `owner`'s origin, tracked from now on if it was not.
    fn origin(&mut self, owner: Owner<'_>, now: i64) -> u32 {
        owner.write_key(&mut self.key);
        if let Some(&slot) = self.index.get(self.key.as_str()) {
            return slot;
        }
        let pool = owner.pool();
        if self.index.len() >= MAX_ORIGINS {
            self.key.clear();
            self.key.push_str(pool.overflow_key());
            if let Some(&slot) = self.index.get(self.key.as_str()) {
                return slot;
            }
        }
        let origin = Origin {
            key: self.key.as_str().into(),
            pool,
            live: 0,
            refused: 0,
            refused_unreported: 0,
            last_active: now,
            last_warned: None,
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.origins[slot as usize] = Some(origin);
                slot
            }
            None => {
                self.origins.push(Some(origin));
                (self.origins.len() - 1) as u32
            }
        };
        self.index.insert(self.key.as_str().into(), slot);
        slot
    }

    /// Forgets origins that hold no context and were last active [`FORGET_AFTER`] before
    /// `now`.
    pub(crate) fn sweep(&mut self, now: i64) {
        for (slot, entry) in self.origins.iter_mut().enumerate() {
            if let Some(origin) = entry
                && origin.live == 0
                && now.saturating_sub(origin.last_active) > FORGET_AFTER
            {
                self.index.remove(&origin.key);
                *entry = None;
                self.free.push(slot as u32);
            }
        }
    }

    /// Each origin that had contexts refused since the previous call, with how many; `warn`
    /// is true at most once a minute per origin, to log it.
    pub(crate) fn take_refusals(&mut self, now: i64, mut each: impl FnMut(&str, u64, bool)) {
        for origin in self.origins.iter_mut().flatten() {
            let refused = std::mem::take(&mut origin.refused_unreported);
            if refused == 0 {
                continue;
            }
            let warn = origin.last_warned.is_none_or(|at| now - at >= 60);
            if warn {
                origin.last_warned = Some(now);
            }
            each(&origin.key, refused, warn);
        }
    }

    /// The pools and the origins worth showing.
    pub(crate) fn status(&self) -> ContextsStatus {
        let mut origins: Vec<&Origin> = self.origins.iter().flatten().collect();
        origins.sort_by(|a, b| {
            (b.refused > 0)
                .cmp(&(a.refused > 0))
                .then(b.live.cmp(&a.live))
                .then(b.refused.cmp(&a.refused))
                .then(a.key.cmp(&b.key))
        });
        ContextsStatus {
            pools: Pool::ALL
                .iter()
                .map(|&pool| {
                    let state = self.pools[pool as usize];
                    PoolStatus {
                        pool,
                        contexts: state.live,
                        budget: state.budget,
                        origins: state.holders,
                    }
                })
                .collect(),
            max_per_origin: self.per_origin,
            origins: origins
                .into_iter()
                .filter(|o| o.live > 0 || o.refused > 0)
                .take(STATUS_ORIGINS)
                .map(|o| OriginStatus {
                    origin: o.key.to_string(),
                    name: None,
                    pool: o.pool,
                    contexts: o.live,
                    refused: o.refused,
                })
                .collect(),
        }
    }

    /// Origins tracked.
    #[cfg(test)]
    pub(crate) fn tracked(&self) -> usize {
        self.index.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(q: &mut Quotas, owner: Owner<'_>, n: usize) -> (Vec<u32>, usize) {
        let mut admitted = Vec::new();
        let mut refused = 0;
        for _ in 0..n {
            match q.admit(owner, 0) {
                Ok(slot) => admitted.push(slot),
                Err(_) => refused += 1,
            }
        }
        (admitted, refused)
    }

    #[test]
    fn one_sender_stops_at_its_quota_and_others_still_get_contexts() {
        let mut q = Quotas::new(100, 1000, 300);
        let (flood, refused) = fill(&mut q, Owner::Process(7), 10_000);
        assert_eq!((flood.len(), refused), (300, 9_700));
        assert_eq!(q.admit(Owner::Process(7), 0), Err(Refused::OriginQuota));
        let (other, refused) = fill(&mut q, Owner::Container("web"), 50);
        assert_eq!((other.len(), refused), (50, 0));
        let (checks, refused) = fill(&mut q, Owner::Check("a1"), 100);
        assert_eq!(
            (checks.len(), refused),
            (90, 10),
            "checks have a pool of their own, its last tenth kept for others"
        );
        assert_eq!(fill(&mut q, Owner::Check("a2"), 10).0.len(), 10);
        assert_eq!(q.admit(Owner::Check("a3"), 0), Err(Refused::PoolFull));
        let status = q.status();
        assert_eq!(status.origins[0].origin, "process:7");
        assert_eq!(status.origins[0].refused, 9_701);
        assert_eq!(status.pools[1].contexts, 350);
    }

    #[test]
    fn past_nine_tenths_an_origin_at_its_fair_share_yields_to_newcomers() {
        // No per-origin cap: the fair share alone.
        let mut q = Quotas::new(10, 1000, usize::MAX);
        let (big, _) = fill(&mut q, Owner::Container("big"), 2000);
        assert_eq!(big.len(), 900, "alone, it may use all but the last tenth");
        let (small, refused) = fill(&mut q, Owner::Container("small"), 200);
        assert_eq!(
            (small.len(), refused),
            (100, 100),
            "a newcomer gets the last tenth"
        );
        // What the big one gives back is anyone's up to nine tenths; the last tenth goes to
        // origins under their share (a third of the pool, with two holders).
        for &slot in &big[..400] {
            q.release(slot, 1);
        }
        assert_eq!(fill(&mut q, Owner::Container("small"), 400).0.len(), 300);
        assert_eq!(
            q.admit(Owner::Container("big"), 1),
            Err(Refused::OriginQuota)
        );
        assert_eq!(fill(&mut q, Owner::Container("third"), 400).0.len(), 100);
        assert_eq!(
            q.admit(Owner::Container("fourth"), 1),
            Err(Refused::PoolFull)
        );
    }

    #[test]
    fn origins_are_forgotten_when_idle_and_bounded_in_number() {
        let mut q = Quotas::new(10, 100_000, 1000);
        let slot = q.admit(Owner::Process(1), 0).unwrap();
        q.release(slot, 5);
        q.sweep(5 + FORGET_AFTER);
        assert_eq!(q.tracked(), 1, "remembered for a while");
        q.sweep(6 + FORGET_AFTER);
        assert_eq!(q.tracked(), 0);
        for pid in 0..(MAX_ORIGINS as u32 + 100) {
            q.admit(Owner::Process(pid), 0).unwrap();
        }
        assert_eq!(q.tracked(), MAX_ORIGINS + 1, "the rest share `other`");
        assert!(q.status().origins.iter().any(|o| o.origin == "other"));
    }

    #[test]
    fn refusals_are_reported_once_and_warned_about_once_a_minute() {
        let mut q = Quotas::new(10, 100, 1);
        fill(&mut q, Owner::Unidentified, 5);
        let mut seen = Vec::new();
        q.take_refusals(0, |key, n, warn| seen.push((key.to_owned(), n, warn)));
        assert_eq!(seen, [("unidentified".to_owned(), 4, true)]);
        fill(&mut q, Owner::Unidentified, 2);
        seen.clear();
        q.take_refusals(30, |key, n, warn| seen.push((key.to_owned(), n, warn)));
        assert_eq!(seen, [("unidentified".to_owned(), 2, false)]);
        seen.clear();
        q.take_refusals(31, |key, n, warn| seen.push((key.to_owned(), n, warn)));
        assert!(seen.is_empty());
    }
}
