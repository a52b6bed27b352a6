//! Contexts: which series a sample belongs to (its name, tag set and host), resolved without
//! allocating once the context exists.
//!
//! A DogStatsD sample arrives with its tags in the client's order, possibly repeated
//! (`|#b,a,b`); the Agent's metrics-pipeline work found that sorting and de-duplicating tags was
//! the cost of the whole pipeline, and fixed it by hashing tags and sorting the hashes. Kennel does
//! the same:
//!
//! - each tag is hashed (64 bits, a seeded wyhash, a few ns for a short string) into a reusable
//!   scratch vector of `(hash, &str)`, sorted by hash (integer compares); repeats are removed
//!   only when two neighbours share a hash, which is rare; the context key is the name's and
//!   host's hashes folded with the sorted tag hashes, so it does not depend on the client's order;
//! - the key indexes a map of contexts, and a hit is **verified** against the stored name, host
//!   and tags (an inlined compare per string, in the same hash order), so two contexts whose
//!   64-bit keys collide are both kept, chained from the same map entry, and never merged. The
//!   Agent trusts its 64-bit Murmur3 keys; verifying costs a dozen short compares and makes a
//!   collision harmless rather than merely improbable;
//! - the seed is random per process, so a client cannot precompute colliding names to degrade
//!   the map.
//!
//! A context's strings are interned (`Arc<str>`): names and tags repeat across contexts
//! (`env:prod` on all of them), so each distinct string is stored once, and the flushed series
//! share them instead of copying. Allocation happens only when a context is created; strings no
//! context uses any more are swept when contexts expire.
//!
//! Stored tags are sorted lexicographically (what a reader of the flushed series expects), with a
//! 2-byte-per-tag permutation giving the hash order used for verification, kept inline in the
//! context for up to 11 tags.
//!
//! Measured (`throughput.rs`, release, one core): about 180 ns per sample with 1,000 hot
//! contexts and ten tags, about 410 ns with 100,000 (cache misses: map, context, tags, state),
//! and about 480 bytes per context with ten tags, interned strings included.
//!
//! Missing: a cap on interned bytes (the context limit bounds them indirectly), and cardinality
//! tracking per name (`dogstatsd top`).

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::Arc;

use super::quota::{Owner, Quotas, Refused};

/// The tags of a series: sorted and de-duplicated, shared by the context and its flushed series.
pub(crate) type Tags = Arc<[Arc<str>]>;

/// A handle on a live context, from [`super::Aggregator::context`]. It goes stale when the
/// context expires; samples added through a stale handle are dropped and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ContextId {
    pub(super) index: u32,
    generation: u32,
}

/// The most distinct tags one context holds: a DogStatsD line's own tags plus what origin
/// detection adds, or a check's (capped at 100 by the plugin host) plus its instance's and its
/// container's. A sample with more is dropped and counted (`too_many_tags`): one line carrying
/// 10,000 tags would otherwise cost a context 10,000 tags' memory and make every flush and
/// scrape of it as long.
pub(crate) const MAX_TAGS: usize = 256;

/// The outcome of resolving a sample's context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Resolved {
    Existing(ContextId),
    Created(ContextId),
    /// The context does not exist and its origin may not create it (see [`super::quota`]).
    Refused(Refused),
    /// More distinct tags than a context may hold ([`MAX_TAGS`]).
    TooManyTags,
}

/// A live context: what the flushed series are named and tagged with.
#[derive(Debug)]
pub(super) struct Entry {
    pub(crate) name: Arc<str>,
    /// Empty when the sample came without a host.
    pub(crate) host: Arc<str>,
    pub(crate) tags: Tags,
    /// When a sample last resolved to this context, in Unix seconds.
    pub(crate) last_seen: i64,
    /// The origin it is charged to, in the resolver's [`Quotas`].
    origin: u32,
    key: u64,
    /// The next context with the same key, or [`NONE`].
    next: u32,
    /// `tags[hash_order[i]]` is the i-th tag in (hash, string) order.
    hash_order: Order,
}

impl Entry {
    fn matches(&self, name: &str, host: &str, tags: &[(u64, &str)]) -> bool {
        same(&self.name, name)
            && same(&self.host, host)
            && self.hash_order.as_slice().len() == tags.len()
            && tags
                .iter()
                .zip(self.hash_order.as_slice())
                .all(|(&(_, tag), &i)| same(&self.tags[usize::from(i)], tag))
    }

