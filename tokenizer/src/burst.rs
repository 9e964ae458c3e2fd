//! Bursts and the per-flow streaming accumulator: packets in, netFound's flow layout out.
//!
//! netFound (`pre_process_src/Tokenize.py`) works on a whole flow file at once:
//!
//! 1. stable sort of the packets by timestamp; `flow_duration` = (max - min) over ALL
//!    packets, `int(ns / 1000)` on a float64 (microseconds, truncated);
//! 2. per direction, independently, a new burst starts when the gap to the previous packet
//!    *of the same direction* is strictly greater than 10 ms (packets of the other
//!    direction in between do not end a burst, so bursts of both directions can overlap);
//! 3. bursts of both directions are ordered by their first packet's time, stably with the
//!    forward bursts first on ties;
//! 4. the first 12 bursts are kept, and of each the first 6 packets (in sorted order);
//! 5. per burst: `bytes` = sum of the IP total lengths of the kept packets, `counts` = kept
//!    packets, `iats` = first-packet time minus the first-packet time of the previous burst
//!    of the same direction (0 for the first burst of each direction), in ns, then
//!    `int(round(ns / 1000))` on a float64 (microseconds, round half to even).
//!
//! [`FlowTokenizer`] computes exactly that while streaming, with memory bounded by
//! `max_bursts x max_packets_per_burst` packets whatever the flow's length: a packet is
//! turned into tokens when it arrives and stored only while it can still be part of the
//! output. Once `max_bursts` bursts have started strictly before a new burst, that burst
//! (and everything after it on its side) provably cannot be kept and is only tracked by its
//! start time; a packet that continues a burst already holding `max_packets_per_burst`
//! packets is only counted.
//!
//! Late packets (timestamp lower than an earlier packet of the same side, e.g. a capture
//! with reordered timestamps) are placed exactly where netFound's sort would put them as
//! long as the information kept allows it. The one thing that cannot be undone is a late
//! packet that joins two bursts together (or extends a burst into the discarded region)
//! after bursts were discarded: a discarded burst could then move back into the first
//! `max_bursts`, but its packets are gone. Such packets are counted in
//! [`TokenizedFlow::inexact_late_packets`] (and [`FlowTokenizer::inexact_late_packets`]),
//! so the pipeline can report how many flows may differ from netFound's output; the
//! flow is still emitted, best effort. Flows whose timestamps never go backwards are always
//! exact.
//!
//! Directions are pushed as a *side* (`bool`); which side is "forward" may be decided at
//! [`FlowTokenizer::finish_with_forward_side`], because netFound's direction rule depends
//! on all of a flow's packets (see [`crate::direction`]).
//!
//! Pure: no IO, no clocks, no panics on any input.

use crate::fields::{PacketFields, TokenLayout, MAX_TOKENS_PER_PACKET};
use crate::hint::prefetch_bytes;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

/// netFound's `flow_size_limit` (bursts kept per flow).
pub const NETFOUND_MAX_BURSTS: usize = 12;
/// netFound's `burst_size_limit` (packets kept per burst).
pub const NETFOUND_MAX_PACKETS_PER_BURST: usize = 6;
/// netFound's `burst_split_border`: a same-direction gap strictly greater than this starts
/// a new burst.
pub const NETFOUND_BURST_GAP_NS: u64 = 10_000_000;

/// Burst limits and the token layout. `Default` is netFound's configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BurstConfig {
    /// Bursts kept per flow (netFound: 12).
    pub max_bursts: usize,
    /// Packets kept per burst (netFound: 6).
    pub max_packets_per_burst: usize,
    /// A same-direction gap strictly greater than this starts a new burst (netFound: 10 ms).
    pub burst_gap_ns: u64,
    /// Which optional field groups become tokens.
    pub layout: TokenLayout,
}

impl Default for BurstConfig {
    fn default() -> Self {
        BurstConfig {
            max_bursts: NETFOUND_MAX_BURSTS,
            max_packets_per_burst: NETFOUND_MAX_PACKETS_PER_BURST,
            burst_gap_ns: NETFOUND_BURST_GAP_NS,
            layout: TokenLayout::default(),
        }
    }
}

/// One kept burst of a tokenized flow. Its tokens are in [`TokenizedFlow::tokens`], after
/// those of the bursts before it ([`TokenizedFlow::bursts_with_tokens`] pairs them up).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Burst {
    /// How many raw 16-bit tokens the kept packets of this burst have, in time order.
    pub token_len: u32,
    /// True for the forward direction.
    pub forward: bool,
    /// Sum of the IP total lengths of the kept packets.
    pub bytes: u32,
    /// Number of kept packets.
    pub count: u32,
    /// Microseconds since the previous burst of the same direction started (0 for the
    /// first burst of each direction), rounded half to even as netFound does.
    pub iat_us: u64,
    /// Timestamp of the burst's first packet, nanoseconds (as pushed).
    pub start_ns: u64,
}

