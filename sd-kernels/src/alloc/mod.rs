//! A global allocator that keeps large freed blocks for reuse.
//!
//! Every candle op returns a fresh tensor; at 512² many are tens of megabytes, above glibc's
//! 32 MiB `mmap` ceiling, so each is a new mapping whose pages the kernel must fault in and
//! zero on first touch — a quarter of a UNet call's time before this allocator. A denoising
//! loop asks for the same sizes every step, so keeping freed blocks of at least
//! [`MIN_CACHED`] bytes and handing them back for a request of the same size removes nearly
//! all of that work. At most [`CachingAllocator::limit`] bytes are kept; the rest goes back to
//! the system. Blocks of 2 MiB and more come on transparent huge pages (see the `huge` module's
//! docs). A binary opts in:
//!
//! ```no_run
//! #[global_allocator]
//! static ALLOC: sd_kernels::alloc::CachingAllocator = sd_kernels::alloc::CachingAllocator;
//! ```

mod huge;

/// The size from which blocks come on huge pages and a cut is possible: users that want
/// their buffers kept and reused (see the module docs) size them at least this large.
pub(crate) use huge::HUGE;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Blocks smaller than this go straight to the system allocator (which reuses them well).
pub const MIN_CACHED: usize = 1 << 20;
/// How many freed blocks are kept at most.
const SLOTS: usize = 128;
/// Alignment of every cached block, so one block can serve any request of its size.
const ALIGN: usize = 64;

/// Freed blocks: (size, address), size 0 = empty slot, with when each was freed.
struct Cache {
    slots: [(usize, usize); SLOTS],
    /// `freed[i]`: the clock when the block in `slots[i]` was kept.
    freed: [u64; SLOTS],
    /// Counts kept blocks.
    clock: u64,
    bytes: usize,
}

static CACHE: Mutex<Cache> = Mutex::new(Cache::EMPTY);

impl Cache {
    const EMPTY: Cache = Cache {
        slots: [(0, 0); SLOTS],
        freed: [0; SLOTS],
        clock: 0,
        bytes: 0,
    };

    /// Keeps the freed block `(size, address)` (`size <= limit`), first taking out the blocks
    /// freed longest ago until it fits in `limit` bytes and a slot; returns how many blocks
    /// it took out, into the start of `out`, for the caller to give back to the system.
    ///
    /// The oldest go, not the newest: a UNet call asks again soon for the sizes it just
    /// freed (those of the level it works at), while blocks kept from an earlier level wait
    /// for the next call. Turning the newest away instead left the cache full of stale sizes
    /// (bf16 512²: 1.2-1.4 GB of fresh, zeroed pages per call).
    fn keep(
        &mut self,
        size: usize,
        address: usize,
        limit: usize,
        out: &mut [(usize, usize); SLOTS],
    ) -> usize {
        let mut taken = 0;
        loop {
            let free_slot = self.slots.iter().position(|s| s.0 == 0);
            if let (Some(i), true) = (free_slot, self.bytes + size <= limit) {
                self.slots[i] = (size, address);
                self.freed[i] = self.clock;
                self.clock += 1;
                self.bytes += size;
                return taken;
            }
            let oldest = (0..SLOTS)
                .filter(|&i| self.slots[i].0 != 0)
                .min_by_key(|&i| self.freed[i])
                .expect("a full cache holds blocks");
            out[taken] = self.slots[oldest];
            taken += 1;
            self.bytes -= self.slots[oldest].0;
            self.slots[oldest] = (0, 0);
        }
    }
}

/// 0 = not read yet; else the byte limit + 1.
static LIMIT: AtomicUsize = AtomicUsize::new(0);

/// Live guards that keep nothing ([`CachingAllocator::uncached`], a zero
/// [`CachingAllocator::limited`], or a limit that found no free slot in [`SCOPED`]).
static UNCACHED: AtomicUsize = AtomicUsize::new(0);

/// Live [`Limited`] guards at most, beyond those that keep nothing (the public docs of
/// [`CachingAllocator::limited`] name this number).
const SCOPED_SLOTS: usize = 16;

/// Each live [`Limited`] guard's bytes + 1 in a slot of its own (0 = free): the limit is the
/// lowest of them, whatever order guards on different threads are dropped in.
static SCOPED: [AtomicUsize; SCOPED_SLOTS] = [const { AtomicUsize::new(0) }; SCOPED_SLOTS];

/// While alive, the cache keeps fewer bytes, or none (see [`CachingAllocator::limited`]).
#[must_use = "the limit is lifted when the guard is dropped"]
pub struct Limited {
    /// Its slot in [`SCOPED`], or `None`: counted in [`UNCACHED`].
    slot: Option<usize>,
}