    /// Heap bytes owned by this context alone (its share of interned strings excluded).
    #[cfg(test)]
    fn heap_bytes(&self) -> usize {
        // An `Arc<[T]>` allocation holds two reference counts before the slice.
        2 * std::mem::size_of::<usize>()
            + std::mem::size_of_val(&*self.tags)
            + match &self.hash_order {
                Order::Inline { .. } => 0,
                Order::Heap(order) => std::mem::size_of_val(&**order),
            }
    }
}

/// A permutation of a context's tags, inline for up to [`Order::INLINE`] tags: most contexts
/// have a handful, and an inline permutation saves an allocation and a cache miss per lookup.
#[derive(Debug)]
enum Order {
    Inline {
        len: u8,
        order: [u16; Order::INLINE],
    },
    Heap(Box<[u16]>),
}

impl Order {
    const INLINE: usize = 11;

    fn new(len: usize) -> Self {
        if len <= Self::INLINE {
            Self::Inline {
                len: len as u8,
                order: [0; Self::INLINE],
            }
        } else {
            Self::Heap(vec![0; len].into_boxed_slice())
        }
    }

    fn as_slice(&self) -> &[u16] {
        match self {
            Self::Inline { len, order } => &order[..usize::from(*len)],
            Self::Heap(order) => order,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [u16] {
        match self {
            Self::Inline { len, order } => &mut order[..usize::from(*len)],
            Self::Heap(order) => order,
        }
    }
}

const NONE: u32 = u32::MAX;

#[derive(Debug)]
struct Slot {
    generation: u32,
    entry: Option<Entry>,
}

/// Maps samples to contexts; owns every context's identity.
#[derive(Debug)]
pub(super) struct ContextResolver {
    seed: u64,
    /// Context key to the first slot with that key.
    map: HashMap<u64, u32, BuildHasherDefault<KeyHasher>>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    live: usize,
    quotas: Quotas,
    interner: HashSet<Arc<str>>,
    /// Reused for every sample's tags; always empty between calls.
    scratch: Vec<(u64, &'static str)>,
    /// Whether contexts were removed since the interner was last swept.
    removed: bool,
}

impl ContextResolver {
    pub(crate) fn new(quotas: Quotas) -> Self {
        Self::with_seed(
            quotas,
            std::collections::hash_map::RandomState::new().hash_one(0x6b65_6e6e_656c_u64),
        )
    }

    pub(crate) fn with_seed(quotas: Quotas, seed: u64) -> Self {
        Self {
            seed,
            map: HashMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
            quotas,
            interner: HashSet::new(),
            scratch: Vec::new(),
            removed: false,
        }
    }

    /// The context of `name`, `tags` (any order, duplicates allowed) and `host` (empty for
    /// none), created if new and `owner`'s quota allows it. `now` (Unix seconds) marks it as
    /// seen.
    pub(crate) fn resolve<'a, I>(
        &mut self,
        name: &str,
        tags: I,
        host: &str,
        owner: Owner<'_>,
        now: i64,
    ) -> Resolved
    where
        I: IntoIterator<Item = &'a str>,
    {
        let mut scratch: Vec<(u64, &'a str)> = recycle(std::mem::take(&mut self.scratch));
        let seed = self.seed;
        scratch.extend(tags.into_iter().map(|tag| (hash_str(seed, tag), tag)));
        scratch.sort_unstable_by_key(|&(hash, _)| hash);
        if scratch.windows(2).any(|w| w[0].0 == w[1].0) {
            // A repeated tag (or two tags with one hash): order equal hashes by string, so
            // that the order is the same whatever the client's, and drop the repeats.
            scratch.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));
            scratch.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
        }
        let resolved = if scratch.len() > MAX_TAGS {
            Resolved::TooManyTags
        } else {
            let key = self.key(name, &scratch, host);
            self.find_or_create(key, name, &scratch, host, owner, now)
        };
        self.scratch = recycle(scratch);
        resolved
    }

    /// The context key: the name's and host's hashes folded with the sorted tag hashes.
    fn key(&self, name: &str, tags: &[(u64, &str)], host: &str) -> u64 {
        let mut key = mix(self.seed ^ hash_str(self.seed, name), P[1]);
        key = mix(key ^ hash_str(self.seed, host), P[2]);
        for &(hash, _) in tags {
            key = mix(key ^ hash, P[3]);
        }
        key
    }

    fn find_or_create(
        &mut self,
        key: u64,
        name: &str,
        tags: &[(u64, &str)],
        host: &str,
        owner: Owner<'_>,
        now: i64,
    ) -> Resolved {
        let head = self.map.get(&key).copied().unwrap_or(NONE);
        let mut index = head;
        while index != NONE {
            let slot = &mut self.slots[index as usize];
            let generation = slot.generation;
            let Some(entry) = slot.entry.as_mut() else {
                break;
            };
            if entry.matches(name, host, tags) {
                entry.last_seen = entry.last_seen.max(now);
                return Resolved::Existing(ContextId { index, generation });
            }
            index = entry.next;
        }
        let origin = match self.quotas.admit(owner, now) {
            Ok(origin) => origin,
            Err(refused) => return Resolved::Refused(refused),
        };
        let mut entry = self.new_entry(name, tags, host, now, key, head);
        entry.origin = origin;
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    entry: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.entry = Some(entry);
        self.map.insert(key, index);
        self.live += 1;
        Resolved::Created(ContextId {
            index,
            generation: slot.generation,
        })
    }

    fn new_entry(
        &mut self,
        name: &str,
        tags: &[(u64, &str)],
        host: &str,
        now: i64,
        key: u64,
        next: u32,
    ) -> Entry {
        let mut sorted: Vec<(&str, u16)> = tags
            .iter()
            .enumerate()
            .map(|(i, &(_, tag))| (tag, i as u16))
            .collect();
        sorted.sort_unstable();
        let mut hash_order = Order::new(sorted.len());
        let order = hash_order.as_mut_slice();
        for (position, &(_, i)) in sorted.iter().enumerate() {
            order[usize::from(i)] = position as u16;
        }
        let tags: Tags = sorted.iter().map(|&(tag, _)| self.intern(tag)).collect();
        Entry {
            name: self.intern(name),
            host: self.intern(host),
            tags,
            last_seen: now,
            origin: NONE,
            key,
            next,
            hash_order,
        }
    }

    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(interned) = self.interner.get(s) {
            return Arc::clone(interned);
        }
        let interned: Arc<str> = Arc::from(s);
        self.interner.insert(Arc::clone(&interned));
        interned
    }