/// A flow in netFound's layout: what one row of netFound's Arrow output holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenizedFlow {
    /// (last - first packet time) over all packets, microseconds, truncated.
    pub flow_duration_us: u64,
    /// IP protocol the tokens were laid out for (6, 17, 1).
    pub protocol: u8,
    /// The tokens of all kept bursts, burst after burst (one allocation per flow).
    pub tokens: Vec<u16>,
    /// The kept bursts, ordered by first-packet time (forward first on ties).
    pub bursts: Vec<Burst>,
    /// All packets pushed, kept or not.
    pub packets: u64,
    /// Late packets that could not be placed exactly (see the module docs); 0 for every
    /// flow whose timestamps never go backwards.
    pub inexact_late_packets: u64,
}

impl TokenizedFlow {
    /// Total tokens over all kept bursts.
    pub fn token_count(&self) -> usize {
        self.tokens.len()
    }

    /// Each kept burst with its tokens. (Should the bursts' `token_len` not add up to
    /// `tokens`, a burst gets what is left, possibly nothing.)
    pub fn bursts_with_tokens(&self) -> impl Iterator<Item = (&Burst, &[u16])> + '_ {
        let mut at = 0usize;
        self.bursts.iter().map(move |b| {
            let start = at.min(self.tokens.len());
            let end = start
                .saturating_add(b.token_len as usize)
                .min(self.tokens.len());
            at = end;
            (b, &self.tokens[start..end])
        })
    }

    /// Appends a burst with these tokens (its `token_len` is set from them).
    pub fn push_burst(&mut self, burst: Burst, tokens: &[u16]) {
        self.tokens.extend_from_slice(tokens);
        self.bursts.push(Burst {
            token_len: u32::try_from(tokens.len()).unwrap_or(u32::MAX),
            ..burst
        });
    }
}

/// Arena words kept inside the tokenizer (see [`FlowTokenizer`]).
const ARENA_INLINE: usize = 46;

/// Words before a kept packet's tokens in its arena record: the timestamp (4 words) and the
/// IP total length (1 word).
const HEADER_WORDS: usize = 5;

/// A burst that may still be among the first `max_bursts`. Its kept packets are records in a
/// region of the flow's arena (see [`FlowTokenizer`]).
#[derive(Clone, Copy, Debug)]
struct StoredBurst {
    first_ts: u64,
    /// Time of the burst's last packet, counting packets that were not kept.
    last_ts: u64,
    /// Arena offset (words) of the burst's region.
    start: usize,
    /// Kept packets (at most `max_packets_per_burst`): the region's first records, in
    /// sorted order.
    kept: u32,
    /// Records the region has room for.
    cap: u32,
    side: bool,
}

#[derive(Clone, Copy, Debug, Default)]
struct SideState {
    /// Highest timestamp seen on this side.
    last_ts: Option<u64>,
    /// Start of this side's earliest discarded burst: every packet of this side at or after
    /// it is known not to matter.
    discarded_from: Option<u64>,
    /// Index into `bursts` of this side's latest stored burst.
    current: Option<u32>,
}

/// Streaming per-flow accumulator. See the module docs.
///
/// The kept packets of all stored bursts live in one arena per flow (one allocation per
/// flow instead of one per burst): each burst owns a region of `cap` records of
/// `HEADER_WORDS + tokens_per_packet` words, kept packets first, in sorted order. A region
/// that must grow and is not at the arena's end moves there; the words it leaves, and those
/// of dropped or merged bursts, are counted as garbage and compacted away once they
/// outweigh the live words, so the arena stays within a small multiple of what the stored
/// bursts hold. The first two stored bursts and the first 46 arena words (two records of a
/// TCP packet with payload tokens) live inside the tokenizer itself: most flows of a busy
/// capture never allocate, and a packet's flow, prefetched as a whole, brings its latest
/// bursts along instead of sending the CPU to two more cold heap blocks.
#[derive(Clone, Debug)]
pub struct FlowTokenizer {
    cfg: BurstConfig,
    bursts: SmallVec<[StoredBurst; 2]>,
    arena: SmallVec<[u16; ARENA_INLINE]>,
    /// Arena words no stored burst's region covers.
    garbage: usize,
    sides: [SideState; 2],
    min_ts: u64,
    max_ts: u64,
    packets: u64,
    inexact: u64,
    tokens_per_packet: u16,
    protocol: u8,
}

fn side_index(side: bool) -> usize {
    usize::from(side)
}

/// A record's timestamp.
fn record_ts(rec: &[u16]) -> u64 {
    u64::from(rec[0]) | u64::from(rec[1]) << 16 | u64::from(rec[2]) << 32 | u64::from(rec[3]) << 48
}

