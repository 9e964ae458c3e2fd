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

/// Faults in, on a helper thread, the pages just ahead of where the owner of a reserved
/// region writes next (the flow table's slots: filling them one flow after another faulted
/// and zeroed about 130 MB on the flow stage, the pipeline's critical path, while the other
/// core waited). The helper starts once the owner has filled [`PREFAULT_START`] bytes, so
/// small tables never start it, and stays at most [`PREFAULT_LEAD`] bytes ahead, so the
/// resident memory is what the owner uses plus that lead.
///
/// Populating only maps pages (zero-filled, as the owner's first write would); it never
/// changes memory, so it is harmless even on a range the owner has given up. Where the
/// kernel lacks `MADV_POPULATE_WRITE` (before 5.14), or on any error, the helper stops and
/// pages fault in on first touch as before.
pub struct PrefaultAhead {
    base: usize,
    len: usize,
    /// Bytes from `base` the helper has been asked to populate.
    requested: usize,
    /// Set once prefaulting has stopped for good.
    off: bool,
    #[cfg(target_os = "linux")]
    helper: Option<prefault::Helper>,
}

/// The owner must have filled this many bytes before the helper starts.
pub const PREFAULT_START: usize = 4 << 20;
/// How far ahead of the owner's fill mark the helper populates.
pub const PREFAULT_LEAD: usize = 16 << 20;

impl PrefaultAhead {
    /// Prefaulting for the `len` bytes at `ptr`, which the owner fills from the start.
    pub fn new(ptr: *const u8, len: usize) -> Self {
        PrefaultAhead {
            base: ptr as usize,
            len,
            requested: 0,
            off: !cfg!(target_os = "linux") || len < PREFAULT_START,
            #[cfg(target_os = "linux")]
            helper: None,
        }
    }

    /// The owner has filled the first `filled` bytes of the region, which now starts at
    /// `ptr` (a region that moved, as a vector that grew past its reserve, ends prefaulting).
    #[inline]
    pub fn filled(&mut self, ptr: *const u8, filled: usize) {
        if self.off || filled.saturating_add(PREFAULT_LEAD / 2) <= self.requested {
            return;
        }
        self.request(ptr as usize, filled);
    }

    #[cold]
    fn request(&mut self, ptr: usize, filled: usize) {
        if ptr != self.base {
            self.stop();
            return;
        }
        if filled < PREFAULT_START {
            return;
        }
        let upto = filled.saturating_add(PREFAULT_LEAD).min(self.len);
        if upto <= self.requested {
            return;
        }
        self.requested = upto;
        #[cfg(target_os = "linux")]
        {
            let helper = match &mut self.helper {
                Some(h) => h,
                None => match prefault::Helper::start(
                    "netfm-prefault",
                    self.base,
                    prefault::Populate::Write,
                ) {
                    Some(h) => self.helper.insert(h),
                    None => {
                        self.stop();
                        return;
                    }
                },
            };
            if helper.ask(0, upto).is_none() {
                self.stop();
            }
        }
    }

    /// Ends prefaulting; returns once the helper is done with the region.
    pub fn stop(&mut self) {
        self.off = true;
        // Dropping the helper stops it.
        #[cfg(target_os = "linux")]
        {
            self.helper = None;
        }
    }

    /// Bytes the helper has populated so far (for tests).
    pub fn populated(&self) -> usize {
        #[cfg(target_os = "linux")]
        if let Some(h) = &self.helper {
            return h.done();
        }
        0
    }
}

impl Drop for PrefaultAhead {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(all(test, target_os = "linux"))]
mod prefault_tests {
    use super::{PrefaultAhead, PREFAULT_LEAD, PREFAULT_START};
    use std::time::{Duration, Instant};

