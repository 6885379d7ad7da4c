//! [`ChunkedVec`]: an append-only list that never moves what it holds to grow.
//!
//! A `Vec` doubles when full and copies every element at once. The ledger's transfer table
//! is such a list (144 bytes per transfer): at 4,194,304 transfers one insert copied
//! 604 MB into 1.2 GB of fresh pages, under the ledger's write lock, on every replica at
//! the same log index — measured as a 1.06–1.23-s apply on all three nodes at once, the
//! worst latency of a 30-s peak run (`bench/RESULTS.md`). At 100 M transfers the copy would
//! be 14 GB and need twice the table's memory for a moment. A `ChunkedVec` holds its
//! elements in chunks of [`CHUNK`]: the first grows like a `Vec` (a short list costs what a
//! `Vec` costs; a move copies at most `CHUNK` elements), every later one is allocated whole
//! once, so growing past the first chunk moves nothing. Indexing costs one more load (the
//! chunk's pointer, from a list that stays in cache).

use std::ops::{Index, IndexMut};

/// log2 of [`CHUNK`].
const CHUNK_BITS: u32 = 14;
/// Elements per chunk: 16,384 (2.3 MB of transfers).
pub const CHUNK: usize = 1 << CHUNK_BITS;

/// An append-only list in chunks of [`CHUNK`] elements (see the module docs).
#[derive(Clone, Debug)]
pub struct ChunkedVec<T> {
    /// Every chunk but the last holds exactly `CHUNK` elements while in use; chunks past
    /// `len` are kept (empty, allocated) for the next pushes.
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T> Default for ChunkedVec<T> {
    fn default() -> Self {
        Self { chunks: Vec::new(), len: 0 }
    }
}

impl<T> ChunkedVec<T> {
    /// Elements held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `value`. Past the first chunk, allocates a whole chunk when the last one is
    /// full and moves nothing.
    pub fn push(&mut self, value: T) {
        let chunk = self.len >> CHUNK_BITS;
        if chunk == self.chunks.len() {
            self.chunks.push(if chunk == 0 { Vec::new() } else { Vec::with_capacity(CHUNK) });
        }
        self.chunks[chunk].push(value);
        self.len += 1;
    }

    /// Removes and returns the last element; its chunk stays allocated.
    pub fn pop(&mut self) -> Option<T> {
        let last = self.len.checked_sub(1)?;
        let value = self.chunks[last >> CHUNK_BITS].pop();
        debug_assert!(value.is_some(), "chunks hold exactly the first len elements");
        self.len = last;
        value
    }

    /// The last element.
    #[must_use]
    pub fn last(&self) -> Option<&T> {
        self.get(self.len.checked_sub(1)?)
    }

    /// The element at `index`.
    #[must_use]
    pub fn get(&self, index: usize) -> Option<&T> {
        if index < self.len {
            Some(&self.chunks[index >> CHUNK_BITS][index & (CHUNK - 1)])
        } else {
            None
        }
    }

    /// Removes every element and keeps every chunk allocated.
    pub fn clear(&mut self) {
        self.chunks.iter_mut().for_each(Vec::clear);
        self.len = 0;
    }

    /// The index of the first element for which `pred` is false, the list being
    /// partitioned by it (all true, then all false), as [`slice::partition_point`].
    pub fn partition_point(&self, mut pred: impl FnMut(&T) -> bool) -> usize {
        // The full chunks whose last element still satisfies `pred` come first.
        let used = &self.chunks[..self.len.div_ceil(CHUNK)];
        let chunk = used.partition_point(|c| c.last().is_some_and(&mut pred));
        used.get(chunk).map_or(self.len, |c| (chunk << CHUNK_BITS) + c.partition_point(pred))
    }

    /// The elements from `start` on, in order.
    ///
    /// # Panics
    /// If `start` is past the end.
    pub fn iter_from(&self, start: usize) -> impl Iterator<Item = &T> {
        assert!(start <= self.len, "start {start} past the end {}", self.len);
        let first = start >> CHUNK_BITS; // at most len.div_ceil(CHUNK)
        let used = &self.chunks[first..self.len.div_ceil(CHUNK)];
        let skip = start & (CHUNK - 1);
        used.iter().enumerate().flat_map(move |(i, c)| &c[if i == 0 { skip } else { 0 }..])
    }

