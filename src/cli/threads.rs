//! How many threads the inference commands use by default: one per
//! physical core among the CPUs this process may run on. A decode step
//! streams the weights from memory, which a core's second hardware thread
//! does not make faster, and every parallel op of a step ends at a barrier
//! that waits for the slowest thread, which two threads sharing a core
//! make slower (llama.cpp defaults to the physical cores for the same
//! reason).

/// The default thread count: the CPUs this process may use (affinity and
/// cgroup limits, `available_parallelism`) times the share of the
/// machine's online CPUs that are distinct physical cores (Linux sysfs
/// topology). Where the topology cannot be read, every usable CPU.
pub fn default_threads() -> usize {
    let usable = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    threads_for(usable, &cpu_cores())
}

/// `usable` scaled by physical cores per logical CPU of `cores` (one
/// `(package, core)` pair per online logical CPU; empty: unknown), rounded
/// to the nearest, at least 1.
pub fn threads_for(usable: usize, cores: &[(u32, u32)]) -> usize {
    let logical = cores.len();
    let mut distinct = cores.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    let physical = distinct.len();
    if logical == 0 || physical == 0 {
        return usable.max(1);
    }
    ((usable * physical + logical / 2) / logical).max(1)
}

/// `(physical_package_id, core_id)` of every online logical CPU, from
/// `/sys/devices/system/cpu/cpuN/topology` (empty where unreadable).
fn cpu_cores() -> Vec<(u32, u32)> {
    let Ok(dir) = std::fs::read_dir("/sys/devices/system/cpu") else {
        return Vec::new();
    };
    let read = |p: std::path::PathBuf| -> Option<u32> {
        std::fs::read_to_string(p).ok()?.trim().parse().ok()
    };
    let mut cores = Vec::new();
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(num) = name.to_str().and_then(|n| n.strip_prefix("cpu")) else {
            continue;
        };
        if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        // An offline CPU has no topology directory.
        let topo = entry.path().join("topology");
        if let (Some(pkg), Some(core)) = (
            read(topo.join("physical_package_id")),
            read(topo.join("core_id")),
        ) {
            cores.push((pkg, core));
        }
    }
    cores
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_way_smt_halves_the_threads() {
        // 4 cores x 2 threads, all usable: 4; half the CPUs usable: 2.
        let cores: Vec<(u32, u32)> = (0..8).map(|i| (0, i % 4)).collect();
        assert_eq!(threads_for(8, &cores), 4);
        assert_eq!(threads_for(4, &cores), 2);
        assert_eq!(threads_for(1, &cores), 1);
    }

    #[test]
    fn cores_are_told_apart_by_package_and_no_smt_keeps_every_cpu() {
        // Two packages numbering their cores alike, one thread each.
        let cores: Vec<(u32, u32)> = (0..8).map(|i| (i / 4, i % 4)).collect();
        assert_eq!(threads_for(8, &cores), 8);
        assert_eq!(threads_for(3, &cores), 3);
    }

    #[test]
    fn hybrid_parts_count_each_core_once() {
        // 8 two-thread cores and 8 one-thread cores: 24 CPUs, 16 cores.
        let mut cores: Vec<(u32, u32)> = (0..16).map(|i| (0, i % 8)).collect();
        cores.extend((8..16).map(|c| (0, c)));
        assert_eq!(threads_for(24, &cores), 16);
    }

    #[test]
    fn an_unknown_topology_uses_every_usable_cpu() {
        assert_eq!(threads_for(6, &[]), 6);
        assert_eq!(threads_for(0, &[]), 1);
    }
}
