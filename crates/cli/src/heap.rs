//! The binary's global allocator: the system allocator, counting the bytes Rust code holds (Ternlight, wgpu and
//! every other crate), so that `soak` can tell them apart from a driver's own allocations, which go to libc
//! directly and show only in the resident set.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Bytes currently allocated through the Rust allocator.
static LIVE: AtomicU64 = AtomicU64::new(0);

/// [`System`], counting live bytes.
pub struct Counting;

// SAFETY: every call forwards to `System` unchanged; the counter only observes sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as u64, Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as u64, Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size() as u64, Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            LIVE.fetch_add(new_size as u64, Relaxed);
            LIVE.fetch_sub(layout.size() as u64, Relaxed);
        }
        p
    }
}

/// Bytes the process's Rust code holds now.
pub fn live_bytes() -> u64 {
    LIVE.load(Relaxed)
}

/// A size line of `/proc/self/status` in bytes: `VmRSS` (the resident set now) or `VmHWM` (its peak); 0 where the
/// file or line is missing (not Linux).
pub fn resident(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().split(' ').next()?.parse().ok());
    kib.unwrap_or(0u64) * 1024
}