impl FlowTokenizer {
    /// A tokenizer for one flow of the given IP protocol (6, 17 or 1; anything else gets the
    /// IP fields and payload only).
    pub fn new(cfg: &BurstConfig, protocol: u8) -> Self {
        FlowTokenizer {
            cfg: *cfg,
            bursts: SmallVec::new(),
            arena: SmallVec::new(),
            garbage: 0,
            sides: [SideState::default(); 2],
            min_ts: u64::MAX,
            max_ts: 0,
            packets: 0,
            inexact: 0,
            // At most 38 (TCP with options and payload).
            tokens_per_packet: cfg.layout.tokens_per_packet(protocol) as u16,
            protocol,
        }
    }

    /// IP protocol this flow is laid out for.
    pub fn protocol(&self) -> u8 {
        self.protocol
    }

    /// Packets pushed so far.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// The earliest timestamp pushed so far (None before the first packet).
    pub fn earliest_ts(&self) -> Option<u64> {
        (self.packets > 0).then_some(self.min_ts)
    }

    /// Late packets so far that could not be placed exactly (see the module docs).
    pub fn inexact_late_packets(&self) -> u64 {
        self.inexact
    }

    /// Asks the CPU to start loading this flow's bursts and kept packets (a flow about to be
    /// finished is usually long out of cache). No effect where unsupported.
    pub fn prefetch(&self) {
        prefetch_bytes(
            self.bursts.as_ptr().cast(),
            std::mem::size_of_val(self.bursts.as_slice()),
        );
        prefetch_bytes(
            self.arena.as_ptr().cast(),
            std::mem::size_of_val(self.arena.as_slice()),
        );
    }

    /// Words of one kept packet's record.
    fn stride(&self) -> usize {
        HEADER_WORDS + usize::from(self.tokens_per_packet)
    }

    /// Adds one packet. `side` is the packet's direction as the caller knows it (`true` =
    /// forward unless [`finish_with_forward_side`](Self::finish_with_forward_side) says
    /// otherwise); TCP seq/ack in `fields` must already be relative. Packets should come in
    /// capture order: equal timestamps keep their arrival order, as in netFound's stable
    /// sort.
    ///
    /// A packet whose transport (`fields.l4`) is not the flow's protocol would break the
    /// fixed token width of the flow's packets: it is counted in
    /// [`TokenizedFlow::packets`] and the duration but not tokenized (flow stages never mix
    /// protocols in one flow).
    pub fn push(&mut self, ts_ns: u64, side: bool, fields: &PacketFields) {
        self.packets += 1;
        self.min_ts = self.min_ts.min(ts_ns);
        self.max_ts = self.max_ts.max(ts_ns);
        if self.cfg.layout.tokens_per_packet(fields.l4.protocol())
            != usize::from(self.tokens_per_packet)
        {
            return;
        }
        let s = side_index(side);
        match self.sides[s].last_ts {
            None => {
                self.sides[s].last_ts = Some(ts_ns);
                self.start_burst(ts_ns, side, fields);
            }
            Some(last) if ts_ns >= last => {
                self.sides[s].last_ts = Some(ts_ns);
                if ts_ns - last > self.cfg.burst_gap_ns {
                    self.start_burst(ts_ns, side, fields);
                } else {
                    self.continue_burst(ts_ns, side, last, fields);
                }
            }
            Some(_) => self.late_packet(ts_ns, side, fields),
        }
    }

    /// Writes a kept packet's record at arena offset `at`.
    fn write_record(&mut self, at: usize, ts: u64, fields: &PacketFields) {
        let mut tokens = [0u16; MAX_TOKENS_PER_PACKET];
        let n = fields.write_tokens(self.cfg.layout, &mut tokens);
        let stride = self.stride();
        let rec = &mut self.arena[at..at + stride];
        rec[0] = ts as u16;
        rec[1] = (ts >> 16) as u16;
        rec[2] = (ts >> 32) as u16;
        rec[3] = (ts >> 48) as u16;
        rec[4] = fields.total_len;
        let n = n.min(stride - HEADER_WORDS);
        rec[HEADER_WORDS..HEADER_WORDS + n].copy_from_slice(&tokens[..n]);
    }

    /// Makes burst `idx`'s region hold at least `need` records (at most
    /// `max_packets_per_burst` are ever needed): grows it in place at the arena's end, else
    /// moves it there.
    fn reserve_records(&mut self, idx: usize, need: u32) {
        let b = self.bursts[idx];
        if need <= b.cap {
            return;
        }
        let stride = self.stride();
        let max = u32::try_from(self.cfg.max_packets_per_burst).unwrap_or(u32::MAX);
        // Doubling, so a long burst moves at most a few times.
        let cap = need.max(b.cap.saturating_mul(2)).min(max.max(need));
        let old_words = b.cap as usize * stride;
        if b.start + old_words == self.arena.len() {
            self.arena.resize(b.start + cap as usize * stride, 0);
        } else {
            self.compact_if_wasteful();
            let b = self.bursts[idx];
            let start = self.arena.len();
            self.arena.reserve(cap as usize * stride);
            self.arena.resize(start + cap as usize * stride, 0);
            self.arena
                .copy_within(b.start..b.start + b.kept as usize * stride, start);
            self.garbage += b.cap as usize * stride;
            self.bursts[idx].start = start;
        }
        self.bursts[idx].cap = cap;
    }