impl Drop for Limited {
    fn drop(&mut self) {
        match self.slot {
            Some(i) => SCOPED[i].store(0, Ordering::Relaxed),
            None => {
                UNCACHED.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

/// The caching allocator (see the module docs). `SD_ALLOC_CACHE_MB` sets the limit
/// (default 512 MiB; 0 turns caching off). The limit adds to the peak memory: random SD 1.5,
/// 512² f32, peak RSS 5314 MiB at 1024, 4968 MiB at 512, UNet calls within the run-to-run
/// noise (±10%) of each other.
pub struct CachingAllocator;

impl CachingAllocator {
    /// Bytes of freed blocks kept at most (the lowest of the process limit and those of the
    /// live [`Limited`] guards).
    pub fn limit() -> usize {
        if UNCACHED.load(Ordering::Relaxed) > 0 {
            return 0;
        }
        SCOPED
            .iter()
            .filter_map(|slot| slot.load(Ordering::Relaxed).checked_sub(1))
            .fold(Self::process_limit(), usize::min)
    }

    /// The limit for the whole process.
    fn process_limit() -> usize {
        match LIMIT.load(Ordering::Relaxed) {
            0 => {
                // Reading the environment does not allocate through this allocator's cache
                // path (only small blocks), so it is safe here.
                let mb = std::env::var("SD_ALLOC_CACHE_MB")
                    .ok()
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(512);
                let bytes = mb << 20;
                LIMIT.store(bytes + 1, Ordering::Relaxed);
                bytes
            }
            n => n - 1,
        }
    }

    /// Lowers the limit to at most `bytes` for the rest of the process (never raises it) and
    /// gives back kept blocks beyond it: for runs that put memory before speed, such as
    /// sd-pipeline's low-memory mode (each cached MiB is a MiB of peak memory).
    pub fn cap_limit(bytes: usize) {
        if bytes >= Self::process_limit() {
            return;
        }
        LIMIT.store(bytes + 1, Ordering::Relaxed);
        let Ok(mut cache) = CACHE.lock() else { return };
        for i in 0..SLOTS {
            if cache.bytes <= bytes {
                break;
            }
            let (size, ptr) = cache.slots[i];
            if size != 0 {
                // SAFETY: the block was allocated by `fresh` with this size.
                unsafe { free(ptr as *mut u8, size) };
                cache.slots[i] = (0, 0);
                cache.bytes -= size;
            }
        }
    }

    /// Bytes currently kept in the cache.
    pub fn cached_bytes() -> usize {
        CACHE.lock().map_or(0, |c| c.bytes)
    }

    /// Stops keeping freed blocks until the guard is dropped (blocks already kept stay), for
    /// work whose sizes never repeat, such as loading weights: every freed read buffer would
    /// otherwise sit in the cache, up to the limit, on top of the packed weights.
    pub fn uncached() -> Limited {
        Self::limited(0)
    }

    /// Keeps at most `bytes` of freed blocks (or the process limit, if lower) until the guard
    /// is dropped: for work that repeats a few sizes among many larger ones that never come
    /// back, such as a VAE decode, whose convolutions each ask for the same Winograd buffers
    /// while its activations are too large to keep. Blocks beyond it go back to the system as
    /// blocks are next freed. With several guards alive (nested, or on other threads) the
    /// lowest limit holds; past 16 live guards, a new one keeps nothing.
    pub fn limited(bytes: usize) -> Limited {
        let free_slot = (bytes > 0)
            .then(|| {
                SCOPED.iter().position(|slot| {
                    slot.compare_exchange(0, bytes + 1, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                })
            })
            .flatten();
        if free_slot.is_none() {
            UNCACHED.fetch_add(1, Ordering::Relaxed);
        }
        Limited { slot: free_slot }
    }

    /// Returns every cached block to the system (e.g. between jobs that use other sizes).
    pub fn release_all() {
        let Ok(mut cache) = CACHE.lock() else { return };
        for slot in cache.slots.iter_mut() {
            if slot.0 != 0 {
                // SAFETY: the block was allocated by `fresh` with this size.
                unsafe { free(slot.1 as *mut u8, slot.0) };
                *slot = (0, 0);
            }
        }
        cache.bytes = 0;
    }
}

fn cacheable(layout: Layout) -> bool {
    let align = if huge::serves(layout.size()) {
        huge::HUGE
    } else {
        ALIGN
    };
    layout.size() >= MIN_CACHED && layout.align() <= align
}

fn big_layout(size: usize) -> Layout {
    // SAFETY: ALIGN is a power of two and the size was valid with a smaller alignment.
    unsafe { Layout::from_size_align_unchecked(size, ALIGN) }
}

/// A new cacheable block of `size` bytes, zeroed if `zeroed` (huge-page blocks always are).
///
/// # Safety
/// Free it with [`free`] and the same size.
unsafe fn fresh(size: usize, zeroed: bool) -> *mut u8 {
    if huge::serves(size) {
        huge::alloc(size)
    } else if zeroed {
        System.alloc_zeroed(big_layout(size))
    } else {
        System.alloc(big_layout(size))
    }
}

/// Frees a block from [`fresh`].
///
/// # Safety
/// `ptr` came from [`fresh`] with this `size` and is not used afterwards.
unsafe fn free(ptr: *mut u8, size: usize) {
    if huge::serves(size) {
        huge::dealloc(ptr, size)
    } else {
        System.dealloc(ptr, big_layout(size))
    }
}

/// A kept block for a request of `size` bytes, taken out of the cache: one of exactly that
/// size, else (for blocks from [`huge`]) the smallest kept block of at most twice the size,
/// cut down to `size` (its pages past `size` go back to the system; those before stay mapped,
/// so the new owner does not fault them in again).
///
/// # Safety
/// The result is a block from [`fresh`] of `size` bytes, owned by the caller.
unsafe fn take(size: usize) -> Option<*mut u8> {
    let mut cache = CACHE.lock().ok()?;
    let i = best_fit(&cache.slots, size, huge::serves(size))?;
    let (kept, ptr) = cache.slots[i];
    cache.slots[i] = (0, 0);
    cache.bytes -= kept;
    drop(cache);
    if kept != size {
        huge::shrink(ptr as *mut u8, kept, size);
    }
    Some(ptr as *mut u8)
}

/// The slot of `slots` (`(size, address)`, size 0 = empty) to serve a request of `size`: the
/// block of exactly that size, else, if `may_cut`, the smallest of `size` to `2 size` bytes.
///
/// Exact sizes alone missed often: a UNet call asks for many sizes, and a cache full of
/// other sizes left each new one to fresh pages (page zeroing was 8% of a bf16 512² call).
/// A block at most twice the size gives back at most what it saves.
fn best_fit(slots: &[(usize, usize)], size: usize, may_cut: bool) -> Option<usize> {
    if let Some(i) = slots.iter().position(|s| s.0 == size) {
        return Some(i);
    }
    if !may_cut {
        return None;
    }
    slots
        .iter()
        .enumerate()
        .filter(|(_, s)| s.0 > size && s.0 / 2 <= size)
        .min_by_key(|(_, s)| s.0)
        .map(|(i, _)| i)
}

// SAFETY: large blocks are always allocated and freed by System with the same (size, ALIGN)
// layout; a cached block is handed out to exactly one owner at a time (taken under the lock).
unsafe impl GlobalAlloc for CachingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !cacheable(layout) {
            return System.alloc(layout);
        }
        take(layout.size()).unwrap_or_else(|| fresh(layout.size(), false))
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !cacheable(layout) {
            return System.alloc_zeroed(layout);
        }
        match take(layout.size()) {
            Some(ptr) => {
                std::ptr::write_bytes(ptr, 0, layout.size());
                ptr
            }
            None => fresh(layout.size(), true),
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !cacheable(layout) {
            return System.dealloc(ptr, layout);
        }
        let size = layout.size();
        let limit = Self::limit();
        if size > limit {
            return free(ptr, size);
        }
        let mut out = [(0, 0); SLOTS];
        let taken = match CACHE.lock() {
            Ok(mut cache) => cache.keep(size, ptr as usize, limit, &mut out),
            Err(_) => return free(ptr, size),
        };
        for &(size, address) in &out[..taken] {
            // SAFETY: a kept block, allocated by `fresh` with this size, now out of the cache.
            free(address as *mut u8, size);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        if !cacheable(layout) && !cacheable(new_layout) {
            return System.realloc(ptr, layout, new_size);
        }
        let new = self.alloc(new_layout);
        if !new.is_null() {
            std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
            self.dealloc(ptr, layout);
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_limits_give_kept_blocks_back_and_scoped_ones_end_with_their_guard() {
        // This test binary does not install the allocator, so only these calls use its cache.
        let layout = Layout::from_size_align(4 << 20, 64).unwrap();
        let before = CachingAllocator::cached_bytes();
        // SAFETY: blocks are freed through the same allocator with the same layout.
        unsafe {
            let a = CachingAllocator.alloc(layout);
            let b = CachingAllocator.alloc(layout);
            assert!(!a.is_null() && !b.is_null());
            a.write_bytes(1, layout.size());
            CachingAllocator.dealloc(a, layout);
            CachingAllocator.dealloc(b, layout);
        }
        assert_eq!(CachingAllocator::cached_bytes(), before + (8 << 20));
        CachingAllocator::cap_limit(before + (4 << 20));
        assert_eq!(CachingAllocator::limit(), before + (4 << 20));
        assert!(CachingAllocator::cached_bytes() <= before + (4 << 20));
        // Never raised again.
        CachingAllocator::cap_limit(1 << 40);
        assert_eq!(CachingAllocator::limit(), before + (4 << 20));
        CachingAllocator::release_all();
        assert_eq!(CachingAllocator::cached_bytes(), 0);
        // A scoped limit holds while its guard lives; nested guards end in turn; one above the
        // process limit changes nothing.
        {
            let _outer = CachingAllocator::limited(1 << 20);
            assert_eq!(CachingAllocator::limit(), 1 << 20);
            {
                let _inner = CachingAllocator::limited(0);
                assert_eq!(CachingAllocator::limit(), 0);
                // SAFETY: freed through the same allocator with the same layout.
                unsafe {
                    let a = CachingAllocator.alloc(layout);
                    assert!(!a.is_null());
                    CachingAllocator.dealloc(a, layout);
                }
                assert_eq!(CachingAllocator::cached_bytes(), 0, "kept under a 0 limit");
            }
            assert_eq!(CachingAllocator::limit(), 1 << 20);
        }
        assert_eq!(CachingAllocator::limit(), before + (4 << 20));
        // Guards dropped out of order (as on two threads): the lowest live one holds, and none
        // is left behind.
        let first = CachingAllocator::limited(1 << 20);
        let second = CachingAllocator::limited(2 << 20);
        assert_eq!(CachingAllocator::limit(), 1 << 20);
        drop(first);
        assert_eq!(CachingAllocator::limit(), 2 << 20);
        drop(second);
        assert_eq!(CachingAllocator::limit(), before + (4 << 20));
        {
            let _none = CachingAllocator::uncached();
            assert_eq!(CachingAllocator::limit(), 0);
        }
        let _above = CachingAllocator::limited(1 << 40);
        assert_eq!(CachingAllocator::limit(), before + (4 << 20));
    }

    #[test]
    fn a_full_cache_gives_back_the_blocks_freed_longest_ago() {
        let mut cache = Cache::EMPTY;
        let mut out = [(0, 0); SLOTS];
        for (i, size) in [4, 3, 2, 1].into_iter().enumerate() {
            assert_eq!(cache.keep(size, 100 + i, 10, &mut out), 0);
        }
        // 10 bytes kept; 5 more push out the first two (4 and 3 bytes).
        assert_eq!(cache.keep(5, 200, 10, &mut out), 2);
        assert_eq!(out[..2], [(4, 100), (3, 101)]);
        assert_eq!(cache.bytes, 8);
        // Taking a block out and keeping it again makes it the newest.
        let i = best_fit(&cache.slots, 2, false).unwrap();
        cache.bytes -= cache.slots[i].0;
        cache.slots[i] = (0, 0);
        assert_eq!(cache.keep(2, 102, 10, &mut out), 0);
        assert_eq!(cache.keep(3, 300, 10, &mut out), 1);
        assert_eq!(out[0], (1, 103));
        // With every slot taken, the oldest block goes though the bytes would fit.
        let mut cache = Cache::EMPTY;
        for i in 0..SLOTS {
            cache.keep(1, i, usize::MAX, &mut out);
        }
        assert_eq!(cache.keep(1, 999, usize::MAX, &mut out), 1);
        assert_eq!(out[0], (1, 0));
    }

    #[test]
    fn a_request_takes_its_size_else_the_smallest_block_up_to_twice_it() {
        let mib = 1 << 20;
        let slots = [
            (0, 0),
            (9 * mib, 1),
            (6 * mib, 2),
            (4 * mib, 3),
            (7 * mib, 4),
        ];
        assert_eq!(best_fit(&slots, 4 * mib, true), Some(3));
        assert_eq!(best_fit(&slots, 5 * mib, true), Some(2));
        assert_eq!(best_fit(&slots, 5 * mib, false), None);
        // 9 MiB is more than twice 4.4 MiB; 6 MiB fits.
        assert_eq!(best_fit(&slots, 4 * mib + 400_000, true), Some(2));
        assert_eq!(best_fit(&slots, 3 * mib, true), Some(3));
        assert_eq!(best_fit(&slots, 3 * mib / 2, true), None);
        assert_eq!(best_fit(&slots, 10 * mib, true), None);
    }
}
