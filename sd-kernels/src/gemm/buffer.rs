//! A 64-byte aligned, reusable scratch buffer, so packed panels start on cache lines and
//! vector loads from them never split one.

/// One cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// Scratch memory for `T` values (`f32` or bf16 bits), grown on demand, never shrunk.
pub(crate) struct AlignedBuf {
    lines: Vec<Line>,
}

/// `n` zero lines, allocated zeroed.
fn zeroed_lines(n: usize) -> Vec<Line> {
    if n == 0 {
        return Vec::new();
    }
    let layout = std::alloc::Layout::array::<Line>(n).expect("scratch size overflows");
    // SAFETY: the layout has a non-zero size; a null result is handled; zero bytes are a valid
    // `Line`; the Vec takes the allocation with the same layout (capacity n, length n).
    unsafe {
        let ptr = std::alloc::alloc_zeroed(layout).cast::<Line>();
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        Vec::from_raw_parts(ptr, n, n)
    }
}

impl AlignedBuf {
    pub(crate) const fn new() -> Self {
        Self { lines: Vec::new() }
    }

    /// A buffer of `len` values of `T` whose contents are not written yet (no zeroing, no
    /// page faults on memory the allocator reuses). Builds with debug assertions fill it with
    /// 0xFF bytes (NaN in f32 and in bf16), so a value the writer missed shows in tests.
    ///
    /// # Safety
    /// Every value must be written before any is read.
    pub(crate) unsafe fn unwritten<T: Copy + Default>(len: usize) -> Self {
        let n = (len * std::mem::size_of::<T>()).div_ceil(64);
        if n == 0 {
            return Self::new();
        }
        let layout = std::alloc::Layout::array::<Line>(n).expect("scratch size overflows");
        let ptr = std::alloc::alloc(layout).cast::<Line>();
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        if cfg!(debug_assertions) {
            std::ptr::write_bytes(ptr, 0xFF, n);
        }
        // SAFETY: allocated with this layout (capacity n); the caller writes before reading.
        Self {
            lines: Vec::from_raw_parts(ptr, n, n),
        }
    }

    /// The first `len` values, as last written through [`get`](Self::get).
    pub(crate) fn slice<T: Copy + Default>(&self, len: usize) -> &[T] {
        assert!(len * std::mem::size_of::<T>() <= self.lines.len() * 64);
        // SAFETY: as in `get`; the length is within the buffer (asserted).
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast::<T>(), len) }
    }

    /// The first `len` values, to be written.
    pub(crate) fn slice_mut<T: Copy + Default>(&mut self, len: usize) -> &mut [T] {
        assert!(len * std::mem::size_of::<T>() <= self.lines.len() * 64);
        // SAFETY: as in `get`; the length is within the buffer (asserted).
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast::<T>(), len) }
    }

    /// A slice of at least `len` values, contents unspecified (callers write before reading).
    pub(crate) fn get<T: Copy + Default>(&mut self, len: usize) -> &mut [T] {
        let bytes = len * std::mem::size_of::<T>();
        let needed = bytes.div_ceil(64);
        if self.lines.len() < needed {
            // The old contents need not survive: a fresh zeroed allocation, which for large
            // sizes is fresh pages from the system (no memset here; each page is faulted in
            // by whichever thread first writes it), replaces the buffer.
            self.lines = zeroed_lines(needed);
        }
        // SAFETY: the lines are plain bytes, 64-byte aligned (stronger than T's alignment), at
        // least `bytes` long; T is a plain number type (f32 / u16) valid for any bit pattern.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast::<T>(), len) }
    }
}
