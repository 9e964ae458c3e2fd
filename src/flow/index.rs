//! The native flow table's index: from a flow's 32-bit key hash to its slot.
//!
//! Open addressing with linear probing over one array of 8-byte entries (hash, slot), at
//! most half full, with backward-shift deletion (no tombstones, so probe runs stay short
//! however many flows come and go). Unlike a general-purpose hash table it lets the caller
//! compute where a hash's entries lie before probing: the flow stage prefetches that cache
//! line for a packet well ahead, probes it (now cached) for a nearer packet to prefetch the
//! flow, and reaches its own packet with both loaded. With a general-purpose table the
//! look-ahead probe itself waited on two cache misses per packet (its control bytes and the
//! entry), about 8% of the flow stage.
//!
//! Hashes are already mixed (`flow_hash`); their low bits pick the home position. Keys are
//! not stored: the caller compares keys in its slots.

use netfm_tokenizer::hint::prefetch_bytes;

/// An empty position (no slot index reaches `u32::MAX`: slots are bounded by memory).
const EMPTY: u64 = u64::MAX;
/// Positions of a new index.
const MIN_CAPACITY: usize = 16;

fn pack(hash: u32, slot: u32) -> u64 {
    u64::from(hash) << 32 | u64::from(slot)
}

fn entry_hash(e: u64) -> u32 {
    (e >> 32) as u32
}

fn entry_slot(e: u64) -> u32 {
    e as u32
}

/// Hash -> slot index (several slots may share a hash; see the module docs).
pub(crate) struct FlowIndex {
    entries: Vec<u64>,
    /// `entries.len() - 1` (a power of two minus one).
    mask: usize,
    len: usize,
}