    /// Resident pages of `len` bytes at `ptr` (mincore), in bytes.
    fn resident(ptr: *const u8, len: usize) -> usize {
        let page = super::page_size();
        let start = ptr as usize / page * page;
        let pages = (ptr as usize + len - start).div_ceil(page);
        let mut vec = vec![0u8; pages];
        // SAFETY: the range covers memory of a live allocation; mincore only reports.
        let rc =
            unsafe { libc::mincore(start as *mut libc::c_void, pages * page, vec.as_mut_ptr()) };
        assert_eq!(rc, 0);
        vec.iter().filter(|&&v| v & 1 == 1).count() * page
    }

    fn wait_for(p: &PrefaultAhead, bytes: usize) -> bool {
        let t0 = Instant::now();
        while p.populated() < bytes {
            if t0.elapsed() > Duration::from_secs(10) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    /// Whether this kernel takes `MADV_POPULATE_WRITE` (Linux 5.14+).
    fn kernel_populates() -> bool {
        let v: Vec<u8> = Vec::with_capacity(1 << 16);
        let page = super::page_size();
        let start = (v.as_ptr() as usize).next_multiple_of(page);
        // SAFETY: one page inside a live allocation; populating never changes memory.
        unsafe { libc::madvise(start as *mut libc::c_void, page, libc::MADV_POPULATE_WRITE) == 0 }
    }

    #[test]
    fn populates_a_bounded_lead_ahead_of_the_fill_mark() {
        if !kernel_populates() {
            eprintln!("skipped: this kernel has no MADV_POPULATE_WRITE (Linux 5.14+)");
            return;
        }
        let len = 64 << 20;
        let v: Vec<u8> = Vec::with_capacity(len);
        let ptr = v.as_ptr();
        let mut p = PrefaultAhead::new(ptr, len);
        // Small fills never start the helper.
        p.filled(ptr, PREFAULT_START - 1);
        assert_eq!(p.populated(), 0);
        assert!(resident(ptr, len) < PREFAULT_START);
        p.filled(ptr, PREFAULT_START);
        assert!(wait_for(&p, PREFAULT_START + PREFAULT_LEAD));
        let r = resident(ptr, len);
        assert!(r >= PREFAULT_START + PREFAULT_LEAD - (2 << 20), "{r}");
        assert!(r <= PREFAULT_START + PREFAULT_LEAD + (2 << 20), "{r}");
        // Filling on moves the lead along, up to the region's end and no further.
        for filled in (PREFAULT_START..=len).step_by(1 << 20) {
            p.filled(ptr, filled);
        }
        assert!(wait_for(&p, len));
        assert!(resident(ptr, len) >= len - (4 << 10));
        drop(p);
        drop(v);
    }

    #[test]
    fn a_moved_region_ends_prefaulting() {
        let len = 64 << 20;
        let a: Vec<u8> = Vec::with_capacity(len);
        let b: Vec<u8> = Vec::with_capacity(len);
        let mut p = PrefaultAhead::new(a.as_ptr(), len);
        p.filled(b.as_ptr(), PREFAULT_START);
        p.filled(a.as_ptr(), 2 * PREFAULT_START);
        assert_eq!(p.populated(), 0);
        assert!(resident(a.as_ptr(), len) < PREFAULT_START);
        assert!(resident(b.as_ptr(), len) < PREFAULT_START);
    }
}

#[cfg(target_os = "linux")]
pub(crate) mod prefault {
    use std::sync::{Arc, Condvar, Mutex};

    /// Bytes a helper populates per call, publishing its progress after each.
    const CHUNK: usize = 2 << 20;

    /// How a [`Helper`] populates its region.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) enum Populate {
        /// `MADV_POPULATE_WRITE` on memory the owner reserved (anonymous, zero-filled): whole
        /// pages inside the region only; the partial last page faults in on first touch.
        Write,
        /// `MADV_POPULATE_READ` on a file mapping, which covers the file's last page whole:
        /// offsets below the helper's progress are safe to read.
        Read,
    }

    #[derive(Default)]
    struct State {
        /// Populate up to this offset.
        upto: usize,
        /// Populated up to this offset.
        done: usize,
        /// The owner has let go of the pages before this offset (see [`Helper::leave`]).
        left: usize,
        stop: bool,
        /// The helper has stopped (populating failed).
        failed: bool,
    }

    /// A thread that populates the pages of a region ahead of its owner, so that the owner's
    /// thread spends its time on its own work.
    /// Dropping it stops the thread and waits for it.
    pub(crate) struct Helper {
        shared: Arc<(Mutex<State>, Condvar)>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Helper {
        /// A helper thread named `name` for the region at `base`.
        pub(crate) fn start(name: &str, base: usize, how: Populate) -> Option<Helper> {
            let shared = Arc::new((Mutex::new(State::default()), Condvar::new()));
            let theirs = shared.clone();
            let thread = std::thread::Builder::new()
                .name(name.into())
                .spawn(move || {
                    // The lowest priority: the helper should take only time the owner's
                    // stage and the others leave idle (where it falls behind, the owner
                    // populates what it needs itself). Nice values are per thread on Linux.
                    // SAFETY: changes only this thread's nice value.
                    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
                    run(base, how, &theirs)
                })
                .ok()?;
            Some(Helper {
                shared,
                thread: Some(thread),
            })
        }

        /// Asks for the region populated up to `upto`; the owner has itself populated
        /// everything before `ready` (the helper goes on from there). Returns how far it is
        /// populated so far, or `None` once the helper has failed.
        pub(crate) fn ask(&self, ready: usize, upto: usize) -> Option<usize> {
            let (lock, cv) = &*self.shared;
            let mut st = lock.lock().ok()?;
            if st.failed {
                return None;
            }
            st.done = st.done.max(ready);
            if upto > st.upto {
                st.upto = upto;
                cv.notify_one();
            }
            Some(st.done)
        }

        /// The owner is about to release the pages before `to` and will not touch them
        /// again. A helper that was behind and populates some of them afterwards releases
        /// them itself, so that what stays mapped is bounded by the owner's releases
        /// however late the helper runs. For [`Populate::Read`] regions only.
        pub(crate) fn leave(&self, to: usize) {
            if let Ok(mut st) = self.shared.0.lock() {
                st.left = st.left.max(to);
            }
        }

        pub(crate) fn done(&self) -> usize {
            self.shared.0.lock().map(|st| st.done).unwrap_or(0)
        }
    }

    impl Drop for Helper {
        /// Stops the helper; returns once it no longer touches the region.
        fn drop(&mut self) {
            let (lock, cv) = &*self.shared;
            if let Ok(mut st) = lock.lock() {
                st.stop = true;
                cv.notify_one();
            }
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }

    fn run(base: usize, how: Populate, shared: &(Mutex<State>, Condvar)) {
        let (lock, cv) = shared;
        let page = super::page_size();
        loop {
            let (from, to) = {
                let Ok(mut st) = lock.lock() else { return };
                while !st.stop && st.upto <= st.done {
                    st = match cv.wait(st) {
                        Ok(st) => st,
                        Err(_) => return,
                    };
                }
                if st.stop {
                    return;
                }
                (st.done, st.upto.min(st.done.saturating_add(CHUNK)))
            };
            if to <= from {
                continue;
            }
            let start = (base + from) / page * page;
            let (end, advice) = match how {
                // The page holding `base` is mapped (the region starts in it).
                Populate::Write => ((base + to) / page * page, libc::MADV_POPULATE_WRITE),
                Populate::Read => ((base + to).next_multiple_of(page), libc::MADV_POPULATE_READ),
            };
            // SAFETY: the range lies in memory the owner maps (or, if the owner gave it up
            // meanwhile, memory this process maps or an error); populating maps pages
            // without changing their contents.
            let ok = end <= start
                || unsafe { libc::madvise(start as *mut libc::c_void, end - start, advice) } == 0;
            let left = {
                let Ok(mut st) = lock.lock() else { return };
                if !ok {
                    st.failed = true;
                    return;
                }
                st.done = st.done.max(to);
                st.left
            };
            // The owner let go of part of this range while it was populated: drop that part
            // again (the owner set `left` before releasing, so either its release or this
            // one comes after the populating).
            let drop_end = (base + to.min(left)) / page * page;
            if how == Populate::Read && drop_end > start {
                // SAFETY: pages of a private file mapping the owner no longer reads; if
                // touched again they read back from the file.
                unsafe {
                    libc::madvise(
                        start as *mut libc::c_void,
                        drop_end - start,
                        libc::MADV_DONTNEED,
                    )
                };
            }
        }
    }
}

/// The system's page size.
pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf reads a constant of the system.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(p).ok().filter(|&p| p > 0).unwrap_or(4096)
}

#[cfg(target_os = "linux")]
pub(crate) mod thp {
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
    pub(crate) fn mapping_range(line: &str) -> Option<(usize, usize)> {
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

/// SIGINT and SIGTERM as a request to stop: a run that catches them ends its open flows,
/// writes them and closes its outputs under their final names, instead of dying with
/// half-written parts. While an [`InterruptGuard`] lives the signals set a flag instead of
/// ending the process; [`interrupted`] reads it. They are blocked on the threads started
/// after the guard (so that they land on a thread that unblocks them, the capture reader,
/// whose blocking read on a pipe they then interrupt).
pub mod signals {
    use std::sync::atomic::{AtomicI32, Ordering};

    static CAUGHT: AtomicI32 = AtomicI32::new(0);

    /// The signal that asked the run to stop, if one did.
    pub fn interrupted() -> Option<i32> {
        match CAUGHT.load(Ordering::Relaxed) {
            0 => None,
            s => Some(s),
        }
    }

    /// A signal's name for messages.
    pub fn name(signal: i32) -> &'static str {
        #[cfg(target_os = "linux")]
        {
            match signal {
                libc::SIGINT => "SIGINT",
                libc::SIGTERM => "SIGTERM",
                _ => "a signal",
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = signal;
            "a signal"
        }
    }

    #[cfg(target_os = "linux")]
    extern "C" fn on_signal(signal: libc::c_int) {
        // Only an atomic store: async-signal-safe.
        CAUGHT.store(signal, Ordering::Relaxed);
    }

    /// Catches SIGINT and SIGTERM until dropped (then the default actions return).
    pub struct InterruptGuard {
        _private: (),
    }

    impl InterruptGuard {
        /// Installs the handlers (without `SA_RESTART`, so a blocked read returns
        /// `EINTR`) and blocks both signals on the calling thread, and so on the threads
        /// it starts; the reader thread calls [`unblock_here`].
        pub fn install() -> InterruptGuard {
            CAUGHT.store(0, Ordering::Relaxed);
            #[cfg(target_os = "linux")]
            // SAFETY: sigaction and pthread_sigmask with valid, zeroed-then-filled structs;
            // the handler only stores an atomic.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
                libc::sigemptyset(&mut action.sa_mask);
                action.sa_flags = 0;
                libc::sigaction(libc::SIGINT, &action, std::ptr::null_mut());
                libc::sigaction(libc::SIGTERM, &action, std::ptr::null_mut());
                let set = stop_set();
                libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            }
            InterruptGuard { _private: () }
        }
    }

    #[cfg(target_os = "linux")]
    fn stop_set() -> libc::sigset_t {
        // SAFETY: sigset manipulation on a local.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
            set
        }
    }

    /// Lets SIGINT and SIGTERM reach the calling thread again.
    pub fn unblock_here() {
        #[cfg(target_os = "linux")]
        // SAFETY: pthread_sigmask with a valid set.
        unsafe {
            let set = stop_set();
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        }
    }

    impl Drop for InterruptGuard {
        fn drop(&mut self) {
            #[cfg(target_os = "linux")]
            // SAFETY: restores the default actions and unblocks the signals.
            unsafe {
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                libc::signal(libc::SIGTERM, libc::SIG_DFL);
                let set = stop_set();
                libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            }
        }
    }
}