    /// Every element, in order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.iter_from(0)
    }
}

impl<T> Index<usize> for ChunkedVec<T> {
    type Output = T;

    /// # Panics
    /// If `index` is out of bounds: chunks hold exactly the first `len` elements, so the
    /// chunk's own bounds check is the list's.
    fn index(&self, index: usize) -> &T {
        &self.chunks[index >> CHUNK_BITS][index & (CHUNK - 1)]
    }
}

impl<T> IndexMut<usize> for ChunkedVec<T> {
    fn index_mut(&mut self, index: usize) -> &mut T {
        &mut self.chunks[index >> CHUNK_BITS][index & (CHUNK - 1)]
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    enum Step {
        Push,
        Pop,
        Clear,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![20 => Just(Step::Push), 4 => Just(Step::Pop), 1 => Just(Step::Clear)]
    }

    /// Checks every read of `list` against the `Vec` `model`.
    fn same(list: &ChunkedVec<u64>, model: &[u64]) {
        assert_eq!(list.len(), model.len());
        assert_eq!(list.is_empty(), model.is_empty());
        assert_eq!(list.last(), model.last());
        assert!(list.iter().eq(model.iter()));
        for start in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, model.len() / 2, model.len()] {
            if start <= model.len() {
                assert!(list.iter_from(start).eq(model[start..].iter()), "from {start}");
            }
        }
        for index in [0, CHUNK - 1, CHUNK, model.len().saturating_sub(1), model.len()] {
            assert_eq!(list.get(index), model.get(index), "at {index}");
        }
        // Values ascend (pushed as a counter), so every threshold partitions them.
        for bound in [0, 1, CHUNK as u64, model.len() as u64 / 3, u64::MAX] {
            let expected = model.partition_point(|&v| v < bound);
            assert_eq!(list.partition_point(|&v| v < bound), expected, "below {bound}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Pushes in runs (to cross chunk boundaries), pops and clears: every read agrees
        /// with a `Vec` doing the same.
        #[test]
        fn reads_agree_with_a_vec(steps in prop::collection::vec((step(), 1..3000usize), 1..40)) {
            let (mut list, mut model, mut next) = (ChunkedVec::default(), Vec::new(), 0u64);
            for (step, count) in steps {
                match step {
                    Step::Push => for _ in 0..count {
                        list.push(next);
                        model.push(next);
                        next += 1;
                    },
                    Step::Pop => for _ in 0..count {
                        prop_assert_eq!(list.pop(), model.pop());
                    },
                    Step::Clear => {
                        list.clear();
                        model.clear();
                    }
                }
                same(&list, &model);
            }
        }
    }

    #[test]
    fn growing_past_the_first_chunk_moves_nothing() {
        let mut list = ChunkedVec::default();
        (0..CHUNK as u64).for_each(|v| list.push(v));
        let first: *const u64 = &list[0];
        for v in CHUNK as u64..(4 * CHUNK as u64) {
            list.push(v);
        }
        assert!(std::ptr::eq(first, &list[0]), "the first element stayed where it was");
        assert!(list.chunks.iter().all(|c| c.capacity() == CHUNK), "no chunk grew past CHUNK");
        // Popping back across a chunk boundary and pushing again reuses the chunk.
        let boundary: *const u64 = &list[2 * CHUNK];
        while list.len() > 2 * CHUNK - 5 {
            list.pop();
        }
        while list.len() < 3 * CHUNK {
            list.push(7);
        }
        assert!(std::ptr::eq(boundary, &list[2 * CHUNK]));
        assert_eq!(list[2 * CHUNK - 6], 2 * CHUNK as u64 - 6);
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn indexing_past_the_end_panics() {
        let mut list = ChunkedVec::default();
        (0..=CHUNK).for_each(|_| list.push(1u8));
        list.pop();
        // The second chunk is allocated but empty: its bounds check refuses.
        let _ = list[CHUNK];
    }
}