    /// A seeded 64-bit hash of `s` (set members are kept as these).
    pub(crate) fn hash(&self, s: &str) -> u64 {
        hash_str(self.seed, s)
    }

    /// The live context `id` refers to, if it has not expired since.
    pub(crate) fn get(&self, id: ContextId) -> Option<&Entry> {
        let slot = self.slots.get(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        slot.entry.as_ref()
    }

    /// The live context in slot `index`.
    pub(crate) fn entry(&self, index: usize) -> Option<&Entry> {
        self.slots.get(index).and_then(|slot| slot.entry.as_ref())
    }

    /// How many slots exist (live or free): contexts are indexed below this.
    pub(crate) fn slots(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn len(&self) -> usize {
        self.live
    }

    /// The contexts' quotas.
    pub(crate) fn quotas(&mut self) -> &mut Quotas {
        &mut self.quotas
    }

    /// Forgets the context in slot `index` at `now` (Unix seconds), giving it back to its
    /// origin's quota; handles on it go stale.
    pub(crate) fn remove(&mut self, index: usize, now: i64) {
        let Some(slot) = self.slots.get_mut(index) else {
            return;
        };
        let Some(entry) = slot.entry.take() else {
            return;
        };
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(index as u32);
        self.live -= 1;
        self.quotas.release(entry.origin, now);
        self.removed = true;
        // Unlink it from its key's chain.
        let index = index as u32;
        match self.map.get(&entry.key).copied() {
            Some(head) if head == index => {
                if entry.next == NONE {
                    self.map.remove(&entry.key);
                } else {
                    self.map.insert(entry.key, entry.next);
                }
            }
            Some(mut at) => {
                while at != NONE {
                    let Some(previous) = self.slots[at as usize].entry.as_mut() else {
                        break;
                    };
                    if previous.next == index {
                        previous.next = entry.next;
                        break;
                    }
                    at = previous.next;
                }
            }
            None => {}
        }
    }

    /// Drops interned strings that no context (and no flushed series still held) uses.
    pub(crate) fn sweep(&mut self) {
        if std::mem::take(&mut self.removed) {
            self.interner.retain(|s| Arc::strong_count(s) > 1);
        }
    }

    /// Distinct interned strings.
    #[cfg(test)]
    pub(crate) fn interned(&self) -> usize {
        self.interner.len()
    }

    /// Approximate heap bytes of the contexts, interned strings included.
    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> usize {
        let word = std::mem::size_of::<usize>();
        let slots = self.slots.capacity() * std::mem::size_of::<Slot>();
        // hashbrown: one control byte per bucket plus the (key, value) pairs, buckets a power
        // of two at most 7/8 full.
        let map = self.map.capacity().next_power_of_two() * 8 / 7
            * (1 + std::mem::size_of::<(u64, u32)>());
        let entries: usize = self
            .slots
            .iter()
            .filter_map(|s| s.entry.as_ref())
            .map(Entry::heap_bytes)
            .sum();
        let interned: usize = self
            .interner
            .iter()
            .map(|s| 2 * word + s.len())
            .sum::<usize>()
            + self.interner.capacity() * 8 / 7 * (1 + std::mem::size_of::<Arc<str>>());
        slots + map + entries + interned + self.free.capacity() * 4
    }
}

/// Gives a vector's allocation a new element lifetime. The vector is emptied first, and
/// collecting an empty in-place iterator into the same element layout reuses the allocation,
/// so the scratch vector costs nothing per sample.
#[expect(
    clippy::unnecessary_filter_map,
    reason = "the element type changes (its lifetime), which `filter` cannot do"
)]
fn recycle<'to>(mut v: Vec<(u64, &str)>) -> Vec<(u64, &'to str)> {
    v.clear();
    v.into_iter().filter_map(|_| None).collect()
}

