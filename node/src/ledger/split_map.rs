//! [`SplitMap`]: a hash map that never pauses long to grow.
//!
//! A hash table doubles when full and moves every entry at once: at four million transfers
//! the transfer index moves ~100 MB and faults in ~200 MB of fresh pages in one insert, and
//! apply (which holds the ledger's write lock) stalls for up to a second. A `SplitMap` is
//! [`PARTS`] independent `FxHashMap`s chosen by bits of the key's hash; each part grows on
//! its own, so one insert moves at most 1/[`PARTS`] of the entries. Lookups cost one extra
//! hash of the key (FxHash: a few multiplications).
//!
//! The part is chosen by bits 49..57 of the hash. Inside a part hashbrown uses the low bits
//! (bucket index, below 2^49 buckets) and the top 7 bits 57..64 (tag), so the parts do not
//! skew the tables they hold. rustc-hash 2 rotates its product left by 26, so these are
//! bits 23..31 of the multiplication: mixed from the low 31 bits of every word hashed, which
//! is where sequential ids and timestamps differ. Iteration order is part by part, unspecified like any hash map's:
//! callers that output in order sort first.
//!
//! **Staggered growth.** Sequential keys (timestamps, ids from a counter) spread over the
//! parts so evenly that every part reaches its table's limit within a few hundred inserts
//! of the others: all of them grew inside one apply batch and the whole map moved at once
//! after all (measured: 256 growths within 1,374 inserts at 7.3 M sequential keys, 279 ms
//! for one batch of 8,190 inserts; the apply stalls of up to 1.2 s on all three replicas
//! at once in `bench/RESULTS.md`, 2026-12-04 evening). So part
//! `p` grows early, once it is `1/2 + p/(2·PARTS)` full: the parts' growths spread evenly
//! over the inserts that double the map. The price is memory: a part's table is between a
//! quarter and seven eighths full instead of between seven sixteenths and seven eighths.

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash};

use rustc_hash::{FxBuildHasher, FxHashMap};

/// Parts of a [`SplitMap`] (a power of two).
pub const PARTS: usize = 256;

/// Parts smaller than this (entries they hold without growing) grow when full, as any
/// table: moving them costs little.
const STAGGER_FROM: usize = 1024;

/// A hash map split into [`PARTS`] parts (see the module docs).
#[derive(Clone, Debug)]
pub struct SplitMap<K, V> {
    parts: Box<[FxHashMap<K, V>]>,
    /// Entries held (so `len` and `is_empty` do not visit every part).
    len: usize,
    /// Entries per part made room for by [`Self::reserve`]: a part does not grow early
    /// before it holds that many (room reserved up front is used, not doubled).
    reserved_each: usize,
}

/// A [`SplitMap`] used as a set.
pub type SplitSet<K> = SplitMap<K, ()>;

impl<K, V> Default for SplitMap<K, V> {
    fn default() -> Self {
        Self { parts: (0..PARTS).map(|_| FxHashMap::default()).collect(), len: 0, reserved_each: 0 }
    }
}

fn part_of<Q: Hash + ?Sized>(key: &Q) -> usize {
    // `as usize` keeps 8 bits after the mask: PARTS = 256.
    ((FxBuildHasher.hash_one(key) >> 49) as usize) & (PARTS - 1)
}

