fn main() -> std::process::ExitCode {
    keep_large_allocations_out_of_the_heap();
    runner::cli::main()
}

/// glibc serves large allocations from `mmap` only until the first one is freed; from then on
/// its threshold rises to that size and buffers as large (a 12 MB `/metrics` page for 100,000
/// series, a hash table being resized) come from the heap and stay resident after they are
/// freed. A fixed threshold keeps every allocation over 256 KiB mapped, so it goes back to the
/// system when freed and a scrape leaves no lasting mark on the runner's RSS.
fn keep_large_allocations_out_of_the_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before any other thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
    }
}
