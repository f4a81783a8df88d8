//! The key table: one GCRA word per key, in a sharded, bounded map.
//!
//! Up to 64 shards (each with room for at least 256 keys) are `RwLock<HashMap<key, AtomicU64>>` with a seeded `foldhash` hasher. A known key
//! costs one hash, one read lock and the bucket's CAS; no allocation. A new key takes its
//! shard's write lock once. Each shard holds at most its share of `max_keys`. When a shard is
//! full, it first drops its idle keys: those whose bucket is full again (`tat <= now`), which is
//! lossless since an absent key *is* a full bucket. If none is idle, the new key is not stored
//! and its request draws from the default bucket, so a flood of new keys shares one allowance
//! and never pushes out the state of known clients. A shard that found nothing idle does not
//! look again before the earliest of its keys can be idle.

use super::gcra::{self, Outcome, Params};
use crate::stripe::CachePadded;
// The buckets are the GCRA's words (`crate::sync`, as `gcra::acquire` takes them); the
// table's own bookkeeping is outside the models.
use crate::sync::atomic::AtomicU64;
use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64 as StdAtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{PoisonError, RwLock};

type Map<K> = HashMap<K, AtomicU64, foldhash::fast::RandomState>;

pub(crate) struct Store<K> {
    shards: Box<[CachePadded<Shard<K>>]>,
    hasher: foldhash::fast::RandomState,
    max_keys: usize,
    overflowed: StdAtomicU64,
}

struct Shard<K> {
    map: RwLock<Map<K>>,
    cap: usize,
    /// No key of this shard can be idle before this time (ns); 0 when unknown.
    next_sweep: StdAtomicU64,
    len: AtomicUsize,
}

/// What happened to a keyed call.
pub(crate) enum Keyed {
    /// The key's bucket decided.
    Decided(Outcome),
    /// The key is new and the table has no room: the caller uses the default bucket.
    Full,
}

impl<K: Hash + Eq> Store<K> {
    pub(crate) fn new(max_keys: usize) -> Self {
        // Up to 64 shards, each holding at least 256 keys: an uneven spread of keys over
        // shards then costs little of the capacity.
        let n = (max_keys / 256).clamp(1, 64);
        let n = 1usize << n.ilog2();
        let shards = (0..n)
            .map(|i| {
                CachePadded(Shard {
                    map: RwLock::new(Map::default()),
                    cap: max_keys / n + usize::from(i < max_keys % n),
                    next_sweep: StdAtomicU64::new(0),
                    len: AtomicUsize::new(0),
                })
            })
            .collect();
        Self {
            shards,
            hasher: foldhash::fast::RandomState::default(),
            max_keys,
            overflowed: StdAtomicU64::new(0),
        }
    }

    #[inline]
    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> &Shard<K> {
        let h = self.hasher.hash_one(key);
        // High bits pick the shard: the map's own (differently seeded) hash uses the low ones.
        &self.shards[(h >> 32) as usize & (self.shards.len() - 1)]
    }

    /// Decides a call for `key` at `now`.
    #[inline]
    pub(crate) fn acquire<Q>(&self, key: &Q, now: u64, p: Params) -> Keyed
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
    {
        let shard = self.shard(key);
        {
            let map = shard.map.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(tat) = map.get(key) {
                return Keyed::Decided(gcra::acquire(tat, now, p));
            }
        }
        self.insert(shard, key, now, p)
    }

    #[cold]
    #[inline(never)]
    fn insert<Q>(&self, shard: &Shard<K>, key: &Q, now: u64, p: Params) -> Keyed
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
    {
        let mut map = shard.map.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(tat) = map.get(key) {
            // Another call inserted it meanwhile.
            return Keyed::Decided(gcra::acquire(tat, now, p));
        }
        if map.len() >= shard.cap {
            let due = shard.next_sweep.load(Relaxed);
            if now >= due {
                map.retain(|_, tat| tat.load(Relaxed) > now);
                let earliest = map.values().map(|t| t.load(Relaxed)).min();
                shard.next_sweep.store(earliest.unwrap_or(0), Relaxed);
                shard.len.store(map.len(), Relaxed);
            }
            if map.len() >= shard.cap {
                let n = self.overflowed.fetch_add(1, Relaxed);
                if n.is_power_of_two() {
                    tracing::warn!(
                        target: "seawall::rate_limit",
                        max_keys = self.max_keys,
                        overflowed = n + 1,
                        "key table full and no key idle; new keys use the default bucket"
                    );
                }
                return Keyed::Full;
            }
        }
        let tat = AtomicU64::new(0);
        let outcome = gcra::acquire(&tat, now, p);
        if !matches!(outcome, Outcome::Denied { .. }) {
            map.insert(key.to_owned(), tat);
            shard.len.store(map.len(), Relaxed);
        }
        Keyed::Decided(outcome)
    }

    /// The bucket of `key` as it is (`0`, a full bucket, when absent).
    pub(crate) fn tat<Q>(&self, key: &Q) -> u64
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq,
    {
        let map = self
            .shard(key)
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        map.get(key).map_or(0, |t| t.load(Relaxed))
    }

    /// Keys stored now.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.len.load(Relaxed)).sum()
    }

    /// Drops every idle key (full bucket at `now`); returns how many were dropped.
    pub(crate) fn sweep(&self, now: u64) -> usize {
        let mut dropped = 0;
        for shard in self.shards.iter() {
            let mut map = shard.map.write().unwrap_or_else(PoisonError::into_inner);
            let before = map.len();
            map.retain(|_, tat| tat.load(Relaxed) > now);
            dropped += before - map.len();
            shard.len.store(map.len(), Relaxed);
        }
        dropped
    }

    /// Calls `f` on every key's bucket.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&AtomicU64)) {
        for shard in self.shards.iter() {
            let map = shard.map.read().unwrap_or_else(PoisonError::into_inner);
            map.values().for_each(&mut f);
        }
    }

    /// New keys sent to the default bucket because the table was full.
    pub(crate) fn overflowed(&self) -> u64 {
        self.overflowed.load(Relaxed)
    }

    pub(crate) fn max_keys(&self) -> usize {
        self.max_keys
    }
}

#[cfg(all(test, not(seawall_loom)))]
mod tests {
    use super::*;

    const P: Params = Params {
        t: 1_000,
        burst: 2,
        max_wait: 0,
    };

    #[test]
    fn shard_capacities_add_up_to_max_keys() {
        for max in [1, 2, 3, 7, 64, 65, 100, 1000, 160_000] {
            let s = Store::<u64>::new(max);
            assert_eq!(s.shards.iter().map(|s| s.cap).sum::<usize>(), max, "{max}");
            assert!(s.shards.len().is_power_of_two());
            assert!(s.shards.iter().all(|s| s.cap >= 1));
        }
    }

    #[test]
    fn a_full_table_drops_idle_keys_then_sends_new_ones_to_the_default_bucket() {
        let s = Store::<u64>::new(4);
        for k in 0..100u64 {
            let _ = s.acquire(&k, 0, P);
        }
        assert!(s.len() <= 4);
        assert!(s.overflowed() > 0);
        // Every stored key is idle at t = 10 us: new keys find room again.
        for k in 100..200u64 {
            let _ = s.acquire(&k, 10_000, P);
        }
        assert!(s.len() <= 4);
        let stored = s.len();
        assert_eq!(s.sweep(20_000), stored);
        assert_eq!(s.len(), 0);
    }
}