/// String equality, inlined: verifying a context compares a dozen short strings, and a call to
/// the C library's `memcmp` for each cost more than the comparisons themselves.
#[inline]
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let len = a.len();
    if len != b.len() {
        return false;
    }
    if len >= 8 {
        let mut at = 0;
        while at + 8 < len {
            if read8(a, at) != read8(b, at) {
                return false;
            }
            at += 8;
        }
        // The last 8 bytes, overlapping what was compared.
        read8(a, len - 8) == read8(b, len - 8)
    } else if len >= 4 {
        read4(a, 0) == read4(b, 0) && read4(a, len - 4) == read4(b, len - 4)
    } else {
        a.iter().zip(b).all(|(x, y)| x == y)
    }
}

/// The map's keys are already well-mixed hashes: use them as they are.
#[derive(Debug, Default)]
pub(super) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// wyhash's secret constants (final version 4).
const P: [u64; 4] = [
    0x2d35_8dcc_aa6c_78a5,
    0x8bb8_4b93_962e_acc9,
    0x4b33_a62e_d433_d4a3,
    0x4d5a_2da5_1de1_aa47,
];

#[inline]
fn multiply(a: u64, b: u64) -> (u64, u64) {
    let r = u128::from(a) * u128::from(b);
    (r as u64, (r >> 64) as u64)
}

#[inline]
fn mix(a: u64, b: u64) -> u64 {
    let (lo, hi) = multiply(a, b);
    lo ^ hi
}

#[inline]
fn read8(p: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&p[at..at + 8]);
    u64::from_le_bytes(b)
}

#[inline]
fn read4(p: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&p[at..at + 4]);
    u64::from(u32::from_le_bytes(b))
}

