//! The sliding windows a failure-rate policy looks at: the last `n` calls, or the calls of the
//! last `t`, kept in buckets.
//!
//! **Invariant (both windows).** A [`Tally`] never counts more failures, or more slow calls,
//! than calls, and every failure and slow call it counts is one that was really recorded in the
//! window it describes. So a window's failure rate never exceeds the real one: a breaker never
//! opens on failures that are not there. In-flight recordings (a call whose outcome is being
//! written while another thread sums) may be missing from a tally; the thread recording them
//! sums again after its own write, so a rate that really crosses the threshold is seen.
//! The loom models `breaker_window` check this; `tests/circuit_breaker_stress.rs` checks it on
//! real threads.

use crate::stripe::{CachePadded, Striped};
use crate::sync::atomic::{AtomicU64, Ordering};
use crate::sync::spin;

/// Calls, failures and slow calls of a window.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tally {
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
}

const FAILED: u64 = 0b01;
const SLOW: u64 = 0b10;
const FLAG_BITS: u32 = 2;

/// The last `size` calls.
///
/// Every recorded call takes the next *position* from one shared sequence (a `fetch_add`: the
/// window orders all calls, so they share one counter, as Resilience4j's ring shares a lock).
/// A failed or slow call writes `position << 2 | flags` into ring slot `position % size` with
/// `fetch_max`, so a slot holds the newest bad call of its positions; a success writes
/// nothing. The window at sequence `s` is the positions `(max(s - size, base), s]`: a tally
/// counts the slots whose position falls there. Positions are unique and each names one slot,
/// so the failures counted are distinct calls of the window, at most as many as its calls.
#[derive(Debug)]
pub(crate) struct CountWindow {
    /// The last position handed out.
    seq: CachePadded<AtomicU64>,
    /// The sequence when the window was last cleared: positions up to it no longer count.
    base: AtomicU64,
    ring: Box<[AtomicU64]>,
}

