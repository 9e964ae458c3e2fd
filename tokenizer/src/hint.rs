//! CPU cache hints for the flow stages: they change how fast, never what is computed.

/// Asks the CPU to start loading the cache lines of the `len` bytes at `p`, one every 64
/// bytes from `p` (no effect where unsupported).
#[inline(always)]
pub fn prefetch_bytes(p: *const u8, len: usize) {
    let mut off = 0;
    while off < len {
        let line = p.wrapping_add(off);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: prefetching never faults and reads nothing into the program: any address,
        // even a dangling one, is allowed.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(line.cast());
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = line;
        off += 64;
    }
}
