//! The process's peak resident memory, for the reports of `sd generate` and `sd bench`.

/// The process's peak resident memory in bytes (Linux `VmHWM` of `/proc/self/status`), or
/// None where the system does not report it.
pub fn peak_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