impl CountWindow {
    pub(crate) fn new(size: u32) -> Self {
        Self {
            seq: CachePadded(AtomicU64::new(0)),
            base: AtomicU64::new(0),
            ring: (0..size.max(1)).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Records one call; returns the window's tally after it when the call was failed or
    /// slow (the only outcomes that can raise a rate). A success costs one `fetch_add`.
    #[inline]
    pub(crate) fn record(&self, failed: bool, slow: bool) -> Option<Tally> {
        self.record_at(failed, slow).1
    }

    /// [`record`](Self::record), and the position the call took.
    #[inline]
    pub(crate) fn record_at(&self, failed: bool, slow: bool) -> (u64, Option<Tally>) {
        let position = self.seq.0.fetch_add(1, Ordering::AcqRel) + 1;
        if !(failed || slow) {
            return (position, None);
        }
        let flags = if failed { FAILED } else { 0 } | if slow { SLOW } else { 0 };
        let slot = &self.ring[(position % self.ring.len() as u64) as usize];
        slot.fetch_max(position << FLAG_BITS | flags, Ordering::AcqRel);
        (position, Some(self.tally()))
    }

    /// The calls, failures and slow calls of the window now.
    pub(crate) fn tally(&self) -> Tally {
        let seq = self.seq.0.load(Ordering::Acquire);
        let low = seq
            .saturating_sub(self.ring.len() as u64)
            .max(self.base.load(Ordering::Acquire))
            .min(seq);
        let mut tally = Tally {
            calls: seq - low,
            ..Tally::default()
        };
        for slot in self.ring.iter() {
            let v = slot.load(Ordering::Acquire);
            let position = v >> FLAG_BITS;
            if position > low && position <= seq {
                tally.failures += v & FAILED;
                tally.slow += (v & SLOW) >> 1;
            }
        }
        debug_assert!(tally.failures <= tally.calls && tally.slow <= tally.calls);
        tally
    }

    /// Empties the window: the calls recorded so far no longer count.
    pub(crate) fn clear(&self) {
        self.base
            .store(self.seq.0.load(Ordering::Acquire), Ordering::Release);
    }
}

/// A slot being rolled over to a new bucket: its counters are being zeroed.
const BUSY: u64 = 1 << 63;
const BUCKET_BITS: u32 = 47;
const BUCKET_MASK: u64 = (1 << BUCKET_BITS) - 1;
const TAG_MASK: u64 = 0xFFFF;

/// One bucket of one stripe.
#[derive(Debug, Default)]
struct Bucket {
    /// `tag << 47 | bucket number` ([`BUSY`] while being rolled over). The tag is the low 16
    /// bits of the breaker's epoch, so a bucket written in an earlier closed period is stale.
    id: AtomicU64,
    /// `failures << 32 | calls`: one word, so a call and its failure land in the same bucket
    /// together. Calls saturate at `u32::MAX` per stripe and bucket.
    counts: AtomicU64,
    slow: AtomicU64,
}

/// The calls of the last `bucket * buckets`, kept per stripe in a ring of buckets.
///
/// A call adds to its stripe's bucket for `now / bucket` (compare-and-swap). A bucket of an
/// older number (or an earlier closed period) is rolled over by one thread: it swaps the id for
/// [`BUSY`], zeroes the counters and then publishes the new id; others wait for that (two
/// stores) instead of adding to counters being zeroed. So no call of a current bucket is lost.
/// A thread that was descheduled for longer than the whole window may find its bucket rolled
/// over: its call then counts in the newer bucket (or, if the rollover zeroed it, not at all),
/// a call older than the window either way. A tally sums the buckets of the window in every
/// stripe, counting slow calls at most up to calls.
#[derive(Debug)]
pub(crate) struct TimeWindow {
    bucket_us: u64,
    buckets: u64,
    stripes: Striped<Box<[Bucket]>>,
}

impl TimeWindow {
    pub(crate) fn new(bucket_us: u64, buckets: u32, stripes: usize) -> Self {
        Self {
            bucket_us: bucket_us.max(1),
            buckets: u64::from(buckets.max(1)),
            stripes: Striped::new(stripes, |_| {
                (0..buckets.max(1)).map(|_| Bucket::default()).collect()
            }),
        }
    }

    fn id(&self, epoch: u32, now_us: u64) -> (u64, u64) {
        let bucket = (now_us / self.bucket_us) & BUCKET_MASK;
        (
            bucket,
            (u64::from(epoch) & TAG_MASK) << BUCKET_BITS | bucket,
        )
    }

    /// Records one call of the closed period `epoch` at `now_us` on stripe `stripe` (any
    /// stripe is correct; the caller's own keeps threads off each other's lines). Returns the
    /// tally of the window when the call was failed or slow.
    pub(crate) fn record(
        &self,
        stripe: usize,
        epoch: u32,
        now_us: u64,
        failed: bool,
        slow: bool,
    ) -> Option<Tally> {
        let (bucket, want) = self.id(epoch, now_us);
        let cell = self.stripes.cell_of(stripe).cell;
        let slot = &cell[(bucket % self.buckets) as usize];
        loop {
            let id = slot.id.load(Ordering::Acquire);
            if id == want {
                break;
            }
            if id & BUSY != 0 {
                spin();
                continue;
            }
            if id >> BUCKET_BITS == want >> BUCKET_BITS && id & BUCKET_MASK > bucket {
                // Late: the slot already holds a newer bucket of this period; count there.
                break;
            }
            if slot
                .id
                .compare_exchange(id, BUSY, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                // Swaps, not stores: a late call's add may race them (it is not ordered
                // after this rollover), and a read-modify-write keeps one total order.
                slot.counts.swap(0, Ordering::AcqRel);
                slot.slow.swap(0, Ordering::AcqRel);
                slot.id.store(want, Ordering::Release);
                break;
            }
        }
        let add = 1 | if failed { 1 << 32 } else { 0 };
        let mut counts = slot.counts.load(Ordering::Relaxed);
        while counts & u64::from(u32::MAX) != u64::from(u32::MAX) {
            match slot.counts.compare_exchange_weak(
                counts,
                counts + add,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => counts = now,
            }
        }
        if slow {
            slot.slow.fetch_add(1, Ordering::AcqRel);
        }
        (failed || slow).then(|| self.tally(epoch, now_us))
    }

    /// The calls, failures and slow calls of the window ending at `now_us`, closed period
    /// `epoch`.
    pub(crate) fn tally(&self, epoch: u32, now_us: u64) -> Tally {
        let (bucket, want) = self.id(epoch, now_us);
        let tag = want >> BUCKET_BITS;
        let mut tally = Tally::default();
        for cell in self.stripes.iter() {
            for slot in cell.iter() {
                let id = slot.id.load(Ordering::Acquire);
                let b = id & BUCKET_MASK;
                if id & BUSY == 0 && id >> BUCKET_BITS == tag && b + self.buckets > bucket {
                    // A bucket newer than `bucket` (another thread's clock is ahead) counts
                    // too: it is in the window as that thread sees it.
                    let counts = slot.counts.load(Ordering::Acquire);
                    let calls = counts & u64::from(u32::MAX);
                    tally.calls += calls;
                    tally.failures += counts >> 32;
                    tally.slow += slot.slow.load(Ordering::Acquire).min(calls);
                }
            }
        }
        debug_assert!(tally.failures <= tally.calls && tally.slow <= tally.calls);
        tally
    }
}