impl FlowIndex {
    /// An index that holds `n` entries before it first grows.
    pub(crate) fn with_capacity(n: usize) -> Self {
        let positions = n
            .saturating_mul(2)
            .max(MIN_CAPACITY)
            .checked_next_power_of_two()
            .unwrap_or(1 << (usize::BITS - 1));
        FlowIndex {
            entries: vec![EMPTY; positions],
            mask: positions - 1,
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn home(&self, hash: u32) -> usize {
        hash as usize & self.mask
    }

    /// Starts loading the cache line where `hash`'s entries begin.
    #[inline]
    pub(crate) fn prefetch(&self, hash: u32) {
        prefetch_bytes(
            self.entries.as_ptr().wrapping_add(self.home(hash)).cast(),
            1,
        );
    }

    /// The first slot with this hash that `matches`, in probe order.
    #[inline]
    pub(crate) fn find(&self, hash: u32, mut matches: impl FnMut(u32) -> bool) -> Option<u32> {
        let mut i = self.home(hash);
        loop {
            let e = self.entries[i];
            if e == EMPTY {
                return None;
            }
            if entry_hash(e) == hash && matches(entry_slot(e)) {
                return Some(entry_slot(e));
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Adds `slot` under `hash` (the caller guarantees the pair is not present).
    pub(crate) fn insert(&mut self, hash: u32, slot: u32) {
        debug_assert!(slot != u32::MAX);
        if (self.len + 1) * 2 > self.entries.len() {
            self.grow();
        }
        self.place(pack(hash, slot));
        self.len += 1;
    }

    fn place(&mut self, e: u64) {
        let mut i = self.home(entry_hash(e));
        while self.entries[i] != EMPTY {
            i = (i + 1) & self.mask;
        }
        self.entries[i] = e;
    }

    fn grow(&mut self) {
        let positions = self.entries.len() * 2;
        let old = std::mem::replace(&mut self.entries, vec![EMPTY; positions]);
        self.mask = positions - 1;
        for e in old {
            if e != EMPTY {
                self.place(e);
            }
        }
    }

    /// Removes the entry (`hash`, `slot`); `false` if there is none.
    pub(crate) fn remove(&mut self, hash: u32, slot: u32) -> bool {
        let target = pack(hash, slot);
        let mut i = self.home(hash);
        loop {
            let e = self.entries[i];
            if e == EMPTY {
                return false;
            }
            if e == target {
                break;
            }
            i = (i + 1) & self.mask;
        }
        // Backward shift: later entries of the run move into the hole unless that would put
        // them before their home position.
        let mut hole = i;
        let mut j = (i + 1) & self.mask;
        loop {
            let e = self.entries[j];
            if e == EMPTY {
                break;
            }
            let home = self.home(entry_hash(e));
            if (j.wrapping_sub(home) & self.mask) >= (j.wrapping_sub(hole) & self.mask) {
                self.entries[hole] = e;
                hole = j;
            }
            j = (j + 1) & self.mask;
        }
        self.entries[hole] = EMPTY;
        self.len -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Every live pair is found, no removed one is, and the counts agree.
    fn check(index: &FlowIndex, live: &HashSet<(u32, u32)>) {
        assert_eq!(index.len(), live.len());
        for &(h, s) in live {
            assert_eq!(index.find(h, |x| x == s), Some(s), "({h}, {s})");
        }
        let stored: HashSet<(u32, u32)> = index
            .entries
            .iter()
            .filter(|&&e| e != EMPTY)
            .map(|&e| (entry_hash(e), entry_slot(e)))
            .collect();
        assert_eq!(&stored, live);
    }

    #[test]
    fn random_inserts_and_removes_match_a_set() {
        // Few distinct hashes and a small index: long runs, shared hashes, wrap-around.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state = crate::flow::mix64(state.wrapping_add(0x9e37_79b9_7f4a_7c15));
            state
        };
        for hashes in [7u64, 64, 1 << 32] {
            let mut index = FlowIndex::with_capacity(4);
            let mut live: HashSet<(u32, u32)> = HashSet::new();
            let mut free: Vec<u32> = Vec::new();
            let mut slots = 0u32;
            for step in 0..20_000 {
                let r = next();
                if r % 5 < 3 || live.is_empty() {
                    let s = free.pop().unwrap_or_else(|| {
                        slots += 1;
                        slots - 1
                    });
                    // Home positions crowd near the array's end now and then (wrap-around).
                    let h = ((r >> 8) % hashes) as u32 | if r & 1 == 0 { 0x0000_000f } else { 0 };
                    index.insert(h, s);
                    live.insert((h, s));
                } else {
                    let k = (r >> 16) as usize % live.len();
                    let &(h, s) = live.iter().nth(k).unwrap();
                    assert!(index.remove(h, s));
                    assert!(!index.remove(h, s));
                    live.remove(&(h, s));
                    free.push(s);
                }
                if step % 997 == 0 {
                    check(&index, &live);
                }
            }
            check(&index, &live);
            for (h, s) in live.clone() {
                assert!(index.remove(h, s));
                live.remove(&(h, s));
            }
            check(&index, &live);
            assert!(index.is_empty());
        }
    }

    #[test]
    fn find_takes_the_first_match_and_misses_cleanly() {
        let mut index = FlowIndex::with_capacity(2);
        assert_eq!(index.find(5, |_| true), None);
        index.insert(5, 1);
        index.insert(5, 2);
        index.insert(21, 3); // same home as 5 in a 16-position index
        assert_eq!(index.find(5, |_| true), Some(1));
        assert_eq!(index.find(5, |s| s == 2), Some(2));
        assert_eq!(index.find(21, |_| true), Some(3));
        assert_eq!(index.find(5, |s| s == 3), None);
        assert_eq!(index.find(6, |_| true), None);
        assert!(index.remove(5, 1));
        assert_eq!(index.find(5, |_| true), Some(2));
        assert_eq!(index.find(21, |_| true), Some(3));
    }

    #[test]
    fn stays_at_most_half_full() {
        let mut index = FlowIndex::with_capacity(0);
        for s in 0..10_000u32 {
            index.insert(crate::flow::mix64(u64::from(s)) as u32, s);
            assert!(index.len() * 2 <= index.entries.len());
        }
        assert_eq!(index.entries.len(), 32_768);
    }
}
