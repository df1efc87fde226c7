//! The weights-file and image readers' fuzzing corpora as regression tests: every input of
//! `fixtures/fuzz/<target>/` through that fuzz target's own check (see `fuzz/README.md`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

#[path = "../../fuzz/src/checkpoint.rs"]
mod checkpoint;
#[path = "../../fuzz/src/png.rs"]
mod png;
#[path = "../../fuzz/src/replay.rs"]
mod replay;

/// The system allocator with a cap on live bytes, as libFuzzer's `-rss_limit_mb`: a memory bomb
/// among the inputs makes this test abort ("memory allocation of N bytes failed") instead of
/// exhausting the machine.
struct Capped;

const CAP: usize = 2 << 30;
static LIVE: AtomicUsize = AtomicUsize::new(0);

impl Capped {
    fn reserve(size: usize) -> bool {
        if LIVE.fetch_add(size, Relaxed) + size > CAP {
            LIVE.fetch_sub(size, Relaxed);
            return false;
        }
        true
    }
}

// SAFETY: every call goes to `System` with the caller's layout; only the counting is added.
unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !Self::reserve(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` / `realloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() && !Self::reserve(new_size - layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller upholds `realloc`'s contract.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if new.is_null() {
            LIVE.fetch_sub(new_size.saturating_sub(layout.size()), Relaxed);
        } else if new_size < layout.size() {
            LIVE.fetch_sub(layout.size() - new_size, Relaxed);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Capped = Capped;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn safetensors_file_inputs() {
    replay::replay(&root(), "safetensors_file", checkpoint::safetensors_file);
}

#[test]
fn ckpt_file_inputs() {
    replay::replay(&root(), "ckpt_file", checkpoint::ckpt_file);
}

#[test]
fn checkpoint_detect_inputs() {
    replay::replay(&root(), "checkpoint_detect", checkpoint::detect_shapes);
}

#[test]
fn png_image_inputs() {
    replay::replay(&root(), "png_image", png::run);
}
