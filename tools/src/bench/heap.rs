//! The Rust heap of this process in bytes: veto-tools binaries count their allocations (jemalloc, as `veto`).

use cap::Cap;
use tikv_jemallocator::Jemalloc;

/// The allocator of the `veto` binary (see engine/main.rs), counted.
#[global_allocator]
static ALLOCATOR: Cap<Jemalloc> = Cap::new(Jemalloc, usize::MAX);

/// Bytes currently allocated through Rust's global allocator (C++ allocations, i.e. RocksDB's
/// and librdkafka's, are not included).
pub fn rust_heap_bytes() -> u64 {
    ALLOCATOR.allocated() as u64
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_a_live_allocation() {
        let before = super::rust_heap_bytes();
        let block = vec![1u8; 8 << 20];
        let during = super::rust_heap_bytes();
        drop(std::hint::black_box(block));
        // Other tests allocate concurrently; 8 MiB dwarfs them.
        assert!(during >= before + (7 << 20), "{before} -> {during}");
    }
}