    /// Rewrites the arena without garbage once garbage outweighs the live words: amortized
    /// O(1) per word ever written, and the arena stays within about twice the live words.
    fn compact_if_wasteful(&mut self) {
        if self.garbage < 64 || self.garbage * 2 < self.arena.len() {
            return;
        }
        let stride = self.stride();
        let live = self.arena.len() - self.garbage;
        let mut arena = SmallVec::with_capacity(live);
        for b in &mut self.bursts {
            let words = b.cap as usize * stride;
            let start = arena.len();
            arena.extend_from_slice(&self.arena[b.start..b.start + words]);
            b.start = start;
        }
        self.arena = arena;
        self.garbage = 0;
    }

    /// Drops stored burst `idx` (its region becomes garbage).
    fn drop_burst(&mut self, idx: usize) -> StoredBurst {
        let b = self.bursts.remove(idx);
        self.garbage += b.cap as usize * self.stride();
        b
    }

    /// In-order packet that continues the side's latest burst.
    fn continue_burst(&mut self, at: u64, side: bool, prev_last: u64, fields: &PacketFields) {
        let st = self.sides[side_index(side)];
        if st.discarded_from.is_some_and(|d| prev_last >= d) {
            return; // the latest burst of this side is a discarded one
        }
        let Some(idx) = st.current else { return };
        let idx = idx as usize;
        let max = self.cfg.max_packets_per_burst;
        let b = &mut self.bursts[idx];
        b.last_ts = b.last_ts.max(at);
        let kept = b.kept;
        if (kept as usize) < max {
            self.reserve_records(idx, kept + 1);
            let b = self.bursts[idx];
            self.write_record(b.start + kept as usize * self.stride(), at, fields);
            self.bursts[idx].kept = kept + 1;
        }
    }

    /// Number of stored bursts that start strictly before `ts`.
    fn started_before(&self, ts: u64) -> usize {
        self.bursts.iter().filter(|b| b.first_ts < ts).count()
    }

    /// In-order packet that starts a new burst on its side.
    fn start_burst(&mut self, at: u64, side: bool, fields: &PacketFields) {
        let s = side_index(side);
        if self.sides[s].discarded_from.is_some() {
            // In order and after this side's discarded region: discarded too.
            return;
        }
        // With fewer stored bursts than the limit, fewer start before `at`: no need to count.
        let full = self.bursts.len() >= self.cfg.max_bursts
            && self.started_before(at) >= self.cfg.max_bursts;
        if self.cfg.max_packets_per_burst == 0 || full {
            self.sides[s].discarded_from = Some(at);
            return;
        }
        self.store_new_burst(at, side, fields, true);
    }

    /// Stores a new burst. `latest`: it is the newest burst of its side (in-order packet),
    /// which lets the common case skip the full prune.
    fn store_new_burst(&mut self, at: u64, side: bool, fields: &PacketFields, latest: bool) {
        if self.bursts.len() == self.bursts.capacity() && !self.bursts.spilled() {
            self.bursts.reserve_exact(2);
        }
        if self.arena.is_empty() && !self.arena.spilled() && ARENA_INLINE < 2 * self.stride() {
            // Room for two records: most flows of a busy capture have one packet per burst
            // and a burst per direction.
            self.arena.reserve_exact(2 * self.stride());
        }
        self.compact_if_wasteful();
        // Sized for one record: most bursts of a busy capture hold one packet.
        let start = self.arena.len();
        self.arena.resize(start + self.stride(), 0);
        self.write_record(start, at, fields);
        self.bursts.push(StoredBurst {
            first_ts: at,
            last_ts: at,
            start,
            kept: 1,
            cap: 1,
            side,
        });
        if latest && self.bursts.len() <= self.cfg.max_bursts {
            // Nothing can have max_bursts stored bursts before it yet.
            self.sides[side_index(side)].current = Some((self.bursts.len() - 1) as u32);
        } else {
            self.prune();
        }
    }

    /// Drops stored bursts that have `max_bursts` stored bursts strictly before them: they
    /// can never be kept (only a merge of earlier bursts could change that, which is
    /// detected as inexact). Refreshes the per-side `current` indices.
    fn prune(&mut self) {
        let max = self.cfg.max_bursts;
        if self.bursts.len() > max {
            let firsts: Vec<u64> = self.bursts.iter().map(|b| b.first_ts).collect();
            let mut i = 0;
            while i < self.bursts.len() {
                let first = self.bursts[i].first_ts;
                let before = firsts.iter().filter(|&&f| f < first).count();
                if before >= max {
                    let b = self.drop_burst(i);
                    let d = &mut self.sides[side_index(b.side)].discarded_from;
                    *d = Some(d.map_or(b.first_ts, |d| d.min(b.first_ts)));
                } else {
                    i += 1;
                }
            }
        }
        self.refresh_current();
    }