impl<K: Hash + Eq, V> SplitMap<K, V> {
    /// The value of `key`.
    pub fn get<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.parts[part_of(key)].get(key)
    }

    /// The value of `key`, to change it.
    pub fn get_mut<Q: Hash + Eq + ?Sized>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
    {
        self.parts[part_of(key)].get_mut(key)
    }

    /// Whether `key` is present.
    pub fn contains_key<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        self.parts[part_of(key)].contains_key(key)
    }

    /// Inserts `value` at `key`, returning the value it replaced. Grows the key's part
    /// first if it is past its own share of full (see the module docs).
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let p = part_of(&key);
        let part = &mut self.parts[p];
        let capacity = part.capacity();
        let len = part.len();
        if capacity >= STAGGER_FROM
            && len >= self.reserved_each
            && len >= capacity / 2 + capacity / 2 * p / PARTS
        {
            // One more than fits: hashbrown doubles the table.
            part.reserve(capacity - len + 1);
        }
        let replaced = part.insert(key, value);
        self.len += usize::from(replaced.is_none());
        replaced
    }

    /// Removes `key`, returning its value.
    pub fn remove<Q: Hash + Eq + ?Sized>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        let removed = self.parts[part_of(key)].remove(key);
        self.len -= usize::from(removed.is_some());
        removed
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.parts.iter().flat_map(|part| part.iter())
    }

    /// Makes room for `additional` more entries spread evenly (with 1/8 slack per part).
    pub fn reserve(&mut self, additional: usize) {
        let each = additional / PARTS + additional / PARTS / 8 + 1;
        self.parts.iter_mut().for_each(|part| part.reserve(each));
        self.reserved_each = self.reserved_each.max(each);
    }

    /// Removes every entry, keeping the memory.
    pub fn clear(&mut self) {
        self.parts.iter_mut().for_each(FxHashMap::clear);
        self.len = 0;
    }
}

impl<K: Hash + Eq, V> Extend<(K, V)> for SplitMap<K, V> {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, entries: I) {
        entries.into_iter().for_each(|(key, value)| {
            self.insert(key, value);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_as_a_map_and_spreads_sequential_keys_evenly() {
        // Proves the map semantics (insert/replace/remove/len/iter) and that dense keys (ids
        // and timestamps are often sequential) spread over the parts: no part holds more
        // than 1.25x the mean, so no part's growth is much bigger than the others'.
        let mut map: SplitMap<u128, u64> = SplitMap::default();
        assert!(map.is_empty());
        for i in 0..200_000_u64 {
            assert_eq!(map.insert(u128::from(i), i), None);
        }
        assert_eq!(map.insert(7, 70), Some(7));
        assert_eq!(map.get(&7), Some(&70));
        assert_eq!(map.remove(&8), Some(8));
        assert!(!map.contains_key(&8));
        assert_eq!(map.len(), 199_999);
        assert_eq!(map.iter().count(), 199_999);
        assert_eq!(map.parts.iter().map(FxHashMap::len).sum::<usize>(), 199_999);
        let mean = 199_999 / PARTS;
        let max = map.parts.iter().map(FxHashMap::len).max().unwrap();
        let min = map.parts.iter().map(FxHashMap::len).min().unwrap();
        assert!(max * 4 <= mean * 5 && min * 5 >= mean * 4, "parts {min}..{max}, mean {mean}");

        let mut timestamps: SplitSet<u64> = SplitSet::default();
        timestamps.extend((1_700_000_000_000_000_000..).step_by(1).take(100_000).map(|t| (t, ())));
        let max = timestamps.parts.iter().map(FxHashMap::len).max().unwrap();
        assert!(max * 4 <= (100_000 / PARTS) * 5, "largest part {max}");
        timestamps.clear();
        assert!(timestamps.is_empty() && timestamps.iter().next().is_none());
    }

    /// Sequential keys: the parts' growths spread over the inserts instead of coming
    /// together (before staggering: all 256 within 1,374 inserts at 7.3 M keys).
    #[test]
    fn parts_grow_at_different_times_under_sequential_keys() {
        let mut map: SplitMap<u64, ()> = SplitMap::default();
        let capacity = |map: &SplitMap<u64, ()>| -> Vec<usize> {
            map.parts.iter().map(FxHashMap::capacity).collect()
        };
        let mut before = capacity(&map);
        let mut growths = Vec::new(); // insert number of every growth of a large part
        for i in 0..2_000_000_u64 {
            let key = 1_700_000_000_000_000_000 + i;
            map.insert(key, ());
            // Only the inserted key's part can have changed.
            let p = part_of(&key);
            let now = map.parts[p].capacity();
            if now != before[p] {
                if before[p] >= STAGGER_FROM {
                    growths.push(i);
                }
                before[p] = now;
            }
        }
        assert_eq!(before, capacity(&map));
        assert!(growths.len() >= 2 * PARTS, "{} growths of large parts", growths.len());
        let crowded = growths.windows(9).map(|w| w[8] - w[0]).min().unwrap();
        assert!(crowded >= 1024, "9 parts grew within {crowded} inserts");
    }
}
