//! The guest's `sbrk`, in place of wasi-libc's: the same break, but linear memory grown in
//! whole 2 MiB steps (up to the job's memory limit) rather than one 64 KiB wasm page at a time.
//!
//! The host asks the kernel for transparent huge pages over the part of the guest's memory it
//! has not used yet (`sandbox/src/host.rs`, `prefer_huge_pages`), and the kernel can only back
//! an aligned 2 MiB range with one when all of it is accessible. Grown 64 KiB at a time, the
//! memory never is when it is first written, so every page was a 4 KiB fault: about 2 µs each
//! on these machines, 7 ms for the 13 MiB of a 100 000-row result, against about 1 ms for the
//! same memory in huge pages. dlmalloc (wasi-libc's `malloc`, which Rust's allocator and QuickJS
//! use) asks `sbrk` for what it needs; the memory past the break is grown already, and the next
//! requests are answered from it without growing.
//!
//! Memory grows by 2 MiB only while that stays within the job's limit: a refused growth is
//! what the host reports as `memory_limit`, so when the rounded growth would pass the limit the
//! exact one is asked for, as wasi-libc does. Before a job (in the template) nothing is rounded.

use std::cell::Cell;
use std::ffi::c_void;

/// A wasm page.
const PAGE: usize = 64 * 1024;
/// A huge page of the host's kernel; memory is grown to multiples of it.
const STEP: usize = 2 * 1024 * 1024;

thread_local! {
    /// The break: the end of what dlmalloc holds, valid while memory is still [`END`] long.
    static BREAK: Cell<usize> = const { Cell::new(0) };
    /// The size memory had after the last call; if anything else grew it since (nothing in the
    /// guest does), the break starts again from the end of memory, as wasi-libc's does.
    static END: Cell<usize> = const { Cell::new(0) };
    /// The job's memory limit in bytes; 0 (no rounding, no rows held) until the job arrives.
    static LIMIT: Cell<usize> = const { Cell::new(0) };
}

/// Sets the job's memory limit (growth is rounded to [`STEP`] up to it).
pub fn set_limit(bytes: usize) {
    LIMIT.set(bytes);
}

/// The job's memory limit in bytes; 0 before the job.
pub fn limit() -> usize {
    LIMIT.get()
}

/// The guest's linear memory in bytes; it only grows.
pub fn memory_bytes() -> usize {
    core::arch::wasm32::memory_size(0).saturating_mul(PAGE)
}

/// Grows linear memory by `pages`; false when the host refuses.
fn grow(pages: usize) -> bool {
    core::arch::wasm32::memory_grow(0, pages) != usize::MAX
}

/// `sbrk(2)` for dlmalloc: moves the break up by `increment` bytes (a multiple of the wasm page)
/// and returns the old break, or `(void *)-1` when memory cannot grow that far. A negative
/// increment is refused (wasi-libc's dlmalloc never trims; wasi-libc's own `sbrk` aborts).
#[expect(
    unsafe_code,
    reason = "replaces wasi-libc's sbrk, which its dlmalloc links against"
)]
#[unsafe(no_mangle)]
pub extern "C" fn sbrk(increment: isize) -> *mut c_void {
    let failed = usize::MAX as *mut c_void;
    let size = memory_bytes();
    let old = if END.get() == size { BREAK.get() } else { size };
    let Ok(increment) = usize::try_from(increment) else {
        return failed;
    };
    if increment % PAGE != 0 {
        return failed;
    }
    let Some(new) = old.checked_add(increment) else {
        return failed;
    };
    if new > size {
        let rounded = new
            .checked_next_multiple_of(STEP)
            .filter(|&r| r <= LIMIT.get());
        let grown = rounded.is_some_and(|r| grow((r - size) / PAGE)) || grow((new - size) / PAGE);
        if !grown {
            return failed;
        }
    }
    BREAK.set(new);
    END.set(memory_bytes());
    old as *mut c_void
}