    fn refresh_current(&mut self) {
        for side in [false, true] {
            let cur = self
                .bursts
                .iter()
                .enumerate()
                .filter(|(_, b)| b.side == side)
                .max_by_key(|(_, b)| b.first_ts)
                .map(|(i, _)| i as u32);
            self.sides[side_index(side)].current = cur;
        }
    }

    /// Are bursts discarded that a lost burst could let back in? True when some discarded
    /// burst no longer has `max_bursts` stored bursts strictly before it.
    fn discarded_could_return(&self) -> bool {
        let cut = self.sides.iter().filter_map(|s| s.discarded_from).min();
        cut.is_some_and(|c| self.started_before(c) < self.cfg.max_bursts)
    }

    /// Inserts a packet into a stored burst at its sorted position, keeping at most
    /// `max_packets_per_burst`.
    fn insert_into(&mut self, idx: usize, at: u64, fields: &PacketFields) {
        let max = self.cfg.max_packets_per_burst;
        let stride = self.stride();
        let b = &mut self.bursts[idx];
        b.first_ts = b.first_ts.min(at);
        b.last_ts = b.last_ts.max(at);
        let b = *b;
        let records = &self.arena[b.start..b.start + b.kept as usize * stride];
        let pos = records
            .chunks_exact(stride)
            .take_while(|r| record_ts(r) <= at)
            .count();
        if pos >= max {
            return;
        }
        // Room for one more record unless the burst is full, in which case its last record
        // falls off the end.
        let kept = (b.kept as usize + 1).min(max) as u32;
        self.reserve_records(idx, kept);
        let start = self.bursts[idx].start;
        let from = start + pos * stride;
        let moved_end = start + (kept as usize - 1) * stride;
        self.arena.copy_within(from..moved_end, from + stride);
        self.write_record(from, at, fields);
        self.bursts[idx].kept = kept;
    }

    /// A packet older than an earlier packet of its side. See the module docs for the cases.
    fn late_packet(&mut self, at: u64, side: bool, fields: &PacketFields) {
        let s = side_index(side);
        let gap = self.cfg.burst_gap_ns;
        let discarded_from = self.sides[s].discarded_from;
        if discarded_from.is_some_and(|d| at >= d) {
            return; // inside this side's discarded region: cannot matter
        }
        // This side's stored bursts around `at` (all of them start before the discarded
        // region).
        let mut containing = None;
        let mut before: Option<usize> = None; // latest burst ending before ts
        let mut after: Option<usize> = None; // earliest burst starting after ts
        for (i, b) in self.bursts.iter().enumerate() {
            if b.side != side {
                continue;
            }
            if b.first_ts <= at && at <= b.last_ts {
                containing = Some(i);
                break;
            }
            if b.last_ts < at && before.is_none_or(|j| self.bursts[j].last_ts < b.last_ts) {
                before = Some(i);
            }
            if b.first_ts > at && after.is_none_or(|j| self.bursts[j].first_ts > b.first_ts) {
                after = Some(i);
            }
        }
        if let Some(i) = containing {
            // Inside a burst's span: gaps only shrink, the burst structure is unchanged.
            self.insert_into(i, at, fields);
            return;
        }
        let join_before = before.is_some_and(|i| at - self.bursts[i].last_ts <= gap);
        enum Next {
            Stored(usize),
            Discarded(u64),
            Nothing,
        }
        let next = match (after, discarded_from) {
            (Some(i), _) => Next::Stored(i),
            (None, Some(d)) => Next::Discarded(d),
            (None, None) => Next::Nothing,
        };
        let join_after = match next {
            Next::Stored(i) => self.bursts[i].first_ts - at <= gap,
            Next::Discarded(d) => d - at <= gap,
            Next::Nothing => false,
        };
        match (join_before, join_after, next) {
            (false, false, _) => {
                // A burst of its own.
                if self.cfg.max_packets_per_burst == 0
                    || self.started_before(at) >= self.cfg.max_bursts
                {
                    self.sides[s].discarded_from = Some(at);
                    self.prune();
                } else {
                    self.store_new_burst(at, side, fields, false);
                }
            }
            (true, false, _) => {
                if let Some(i) = before {
                    self.insert_into(i, at, fields);
                }
            }
            (false, true, Next::Stored(i)) => {
                // New first packet of the next burst: it starts earlier now.
                self.insert_into(i, at, fields);
                self.prune();
            }
            (false, true, _) => {
                // New first packet of the earliest discarded burst.
                if self.started_before(at) < self.cfg.max_bursts {
                    self.inexact += 1;
                }
                self.sides[s].discarded_from = Some(at);
                self.prune();
            }
            (true, true, Next::Stored(j)) => {
                // Bridges two stored bursts: they become one.
                if let Some(i) = before {
                    self.insert_into(i, at, fields);
                    let max = u32::try_from(self.cfg.max_packets_per_burst).unwrap_or(u32::MAX);
                    let (x, y) = (self.bursts[i], self.bursts[j]);
                    let room = max.saturating_sub(x.kept).min(y.kept);
                    // `y` is still stored while `x` grows, so a compaction keeps its records.
                    self.reserve_records(i, x.kept + room);
                    let (x, y) = (self.bursts[i], self.bursts[j]);
                    let stride = self.stride();
                    let records = y.start..y.start + room as usize * stride;
                    self.arena
                        .copy_within(records, x.start + x.kept as usize * stride);
                    self.bursts[i].kept = x.kept + room;
                    self.bursts[i].last_ts = x.last_ts.max(y.last_ts);
                    self.drop_burst(j);
                    if self.discarded_could_return() {
                        self.inexact += 1;
                    }
                    self.refresh_current();
                }
            }
            (true, true, _) => {
                // Bridges the last stored burst and the discarded region, whose packets are gone.
                self.inexact += 1;
                if let Some(i) = before {
                    self.insert_into(i, at, fields);
                }
            }
        }
    }

