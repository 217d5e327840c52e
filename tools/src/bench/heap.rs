//! The Rust heap of this process: veto-tools binaries count their allocations and live bytes
//! (jemalloc underneath, as `veto`).

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicU64, Ordering};

use tikv_jemallocator::Jemalloc;

/// The allocator of the `veto` binary (see engine/main.rs), counted.
#[global_allocator]
static ALLOCATOR: Counted = Counted {
    blocks: AtomicU64::new(0),
    live_bytes: AtomicU64::new(0),
};

/// Jemalloc with two counters: blocks obtained (allocations and reallocations) and bytes live.
struct Counted {
    blocks: AtomicU64,
    live_bytes: AtomicU64,
}

// SAFETY: every method forwards its arguments unchanged to `Jemalloc`, a sound `GlobalAlloc`,
// and returns its result unchanged, so each caller contract (layout non-zero, `ptr` from this
// allocator with this layout, ...) is the one Jemalloc requires and gets. The counters are
// plain atomics: updating them never allocates and never touches the memory handed out.
unsafe impl GlobalAlloc for Counted {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        let ptr = unsafe { Jemalloc.alloc(layout) };
        if !ptr.is_null() {
            self.blocks.fetch_add(1, Ordering::Relaxed);
            self.live_bytes
                .fetch_add(layout.size() as u64, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        let ptr = unsafe { Jemalloc.alloc_zeroed(layout) };
        if !ptr.is_null() {
            self.blocks.fetch_add(1, Ordering::Relaxed);
            self.live_bytes
                .fetch_add(layout.size() as u64, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract for `dealloc` is passed on unchanged.
        unsafe { Jemalloc.dealloc(ptr, layout) };
        self.live_bytes
            .fetch_sub(layout.size() as u64, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract for `realloc` is passed on unchanged.
        let new = unsafe { Jemalloc.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            self.blocks.fetch_add(1, Ordering::Relaxed);
            self.live_bytes
                .fetch_add(new_size as u64, Ordering::Relaxed);
            self.live_bytes
                .fetch_sub(layout.size() as u64, Ordering::Relaxed);
        }
        new
    }
}

/// Bytes currently allocated through Rust's global allocator (C++ allocations, i.e. RocksDB's
/// and librdkafka's, are not included).
pub fn rust_heap_bytes() -> u64 {
    ALLOCATOR.live_bytes.load(Ordering::Relaxed)
}

/// Heap blocks obtained since the process started, on every thread: allocations plus
/// reallocations (a growing buffer costs about as much as a new one).
pub fn allocations() -> u64 {
    ALLOCATOR.blocks.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_live_bytes_through_alloc_realloc_and_dealloc() {
        let before = super::rust_heap_bytes();
        let mut block = vec![1u8; 8 << 20];
        let during = super::rust_heap_bytes();
        block.reserve_exact(8 << 20); // a realloc to 16 MiB
        let grown = super::rust_heap_bytes();
        assert_eq!(block[(8 << 20) - 1], 1, "contents kept by realloc");
        drop(std::hint::black_box(block));
        let after = super::rust_heap_bytes();
        // Other tests allocate concurrently; 8 MiB dwarfs them.
        assert!(during >= before + (7 << 20), "{before} -> {during}");
        assert!(grown >= during + (7 << 20), "{during} -> {grown}");
        assert!(after + (15 << 20) <= grown, "{grown} -> {after}");
    }

    #[test]
    fn counts_allocations() {
        let before = super::allocations();
        let blocks: Vec<Box<u64>> = (0..1000).map(Box::new).collect();
        let zeroed = vec![0u64; 1024];
        let after = super::allocations();
        drop(std::hint::black_box((blocks, zeroed)));
        // 1,000 boxes, the vector and the zeroed block; other tests may add their own.
        assert!(after >= before + 1002, "{before} -> {after}");
    }
}
