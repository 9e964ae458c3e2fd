//! Process-wide memory settings every netfm entry point applies first (the binary, and the
//! stage benchmarks in `examples/`, so that their figures carry over to the binary).

/// `mi_option_purge_delay` in the mimalloc v3 that libmimalloc-sys 0.1.49 builds.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// `mi_option_allow_thp` in the same mimalloc.
const MI_OPTION_ALLOW_THP: libmimalloc_sys::mi_option_t = 43;

/// Keeps mimalloc's freed pages for reuse and turns transparent huge pages off, except
/// where [`advise_huge_pages`] asks for them. Call it at the start of `main`, in a program
/// whose global allocator is mimalloc.
pub fn tune_memory() {
    // Flows are freed on the writer thread while the flow table allocates new ones: with
    // purging, mimalloc hands those pages back to the OS and faults fresh zeroed pages right
    // after (about 15% of a tokenize run). netfm's memory is bounded by its own settings,
    // so keep freed pages for reuse.
    // SAFETY: sets plain integer options; mimalloc reads them on each decision.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1);
        // No more MADV_HUGEPAGE on the arenas mimalloc maps from now on.
        libmimalloc_sys::mi_option_set(MI_OPTION_ALLOW_THP, 0);
    }
    #[cfg(target_os = "linux")]
    thp::disable_except_advised();
}

/// Asks for transparent huge pages on the whole 2 MiB pages inside `len` bytes at `ptr`
/// (the flow table's slots: about 90 MB touched at random, where 4 KiB pages cost a TLB
/// miss per packet). Does nothing where huge pages could not be limited to such requests
/// (kernels before 6.18: [`tune_memory`] then turns them off altogether) or before
/// `tune_memory`.
pub fn advise_huge_pages(ptr: *const u8, len: usize) {
    #[cfg(target_os = "linux")]
    thp::advise(ptr, len);
    #[cfg(not(target_os = "linux"))]
    let _ = (ptr, len);
}

#[cfg(target_os = "linux")]
mod thp {
    use std::sync::atomic::{AtomicBool, Ordering};

    /// `PR_SET_THP_DISABLE`'s flag (Linux 6.18): off except where `MADV_HUGEPAGE` asks.
    const PR_THP_DISABLE_EXCEPT_ADVISED: libc::c_ulong = 1 << 1;
    const HUGE_PAGE: usize = 2 << 20;

    /// Huge pages are off except in advised ranges.
    static EXCEPT_ADVISED: AtomicBool = AtomicBool::new(false);

    /// Transparent huge pages off for the process: the first touch of a 2 MiB page zeroes
    /// all of it, and most of netfm's memory is touched sparsely (flows, arenas, buffers),
    /// so a tokenize run spent 1-2 s of system time zeroing pages with them (0.5 s without;
    /// see benches/README.md). Where the kernel allows it, ranges that ask for huge pages
    /// still get them; mimalloc asked for its first arena before `main`, so that request is
    /// taken back.
    pub(super) fn disable_except_advised() {
        // SAFETY: PR_SET_THP_DISABLE takes plain integers and only sets a flag of this
        // process; older kernels reject the flag (EINVAL) and nothing changes.
        let except_advised = unsafe {
            libc::prctl(
                libc::PR_SET_THP_DISABLE,
                1 as libc::c_ulong,
                PR_THP_DISABLE_EXCEPT_ADVISED,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        } == 0;
        if !except_advised {
            // SAFETY: as above, without the flag every kernel since 3.15 takes.
            unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
            return;
        }
        unadvise_mapped();
        EXCEPT_ADVISED.store(true, Ordering::Release);
    }

    /// `MADV_NOHUGEPAGE` on every mapping that asked for huge pages so far (`hg` among its
    /// `VmFlags` in /proc/self/smaps).
    fn unadvise_mapped() {
        let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
            return;
        };
        let mut range = None;
        for line in smaps.lines() {
            if let Some(r) = mapping_range(line) {
                range = Some(r);
            } else if let Some(flags) = line.strip_prefix("VmFlags:") {
                if let (Some((start, end)), true) =
                    (range.take(), flags.split_whitespace().any(|f| f == "hg"))
                {
                    // SAFETY: only changes the advice on a range this process has mapped.
                    unsafe {
                        libc::madvise(
                            start as *mut libc::c_void,
                            end - start,
                            libc::MADV_NOHUGEPAGE,
                        )
                    };
                }
            }
        }
    }

    /// The address range of a mapping's header line in smaps (`start-end perms ...`).
    fn mapping_range(line: &str) -> Option<(usize, usize)> {
        let (range, rest) = line.split_once(' ')?;
        let (start, end) = range.split_once('-')?;
        if rest.is_empty() {
            return None;
        }
        let start = usize::from_str_radix(start, 16).ok()?;
        let end = usize::from_str_radix(end, 16).ok()?;
        (start < end).then_some((start, end))
    }

    pub(super) fn advise(ptr: *const u8, len: usize) {
        if !EXCEPT_ADVISED.load(Ordering::Acquire) {
            return;
        }
        let start = (ptr as usize).next_multiple_of(HUGE_PAGE);
        let end = (ptr as usize).saturating_add(len) / HUGE_PAGE * HUGE_PAGE;
        if end > start {
            // SAFETY: only changes the advice on whole pages inside memory the caller owns.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn smaps_header_lines_parse() {
            assert_eq!(
                super::mapping_range("7f00a0000000-7f00a4000000 rw-p 00000000 00:00 0"),
                Some((0x7f00_a000_0000, 0x7f00_a400_0000))
            );
            assert_eq!(
                super::mapping_range("VmFlags: rd wr mr mw me ac sd hg"),
                None
            );
            assert_eq!(super::mapping_range("Size:               4096 kB"), None);
        }
    }
}