/// wyhash (final version 4) of `s`: fast on short strings, well distributed, seeded.
pub(super) fn hash_str(seed: u64, s: &str) -> u64 {
    let p = s.as_bytes();
    let len = p.len();
    let mut seed = seed ^ mix(seed ^ P[0], P[1]);
    let (a, b);
    if len <= 16 {
        if len >= 4 {
            let quarter = (len >> 3) << 2;
            a = (read4(p, 0) << 32) | read4(p, quarter);
            b = (read4(p, len - 4) << 32) | read4(p, len - 4 - quarter);
        } else if len > 0 {
            a = (u64::from(p[0]) << 16) | (u64::from(p[len >> 1]) << 8) | u64::from(p[len - 1]);
            b = 0;
        } else {
            a = 0;
            b = 0;
        }
    } else {
        let mut at = 0;
        let mut left = len;
        if left > 48 {
            let mut see1 = seed;
            let mut see2 = seed;
            while left > 48 {
                seed = mix(read8(p, at) ^ P[1], read8(p, at + 8) ^ seed);
                see1 = mix(read8(p, at + 16) ^ P[2], read8(p, at + 24) ^ see1);
                see2 = mix(read8(p, at + 32) ^ P[3], read8(p, at + 40) ^ see2);
                at += 48;
                left -= 48;
            }
            seed ^= see1 ^ see2;
        }
        while left > 16 {
            seed = mix(read8(p, at) ^ P[1], read8(p, at + 8) ^ seed);
            at += 16;
            left -= 16;
        }
        a = read8(p, at + left - 16);
        b = read8(p, at + left - 8);
    }
    let (lo, hi) = multiply(a ^ P[1], b ^ seed);
    mix(lo ^ P[0] ^ len as u64, hi ^ P[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn created(r: Resolved) -> ContextId {
        match r {
            Resolved::Created(id) => id,
            other => panic!("expected a new context, got {other:?}"),
        }
    }

    fn existing(r: Resolved) -> ContextId {
        match r {
            Resolved::Existing(id) => id,
            other => panic!("expected an existing context, got {other:?}"),
        }
    }

    #[test]
    fn tag_order_and_duplicates_resolve_to_one_context() {
        let mut r = ContextResolver::new(Quotas::new(0, 10, usize::MAX));
        let id = created(r.resolve("m", ["b:2", "a:1", "c"], "h", Owner::Unidentified, 0));
        assert_eq!(
            existing(r.resolve("m", ["a:1", "c", "b:2"], "h", Owner::Unidentified, 0)),
            id
        );
        assert_eq!(
            existing(r.resolve(
                "m",
                ["c", "b:2", "a:1", "c", "a:1"],
                "h",
                Owner::Unidentified,
                0
            )),
            id
        );
        assert_eq!(r.len(), 1);
        let entry = r.get(id).expect("live");
        let tags: Vec<&str> = entry.tags.iter().map(|t| &**t).collect();
        assert_eq!(tags, ["a:1", "b:2", "c"]);
    }

    #[test]
    fn name_host_and_each_tag_are_part_of_the_context() {
        let mut r = ContextResolver::new(Quotas::new(0, 10, usize::MAX));
        created(r.resolve("m", ["a"], "h", Owner::Unidentified, 0));
        created(r.resolve("m", ["a"], "", Owner::Unidentified, 0));
        created(r.resolve("m", ["a"], "other", Owner::Unidentified, 0));
        created(r.resolve("n", ["a"], "h", Owner::Unidentified, 0));
        created(r.resolve("m", ["a", "b"], "h", Owner::Unidentified, 0));
        created(r.resolve("m", [], "h", Owner::Unidentified, 0));
        // A tag is not a name: moving a string between parts is another context.
        created(r.resolve("a", ["m"], "h", Owner::Unidentified, 0));
        assert_eq!(r.len(), 7);
    }

    #[test]
    fn colliding_keys_keep_both_contexts_apart() {
        let mut r = ContextResolver::new(Quotas::new(0, 10, usize::MAX));
        let a = created(r.resolve("a", ["x"], "", Owner::Unidentified, 0));
        // File "b" under a's key, as if their 64-bit keys collided.
        let key = r.get(a).expect("live").key;
        let b_tags = [(hash_str(r.seed, "y"), "y")];
        let b = created(r.find_or_create(key, "b", &b_tags, "", Owner::Unidentified, 0));
        assert_ne!(a, b);
        assert_eq!(
            existing(r.find_or_create(key, "b", &b_tags, "", Owner::Unidentified, 0)),
            b
        );
        assert_eq!(
            existing(r.resolve("a", ["x"], "", Owner::Unidentified, 0)),
            a
        );
        // Removing either keeps the other reachable through the shared key.
        r.remove(b.index as usize, 0);
        assert_eq!(
            existing(r.resolve("a", ["x"], "", Owner::Unidentified, 0)),
            a
        );
        let b = created(r.find_or_create(key, "b", &b_tags, "", Owner::Unidentified, 0));
        r.remove(a.index as usize, 0);
        assert_eq!(
            existing(r.find_or_create(key, "b", &b_tags, "", Owner::Unidentified, 0)),
            b
        );
        r.remove(b.index as usize, 0);
        assert!(r.map.is_empty());
    }

    #[test]
    fn the_limit_refuses_new_contexts_but_not_existing_ones() {
        let mut r = ContextResolver::new(Quotas::new(0, 2, usize::MAX));
        created(r.resolve("a", [], "", Owner::Unidentified, 0));
        created(r.resolve("b", [], "", Owner::Unidentified, 0));
        assert_eq!(
            r.resolve("c", [], "", Owner::Unidentified, 0),
            Resolved::Refused(Refused::PoolFull)
        );
        existing(r.resolve("a", [], "", Owner::Unidentified, 0));
    }

    #[test]
    fn removed_contexts_free_their_slot_and_stale_handles_fail() {
        let mut r = ContextResolver::new(Quotas::new(0, 10, usize::MAX));
        let a = created(r.resolve("a", ["t"], "", Owner::Unidentified, 0));
        r.remove(a.index as usize, 0);
        assert!(r.get(a).is_none());
        assert_eq!(r.len(), 0);
        let b = created(r.resolve("b", ["t"], "", Owner::Unidentified, 0));
        assert_eq!(b.index, a.index, "the slot is reused");
        assert!(r.get(a).is_none(), "the old handle stays stale");
        let again = created(r.resolve("a", ["t"], "", Owner::Unidentified, 0));
        assert_ne!(again, a);
    }

    #[test]
    fn unused_interned_strings_are_swept() {
        let mut r = ContextResolver::new(Quotas::new(0, 10, usize::MAX));
        let a = created(r.resolve("a", ["shared", "only-a"], "h", Owner::Unidentified, 0));
        created(r.resolve("b", ["shared"], "h", Owner::Unidentified, 0));
        assert_eq!(r.interned(), 5);
        r.remove(a.index as usize, 0);
        r.sweep();
        let mut left: Vec<String> = r.interner.iter().map(|s| s.to_string()).collect();
        left.sort();
        assert_eq!(left, ["b", "h", "shared"]);
    }

    #[test]
    fn the_scratch_vector_is_reused_across_samples() {
        let mut r = ContextResolver::new(Quotas::new(0, 10, usize::MAX));
        r.resolve("a", ["x", "y", "z"], "", Owner::Unidentified, 0);
        let capacity = r.scratch.capacity();
        let pointer = r.scratch.as_ptr();
        assert!(capacity >= 3);
        r.resolve("a", ["x", "y", "z"], "", Owner::Unidentified, 0);
        assert_eq!(r.scratch.as_ptr(), pointer);
        assert_eq!(r.scratch.capacity(), capacity);
    }

    #[test]
    fn contexts_with_many_tags_resolve_like_small_ones() {
        let mut r = ContextResolver::new(Quotas::new(0, 10, usize::MAX));
        let tags: Vec<String> = (0..40).map(|i| format!("t:{i}")).collect();
        let id = created(r.resolve(
            "m",
            tags.iter().map(String::as_str),
            "",
            Owner::Unidentified,
            0,
        ));
        assert_eq!(
            existing(r.resolve(
                "m",
                tags.iter().rev().map(String::as_str),
                "",
                Owner::Unidentified,
                0
            )),
            id
        );
        assert_eq!(r.get(id).expect("live").tags.len(), 40);
        assert!(std::mem::size_of::<Order>() <= 24);
    }

    #[test]
    fn inlined_equality_agrees_with_str_equality() {
        let words = [
            "",
            "a",
            "ab",
            "abc",
            "abcd",
            "abcde",
            "abcdefg",
            "abcdefgh",
            "abcdefghi",
            "abcdefghijklmnop",
            "abcdefghijklmnopq",
            "abcdefghijklmnopX",
            "Xbcdefghijklmnopq",
            "abcdefgXijklmnopq",
            "abcX",
            "Xbcd",
        ];
        for a in words {
            for b in words {
                assert_eq!(same(a, b), a == b, "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn the_hash_spreads_similar_short_strings() {
        let mut seen = HashSet::new();
        for i in 0..100_000 {
            assert!(seen.insert(hash_str(0, &format!("tag:{i}"))));
        }
        for len in 0..200 {
            let s = "x".repeat(len);
            assert!(seen.insert(hash_str(0, &s)), "length {len}");
        }
        assert_ne!(hash_str(1, "a"), hash_str(2, "a"), "the seed matters");
    }
}
