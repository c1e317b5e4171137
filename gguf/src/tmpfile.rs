//! Temporary files for atomic writes: an output is written to a temp file in
//! its own folder and renamed onto the target only when complete, so a crash
//! (even `kill -9`) never leaves a partial file at the target path.
//!
//! A temp file of target `DIR/NAME` is `DIR/.NAME.tmp-<pid>-<random>`: the
//! leading dot hides it, the name says whose it is, and the pid says which
//! process wrote it. [`remove_orphans`] (called before each new write of the
//! same target) deletes those whose process is gone; where that cannot be
//! known (no `/proc`), they are left alone, and ignored: no reader looks for them.

use std::collections::hash_map::RandomState;
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::hash::BuildHasher;
use std::io;
use std::path::{Path, PathBuf};

/// The folder holding `target` (`.` for a bare file name).
pub fn parent_dir(target: &Path) -> PathBuf {
    match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn prefix(file_name: &OsStr) -> String {
    format!(".{}.tmp-", file_name.to_string_lossy())
}

/// The pid in a temp file name of `file_name`'s, when `name` is one:
/// `.NAME.tmp-<pid>-<random hex>`.
pub fn temp_owner(file_name: &OsStr, name: &OsStr) -> Option<u32> {
    let name = name.to_str()?;
    let rest = name.strip_prefix(prefix(file_name).as_str())?;
    let (pid, random) = rest.split_once('-')?;
    if random.is_empty() || !random.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    pid.parse().ok()
}

/// Whether process `pid` is alive: `Some` where `/proc` tells, else `None`.
fn process_alive(pid: u32) -> Option<bool> {
    if !Path::new("/proc/self").exists() {
        return None;
    }
    Some(Path::new(&format!("/proc/{pid}")).exists())
}

/// Removes the temp files of `target` left by processes that no longer run
/// (killed mid-write). Returns the paths removed. Files of live processes (a
/// concurrent writer) and anything not named like a temp file are kept.
pub fn remove_orphans(target: &Path) -> Vec<PathBuf> {
    let Some(file_name) = target.file_name() else {
        return Vec::new();
    };
    let dir = parent_dir(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let me = std::process::id();
    let mut removed = Vec::new();
    for e in entries.flatten() {
        let Some(pid) = temp_owner(file_name, &e.file_name()) else {
            continue;
        };
        if pid == me || process_alive(pid) != Some(false) {
            continue;
        }
        let p = e.path();
        if e.file_type().is_ok_and(|t| t.is_file()) && std::fs::remove_file(&p).is_ok() {
            removed.push(p);
        }
    }
    removed
}

/// Creates a new temp file for `target` (never an existing one), after
/// removing orphans of earlier runs. Returns its path and the open file.
pub fn create_temp(target: &Path) -> io::Result<(PathBuf, File)> {
    let file_name = target.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: the path has no file name", target.display()),
        )
    })?;
    remove_orphans(target);
    let dir = parent_dir(target);
    let state = RandomState::new();
    let mut last = None;
    for attempt in 0u32..16 {
        let random = state.hash_one((std::process::id(), attempt, std::time::SystemTime::now()));
        let tmp = dir.join(format!(
            "{}{}-{:016x}",
            prefix(file_name),
            std::process::id(),
            random
        ));
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free temp file name")))
}

/// Writes `bytes` to `target` atomically: a temp file, fsync, rename, then a
/// best-effort fsync of the folder. On error the temp file is removed.
pub fn write_atomic(target: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let (tmp, mut f) = create_temp(target)?;
    let res = (|| {
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, target)
    })();
    match res {
        Ok(()) => {
            sync_dir(target);
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Makes a rename in `target`'s folder durable; some filesystems cannot sync
/// a directory, which is not an error.
pub fn sync_dir(target: &Path) {
    if let Ok(d) = File::open(parent_dir(target)) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_are_recognised_and_nothing_else() {
        let n = OsStr::new("out.gguf");
        assert_eq!(
            temp_owner(n, OsStr::new(".out.gguf.tmp-123-00ff")),
            Some(123)
        );
        assert_eq!(temp_owner(n, OsStr::new(".out.gguf.tmp-123-")), None);
        assert_eq!(temp_owner(n, OsStr::new(".out.gguf.tmp-123-xyz")), None);
        assert_eq!(temp_owner(n, OsStr::new(".out.gguf.tmp-abc-00")), None);
        assert_eq!(temp_owner(n, OsStr::new(".other.gguf.tmp-1-00")), None);
        assert_eq!(temp_owner(n, OsStr::new("out.gguf")), None);
    }

    #[test]
    fn orphans_of_dead_processes_go_the_rest_stays() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("x.bin");
        // pid 0 is never a user process; u32::MAX - 1 is above any pid_max.
        let dead = dir.path().join(format!(".x.bin.tmp-{}-ab12", u32::MAX - 1));
        let mine = dir
            .path()
            .join(format!(".x.bin.tmp-{}-ab12", std::process::id()));
        let other = dir.path().join(".y.bin.tmp-99999999-ab12");
        let plain = dir.path().join("x.bin.tmp-1-2");
        for p in [&dead, &mine, &other, &plain] {
            std::fs::write(p, b"partial").unwrap();
        }
        let removed = remove_orphans(&target);
        if process_alive(1).is_some() {
            assert_eq!(removed, vec![dead.clone()]);
            assert!(!dead.exists());
        }
        assert!(mine.exists() && other.exists() && plain.exists());

        write_atomic(&target, b"whole").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"whole");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| temp_owner(OsStr::new("x.bin"), n) == Some(std::process::id()))
            .collect();
        assert_eq!(left, vec![mine.file_name().unwrap().to_owned()]);
    }
}
