//! Process memory figures from /proc/self/status (Linux). `None` elsewhere.

fn status_kib(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Peak resident set size (VmHWM) in KiB.
pub fn peak_rss_kib() -> Option<u64> {
    status_kib("VmHWM:")
}

/// Current resident set size (VmRSS) in KiB.
pub fn rss_kib() -> Option<u64> {
    status_kib("VmRSS:")
}