    /// Finishes the flow with pushed side `true` as forward.
    pub fn finish(self) -> TokenizedFlow {
        self.finish_with_forward_side(true)
    }

    /// Finishes the flow; packets pushed with `side == forward_side` are the forward
    /// direction. A flow with no packets has no bursts.
    pub fn finish_with_forward_side(mut self, forward_side: bool) -> TokenizedFlow {
        self.take_finished(forward_side)
    }

    /// [`finish_with_forward_side`](Self::finish_with_forward_side) without moving the
    /// tokenizer: its storage is taken and it is left with no packets or bursts (counters
    /// included), as after [`new`](Self::new).
    pub fn take_finished(&mut self, forward_side: bool) -> TokenizedFlow {
        let stride = self.stride();
        let (cfg, protocol) = (self.cfg, self.protocol);
        let mut bursts = std::mem::take(&mut self.bursts);
        let arena = std::mem::take(&mut self.arena);
        let (min_ts, max_ts, packets, inexact) =
            (self.min_ts, self.max_ts, self.packets, self.inexact);
        // Back to a new tokenizer's state (the storage was just taken), field by field: a
        // whole new tokenizer would be built aside and copied in, inline storage included.
        self.garbage = 0;
        self.sides = [SideState::default(); 2];
        self.min_ts = u64::MAX;
        self.max_ts = 0;
        self.packets = 0;
        self.inexact = 0;
        let flow_duration_us = if packets == 0 {
            0
        } else {
            netfound_us_truncated(max_ts - min_ts)
        };
        // Stable order of netFound: by first-packet time, forward bursts first on ties.
        bursts.sort_by_key(|b| (b.first_ts, b.side != forward_side));
        bursts.truncate(cfg.max_bursts);
        let mut prev_first: [Option<u64>; 2] = [None, None];
        let tpp = stride - HEADER_WORDS;
        let kept: usize = bursts.iter().map(|b| b.kept as usize).sum();
        let mut tokens = Vec::with_capacity(kept * tpp);
        let bursts = bursts
            .iter()
            .map(|b| {
                let s = side_index(b.side);
                let iat_us = prev_first[s].map_or(0, |p| netfound_us_rounded(b.first_ts - p));
                prev_first[s] = Some(b.first_ts);
                let records = &arena[b.start..b.start + b.kept as usize * stride];
                let mut bytes = 0u32;
                for r in records.chunks_exact(stride) {
                    bytes = bytes.saturating_add(u32::from(r[4]));
                    tokens.extend_from_slice(&r[HEADER_WORDS..]);
                }
                Burst {
                    token_len: b.kept.saturating_mul(tpp as u32),
                    forward: b.side == forward_side,
                    bytes,
                    count: b.kept,
                    iat_us,
                    start_ns: b.first_ts,
                }
            })
            .collect();
        TokenizedFlow {
            flow_duration_us,
            protocol,
            tokens,
            bursts,
            packets,
            inexact_late_packets: inexact,
        }
    }
}

/// `int(ns / 1000)` as netFound computes it: numpy float64 division, then truncation.
pub fn netfound_us_truncated(ns: u64) -> u64 {
    (ns as f64 / 1000.0) as u64
}

