//! Process-wide memory settings every netfm entry point applies first (the binary, and the
//! stage benchmarks in `examples/`, so that their figures carry over to the binary).

/// `mi_option_purge_delay` in the mimalloc v3 that libmimalloc-sys 0.1.49 builds.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps mimalloc's freed pages for reuse and turns transparent huge pages off. Call it at
/// the start of `main`, in a program whose global allocator is mimalloc.
pub fn tune_memory() {
    // Flows are freed on the writer thread while the flow table allocates new ones: with
    // purging, mimalloc hands those pages back to the OS and faults fresh zeroed pages right
    // after (about 15% of a tokenize run). netfm's memory is bounded by its own settings,
    // so keep freed pages for reuse.
    // SAFETY: sets a plain integer option; mimalloc reads it on each purge decision.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    // No transparent huge pages: mimalloc asks for them on its arenas, and the first touch of
    // each 2 MiB page then zeroes all of it. The flow table touches its memory sparsely, so
    // with THP a tokenize run spent 1-2 s of system time zeroing pages (0.5 s without; see
    // benches/README.md). Applies to the whole process, mappings made before it included.
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and only sets a flag of this process.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
