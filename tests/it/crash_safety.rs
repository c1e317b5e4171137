//! Crash safety: `kill -9` at random points of `convert`, `quantize` and a
//! state save never leaves a file at the output path (outputs are written to
//! `.NAME.tmp-<pid>-<random>` beside it and renamed only when complete), and
//! the next run succeeds, removing the orphaned temp files of killed runs.
//!
//! The kill points are random (the seed is printed; set CRASH_SEED to replay)
//! and bounded: 8 kills per command. Half of them wait until the temp file
//! exists, so some kills always land mid-write.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use gguf::tmpfile::temp_owner;
use gguf::GgufFile;
use mamba_gguf::{state_file, Model, Session};

use crate::runtime_common::llamacpp_gguf;

const KILLS: usize = 8;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mamba-gguf"))
}

struct Rng(u64);

impl Rng {
    fn new(what: &str) -> Rng {
        let seed = std::env::var("CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            })
            | 1;
        eprintln!("{what}: CRASH_SEED={seed}");
        Rng(seed)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The temp files of `target` now in its folder.
fn temps_of(target: &Path) -> Vec<PathBuf> {
    let name = target.file_name().expect("a file name");
    let dir = target.parent().expect("a folder");
    std::fs::read_dir(dir)
        .expect("the folder reads")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.file_name().and_then(|n| temp_owner(name, n)).is_some())
        .collect()
}

fn run_ok(mut cmd: Command) -> Duration {
    let t0 = Instant::now();
    let out = cmd.output().expect("the binary runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    t0.elapsed()
}

#[cfg(unix)]
fn killed_by_sigkill(s: &ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    s.signal() == Some(9)
}

#[cfg(not(unix))]
fn killed_by_sigkill(s: &ExitStatus) -> bool {
    !s.success()
}

/// Runs `make()` KILLS times, SIGKILLing it at a random point of a run that
/// takes about `full`. After each kill, either nothing is at `out` or (the
/// kill came after the rename) exactly the clean run's bytes: never a partial
/// file. Returns (kills that landed before the process exited, kills that
/// left a temp file behind).
fn kill_loop(
    what: &str,
    make: &dyn Fn() -> Command,
    out: &Path,
    full: Duration,
    clean: &[u8],
) -> (usize, usize) {
    let mut rng = Rng::new(what);
    let (mut landed, mut orphans) = (0, 0);
    for i in 0..KILLS {
        let mut child = make()
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the binary starts");
        let t0 = Instant::now();
        if i % 2 == 1 {
            // Wait for this run's temp file, then kill within the rest of the run.
            let pid = child.id();
            let name = out.file_name().unwrap_or_default();
            while !temps_of(out)
                .iter()
                .any(|p| p.file_name().and_then(|n| temp_owner(name, n)) == Some(pid))
                && t0.elapsed() < Duration::from_secs(30)
                && child.try_wait().ok().flatten().is_none()
            {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        let rest = full.saturating_sub(t0.elapsed());
        std::thread::sleep(rest.mul_f64(rng.unit()));
        let _ = child.kill(); // SIGKILL on unix
        let status = child.wait().expect("the child is reaped");
        if killed_by_sigkill(&status) {
            landed += 1;
            orphans += usize::from(!temps_of(out).is_empty());
        } else {
            assert!(status.success(), "{what}: run {i} failed: {status}");
        }
        if out.exists() {
            let got = std::fs::read(out).expect("the output reads");
            assert!(
                got == clean,
                "{what}: kill {i} after {:?} ({status}) left a partial file at {} ({} of {} bytes)",
                t0.elapsed(),
                out.display(),
                got.len(),
                clean.len()
            );
            std::fs::remove_file(out).expect("remove the finished output");
        }
    }
    eprintln!("{what}: {landed} of {KILLS} kills landed mid-run, {orphans} left a temp file");
    (landed, orphans)
}

/// Two clean runs: the output's bytes and the shorter run's time.
fn clean_runs(make: &dyn Fn() -> Command, out: &Path) -> (Vec<u8>, Duration) {
    let t1 = run_ok(make());
    let first = std::fs::read(out).expect("the output exists");
    std::fs::remove_file(out).expect("remove the output");
    let t2 = run_ok(make());
    let second = std::fs::read(out).expect("the output exists");
    std::fs::remove_file(out).expect("remove the output");
    assert!(first == second, "two clean runs wrote different bytes");
    (first, t1.min(t2))
}

/// After the kills: the next run succeeds, its output equals a clean run's,
/// and no temp file of a killed run is left.
fn next_run_cleans_up(what: &str, cmd: Command, out: &Path, clean: &[u8]) {
    run_ok(cmd);
    let got = std::fs::read(out).expect("the output exists");
    assert!(
        got == clean,
        "{what}: the output differs from a clean run's"
    );
    // The folder holds only the output: every killed run's temp file is gone.
    let dir = out.parent().expect("a folder");
    let left: Vec<_> = std::fs::read_dir(dir)
        .expect("the folder reads")
        .map(|e| e.expect("an entry").file_name())
        .collect();
    assert_eq!(
        left,
        vec![out.file_name().expect("a file name").to_owned()],
        "{what}: files besides the output after the next run"
    );
}

#[test]
fn kill_9_during_convert_never_leaves_an_output() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.gguf");
    let hf = root().join("tests/fixtures/hf/falcon-mamba-tiny");
    let make = || {
        let mut c = bin();
        c.arg("convert").arg(&hf).arg("-o").arg(&out).args([
            "--type",
            "q4_k_m",
            "-q",
            "--threads",
            "1",
        ]);
        c
    };
    let (clean, full) = clean_runs(&make, &out);
    let (_, orphans) = kill_loop("convert", &make, &out, full, &clean);
    assert!(
        orphans > 0,
        "no kill left a temp file: the cleanup was not exercised"
    );
    next_run_cleans_up("convert", make(), &out, &clean);
    let f = GgufFile::open(&out).expect("the final output reads");
    assert!(!f.tensors().is_empty());
}

#[test]
fn kill_9_during_quantize_never_leaves_an_output() {
    let dir = tempfile::tempdir().unwrap();
    let input = llamacpp_gguf("falcon-mamba-tiny-f32.gguf");
    let out = dir.path().join("q.gguf");
    let make = || {
        let mut c = bin();
        c.arg("quantize")
            .arg(&input)
            .arg(&out)
            .args(["q4_k_m", "-q", "--threads", "1"]);
        c
    };
    let (clean, full) = clean_runs(&make, &out);
    let (_, orphans) = kill_loop("quantize", &make, &out, full, &clean);
    assert!(
        orphans > 0,
        "no kill left a temp file: the cleanup was not exercised"
    );
    next_run_cleans_up("quantize", make(), &out, &clean);
    let f = GgufFile::open(&out).expect("the final output reads");
    assert!(!f.tensors().is_empty());
}

/// A state file is whole or absent after kill -9 of `run --save-state`, and
/// the next save removes temp files of killed runs.
#[test]
fn kill_9_during_a_state_save_never_leaves_a_partial_state() {
    let dir = tempfile::tempdir().unwrap();
    let model_path = llamacpp_gguf("falcon-mamba-tiny-f32.gguf");
    let state = dir.path().join("ctx.state");
    let make = || {
        let mut c = bin();
        c.arg("run")
            .arg("-m")
            .arg(&model_path)
            .args(["-p", "The falcon flies", "-n", "0", "-t", "1", "--json"])
            .arg("--save-state")
            .arg(&state);
        c
    };
    let model = Model::load(&model_path).expect("fixture loads");
    let loads = |p: &Path| {
        let mut s = Session::new(&model);
        state_file::load(p, &mut s).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    };
    let (clean, full) = clean_runs(&make, &state);
    // Each kill, mid-run or not, is checked: no state file, or a whole one.
    // How many land depends on the machine (a run takes ~0.1 s).
    kill_loop("state save", &make, &state, full, &clean);
    // The save itself is short, so a kill inside it is luck: plant an orphan
    // as a killed save leaves it (a dead pid) and check the next save removes it.
    let orphan = dir
        .path()
        .join(format!(".ctx.state.tmp-{}-00ab", u32::MAX - 1));
    std::fs::write(&orphan, &clean[..clean.len() / 2]).unwrap();
    assert_eq!(
        temp_owner(OsStr::new("ctx.state"), orphan.file_name().unwrap()),
        Some(u32::MAX - 1)
    );
    next_run_cleans_up("state save", make(), &state, &clean);
    loads(&state);
}