/// `int(round(ns / 1000))` as netFound computes it: numpy float64 division, then Python's
/// round (half to even).
pub fn netfound_us_rounded(ns: u64) -> u64 {
    (ns as f64 / 1000.0).round_ties_even() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fields::L4Fields;

    const MS: u64 = 1_000_000;

    fn udp(total_len: u16) -> PacketFields {
        PacketFields {
            ip_header_len: 20,
            tos: 0,
            total_len,
            ip_flags: 0,
            ttl: 64,
            l4: L4Fields::Udp {
                length: total_len.saturating_sub(20),
            },
            payload: [0; 12],
        }
    }

    /// A straightforward (unbounded, batch) transcription of Tokenize.py's algorithm, to
    /// check the streaming accumulator against.
    fn reference(
        cfg: &BurstConfig,
        pkts: &[(u64, bool, u16)],
        forward_side: bool,
    ) -> TokenizedFlow {
        let mut order: Vec<usize> = (0..pkts.len()).collect();
        order.sort_by_key(|&i| pkts[i].0); // stable
        let min = pkts.iter().map(|p| p.0).min().unwrap_or(0);
        let max = pkts.iter().map(|p| p.0).max().unwrap_or(0);
        // (first_ts, side, packet indices)
        let mut bursts: Vec<(u64, bool, Vec<usize>)> = Vec::new();
        for side in [forward_side, !forward_side] {
            let mut last: Option<u64> = None;
            for &i in order.iter().filter(|&&i| pkts[i].1 == side) {
                let ts = pkts[i].0;
                if last.is_none_or(|l| ts - l > cfg.burst_gap_ns) {
                    bursts.push((ts, side, Vec::new()));
                }
                if let Some(b) = bursts.last_mut() {
                    b.2.push(i);
                }
                last = Some(ts);
            }
        }
        bursts.sort_by_key(|b| b.0); // stable: forward side pushed first
        let mut prev: [Option<u64>; 2] = [None, None];
        let mut out = TokenizedFlow {
            flow_duration_us: if pkts.is_empty() {
                0
            } else {
                netfound_us_truncated(max - min)
            },
            protocol: 17,
            packets: pkts.len() as u64,
            ..TokenizedFlow::default()
        };
        for (first, side, idx) in bursts.into_iter() {
            let s = usize::from(side);
            let iat = prev[s].map_or(0, |p| netfound_us_rounded(first - p));
            prev[s] = Some(first);
            if out.bursts.len() >= cfg.max_bursts {
                continue;
            }
            let kept: Vec<usize> = idx.into_iter().take(cfg.max_packets_per_burst).collect();
            let mut tokens = Vec::new();
            for &i in &kept {
                udp(pkts[i].2).push_tokens(cfg.layout, &mut tokens);
            }
            let burst = Burst {
                token_len: 0,
                forward: side == forward_side,
                bytes: kept.iter().map(|&i| u32::from(pkts[i].2)).sum(),
                count: kept.len() as u32,
                iat_us: iat,
                start_ns: first,
            };
            out.push_burst(burst, &tokens);
        }
        out
    }

    fn stream(cfg: &BurstConfig, pkts: &[(u64, bool, u16)], forward_side: bool) -> TokenizedFlow {
        let mut t = FlowTokenizer::new(cfg, 17);
        for &(ts, side, len) in pkts {
            t.push(ts, side, &udp(len));
        }
        t.finish_with_forward_side(forward_side)
    }

    #[test]
    fn single_packet_flow() {
        let f = stream(&BurstConfig::default(), &[(5 * MS, true, 60)], true);
        assert_eq!(f.flow_duration_us, 0);
        assert_eq!(f.bursts.len(), 1);
        assert_eq!(
            (f.bursts[0].count, f.bursts[0].bytes, f.bursts[0].iat_us),
            (1, 60, 0)
        );
        assert_eq!(f.bursts[0].token_len, 12);
        assert_eq!(f.tokens.len(), 12);
    }

    #[test]
    fn gap_of_exactly_10ms_continues_the_burst() {
        let cfg = BurstConfig::default();
        let f = stream(
            &cfg,
            &[(0, true, 40), (10 * MS, true, 41), (20 * MS + 1, true, 42)],
            true,
        );
        assert_eq!(f.bursts.len(), 2);
        assert_eq!(f.bursts[0].count, 2);
        assert_eq!(f.bursts[1].iat_us, 20_000); // 20_000.001 us rounds to 20_000
    }

    #[test]
    fn other_direction_does_not_split_and_ties_put_forward_first() {
        let cfg = BurstConfig::default();
        // backward starts at the same time as forward: forward first.
        let pkts = [
            (0, false, 50),
            (0, true, 40),
            (5 * MS, false, 51),
            (9 * MS, true, 41),
        ];
        let f = stream(&cfg, &pkts, true);
        assert_eq!(
            f.bursts.iter().map(|b| b.forward).collect::<Vec<_>>(),
            vec![true, false]
        );
        assert_eq!(f, reference(&cfg, &pkts, true));
    }

    #[test]
    fn rounding_is_half_to_even() {
        assert_eq!(netfound_us_rounded(2_500), 2);
        assert_eq!(netfound_us_rounded(3_500), 4);
        assert_eq!(netfound_us_rounded(1_499), 1);
        assert_eq!(netfound_us_truncated(1_999), 1);
    }

    /// Most arena words a flow may hold: twice what full stored bursts need, plus the
    /// garbage allowance.
    fn arena_bound(cfg: &BurstConfig, t: &FlowTokenizer) -> usize {
        2 * (cfg.max_bursts + 1) * cfg.max_packets_per_burst * t.stride() + 64
    }

    #[test]
    fn late_packets_do_not_grow_the_arena() {
        // Bursts 20 ms apart on one side, then endless late packets that each open a burst
        // of their own between them (store, then prune), and packets that bridge bursts.
        let cfg = BurstConfig::default();
        let mut t = FlowTokenizer::new(&cfg, 17);
        for i in 0..40u64 {
            t.push(1_000 * MS + i * 20 * MS, true, &udp(100));
        }
        let mut max_len = 0;
        for i in 0..200_000u64 {
            let ts = (i % 997) * 3 * MS + (i % 7) * MS / 2;
            t.push(ts, i % 5 != 0, &udp(60 + (i % 40) as u16));
            max_len = max_len.max(t.arena.len());
        }
        assert!(max_len <= arena_bound(&cfg, &t), "{max_len}");
        let f = t.finish();
        assert!(f.bursts.len() <= cfg.max_bursts);
        for (b, tokens) in f.bursts_with_tokens() {
            assert_eq!(tokens.len(), b.count as usize * 12);
        }
        assert_eq!(
            f.tokens.len(),
            f.bursts.iter().map(|b| b.count as usize * 12).sum()
        );
    }

    #[test]
    fn limits_apply_and_memory_stays_bounded() {
        let cfg = BurstConfig::default();
        let mut t = FlowTokenizer::new(&cfg, 17);
        let n = 1_000_000u64;
        for i in 0..n {
            // 20 packets per burst 1 ms apart, then a 20 ms pause; both sides.
            let ts = (i / 20) * 40 * MS + (i % 20) * MS;
            t.push(ts, i % 3 != 0, &udp(100));
        }
        assert!(t.bursts.len() <= cfg.max_bursts + 1);
        assert!(t
            .bursts
            .iter()
            .all(|b| b.kept as usize <= cfg.max_packets_per_burst));
        assert!(t.arena.len() <= arena_bound(&cfg, &t));
        let f = t.finish();
        assert_eq!(f.packets, n);
        assert_eq!(f.bursts.len(), 12);
        assert!(f.bursts.iter().all(|b| b.count == 6 && b.bytes == 600));
    }

    /// Deterministic pseudo-random packet lists, in order and shuffled, against the batch
    /// reference.
    #[test]
    fn streaming_equals_reference() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move |m: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % m
        };
        let cfg = BurstConfig {
            max_bursts: 4,
            max_packets_per_burst: 3,
            ..BurstConfig::default()
        };
        let mut exact = 0;
        for round in 0..3000 {
            let n = 1 + rnd(40) as usize;
            let mut ts = 0u64;
            let mut pkts = Vec::new();
            for i in 0..n {
                ts += match rnd(4) {
                    0 => 0,
                    1 => rnd(3 * MS),
                    2 => 10 * MS,
                    _ => rnd(30 * MS),
                };
                pkts.push((ts, rnd(2) == 0, (i + 20) as u16));
            }
            let fwd = round % 2 == 0;
            assert_eq!(
                stream(&cfg, &pkts, fwd),
                reference(&cfg, &pkts, fwd),
                "in order: {pkts:?}"
            );
            // Local reordering of timestamps (arrival order changes): exact unless flagged.
            for i in 1..pkts.len() {
                if rnd(4) == 0 {
                    pkts.swap(i - 1, i);
                }
            }
            let got = stream(&cfg, &pkts, fwd);
            if got.inexact_late_packets == 0 {
                assert_eq!(got, reference(&cfg, &pkts, fwd), "reordered: {pkts:?}");
                exact += 1;
            }
        }
        // Even this heavy reordering (swaps of up to 30 ms, bursts of 3, 4 bursts kept) leaves
        // most flows exact; about half of the flagged ones are in fact equal (the flag is
        // conservative).
        assert!(exact > 2800, "{exact} of 3000 exact");
    }

    #[test]
    fn reordered_without_limits_is_always_exact() {
        let mut seed = 12345u64;
        let mut rnd = move |m: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % m
        };
        let cfg = BurstConfig {
            max_bursts: 1000,
            max_packets_per_burst: 1000,
            ..BurstConfig::default()
        };
        for _ in 0..2000 {
            let n = 1 + rnd(30) as usize;
            let pkts: Vec<(u64, bool, u16)> = (0..n)
                .map(|i| (rnd(100 * MS), rnd(2) == 0, (i + 20) as u16))
                .collect();
            let got = stream(&cfg, &pkts, true);
            assert_eq!(got.inexact_late_packets, 0);
            assert_eq!(got, reference(&cfg, &pkts, true), "{pkts:?}");
        }
    }

    #[test]
    fn empty_flow_has_no_bursts() {
        let f = FlowTokenizer::new(&BurstConfig::default(), 6).finish();
        assert!(f.bursts.is_empty());
        assert_eq!(f.flow_duration_us, 0);
    }
}
