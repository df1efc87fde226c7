//! Blocks of 2 MiB and more straight from `mmap`, aligned to 2 MiB and marked for transparent
//! huge pages (`MADV_HUGEPAGE`; Linux's default THP mode, "madvise", only backs regions that
//! ask). One fault then maps 2 MiB instead of 4 KiB: loading a network, which writes every
//! weight into fresh pages, spent two thirds of its time in page faults, and the matrix
//! engine's walks over packed weights miss the TLB far less.
//!
//! Only whole 2 MiB pages of a block are marked, so a block's tail never takes a huge page it
//! would leave mostly unused. Elsewhere than Linux the system allocator serves every block.

#[cfg(not(target_os = "linux"))]
use std::alloc::{GlobalAlloc, Layout, System};

/// The huge page size (x86-64 and most aarch64 kernels).
pub(crate) const HUGE: usize = 2 << 20;

/// Whether a block of `size` bytes comes from [`alloc`].
pub(super) fn serves(size: usize) -> bool {
    cfg!(target_os = "linux") && size >= HUGE
}

/// A zeroed, 2 MiB-aligned block of `size` bytes (`size >= HUGE`), or null.
///
/// # Safety
/// Free it with [`dealloc`] and the same size.
pub(super) unsafe fn alloc(size: usize) -> *mut u8 {
    #[cfg(target_os = "linux")]
    {
        let len = size.next_multiple_of(4096);
        // Over-map by one huge page, then cut the mapping down to an aligned window.
        let Some(span) = len.checked_add(HUGE) else {
            return std::ptr::null_mut();
        };
        let raw = libc::mmap(
            std::ptr::null_mut(),
            span,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if raw == libc::MAP_FAILED {
            return std::ptr::null_mut();
        }
        let start = raw as usize;
        let aligned = start.next_multiple_of(HUGE);
        if aligned > start {
            libc::munmap(raw, aligned - start);
        }
        let tail = start + span - (aligned + len);
        if tail > 0 {
            libc::munmap((aligned + len) as *mut libc::c_void, tail);
        }
        // Advice only: a kernel without THP ignores it and the block works the same.
        libc::madvise(
            aligned as *mut libc::c_void,
            size / HUGE * HUGE,
            libc::MADV_HUGEPAGE,
        );
        aligned as *mut u8
    }
    #[cfg(not(target_os = "linux"))]
    {
        System.alloc_zeroed(Layout::from_size_align_unchecked(size, HUGE))
    }
}

/// Frees a block from [`alloc`].
///
/// # Safety
/// `ptr` came from [`alloc`] with this `size` and is not used afterwards.
pub(super) unsafe fn dealloc(ptr: *mut u8, size: usize) {
    #[cfg(target_os = "linux")]
    {
        libc::munmap(ptr as *mut libc::c_void, size.next_multiple_of(4096));
    }
    #[cfg(not(target_os = "linux"))]
    {
        System.dealloc(ptr, Layout::from_size_align_unchecked(size, HUGE))
    }
}

/// Cuts a block from [`alloc`] of `size` bytes down to `new_size` (`HUGE <= new_size <=
/// size`) in place: the pages past `new_size` are unmapped; the others keep their contents.
///
/// # Safety
/// `ptr` came from [`alloc`] with `size`; it is freed with `new_size` afterwards.
pub(super) unsafe fn shrink(ptr: *mut u8, size: usize, new_size: usize) {
    debug_assert!(HUGE <= new_size && new_size <= size);
    #[cfg(target_os = "linux")]
    {
        let (keep, len) = (new_size.next_multiple_of(4096), size.next_multiple_of(4096));
        if len > keep {
            libc::munmap(ptr.add(keep) as *mut libc::c_void, len - keep);
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (ptr, size, new_size);
        unreachable!("huge blocks come from the system allocator here, never cut");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_aligned_zeroed_and_writable() {
        for size in [HUGE, 5 * HUGE + 12345] {
            // SAFETY: freed below with the same size.
            unsafe {
                let p = alloc(size);
                assert!(!p.is_null());
                assert_eq!(p as usize % HUGE, 0, "{size}: not 2 MiB aligned");
                let block = std::slice::from_raw_parts_mut(p, size);
                assert!(
                    block.iter().step_by(4093).all(|&b| b == 0),
                    "{size}: not zeroed"
                );
                block.fill(0xA5);
                assert_eq!(block[size - 1], 0xA5);
                dealloc(p, size);
            }
        }
    }

    #[test]
    fn a_cut_block_keeps_its_first_bytes() {
        let (size, new_size) = (5 * HUGE + 12345, 3 * HUGE + 777);
        // SAFETY: cut to new_size, then freed with new_size.
        unsafe {
            let p = alloc(size);
            assert!(!p.is_null());
            std::slice::from_raw_parts_mut(p, size).fill(0x5A);
            shrink(p, size, new_size);
            let kept = std::slice::from_raw_parts_mut(p, new_size);
            assert!(kept.iter().step_by(4093).all(|&b| b == 0x5A));
            kept.fill(1);
            dealloc(p, new_size);
        }
    }
}
