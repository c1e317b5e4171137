//! The `convert` and `quantize` commands end to end: exit status, messages,
//! summary, --force, --quiet, and a full disk (RLIMIT_FSIZE) leaving nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mamba-gguf")
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hf")
        .join(name)
}

fn run(args: &[&str]) -> (bool, String) {
    let o = Command::new(bin()).args(args).output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned() + &String::from_utf8_lossy(&o.stdout),
    )
}

#[test]
fn convert_then_quantize() {
    let tmp = tempfile::tempdir().unwrap();
    let f32 = tmp.path().join("tied-f32.gguf");
    let dir = fixture("mamba-tiny-tied");
    let (ok, msg) = run(&[
        "convert",
        dir.to_str().unwrap(),
        "-o",
        f32.to_str().unwrap(),
        "--type",
        "f32",
    ]);
    assert!(ok, "{msg}");
    assert!(msg.contains("bits per weight"), "summary missing: {msg}");
    let f = gguf::GgufFile::open(&f32).unwrap();
    assert_eq!(f.get_u32("general.file_type").unwrap(), 0);

    // Existing output: refused without --force, file untouched.
    let before = std::fs::read(&f32).unwrap();
    let (ok, msg) = run(&[
        "convert",
        dir.to_str().unwrap(),
        "-o",
        f32.to_str().unwrap(),
        "--type",
        "q4_0",
    ]);
    assert!(!ok);
    assert!(
        msg.contains("--force") && msg.contains("tied-f32.gguf"),
        "{msg}"
    );
    assert_eq!(std::fs::read(&f32).unwrap(), before);

    // quantize: F32 -> Q4_K_M, quiet.
    let q = tmp.path().join("tied-q4km.gguf");
    let (ok, msg) = run(&[
        "quantize",
        f32.to_str().unwrap(),
        q.to_str().unwrap(),
        "q4_k_m",
        "--quiet",
    ]);
    assert!(ok, "{msg}");
    assert!(msg.trim().is_empty(), "--quiet printed: {msg}");
    let g = gguf::GgufFile::open(&q).unwrap();
    assert_eq!(g.get_u32("general.file_type").unwrap(), 15);
    assert_eq!(
        g.tensor("blk.0.ssm_in.weight").unwrap().ty,
        gguf::GgmlType::Q4_K
    );

    // An already-quantized input is refused unless --allow-requantize.
    let q2 = tmp.path().join("again.gguf");
    let (ok, msg) = run(&[
        "quantize",
        q.to_str().unwrap(),
        q2.to_str().unwrap(),
        "q4_0",
    ]);
    assert!(!ok);
    assert!(
        msg.contains("--allow-requantize") && msg.contains("already quantized"),
        "{msg}"
    );
    assert!(!q2.exists());
    let (ok, msg) = run(&[
        "quantize",
        q.to_str().unwrap(),
        q2.to_str().unwrap(),
        "q4_0",
        "--allow-requantize",
        "-q",
    ]);
    assert!(ok, "{msg}");

    // Unknown type.
    let (ok, msg) = run(&[
        "quantize",
        f32.to_str().unwrap(),
        q2.to_str().unwrap(),
        "q3_k_x",
        "--force",
    ]);
    assert!(!ok && msg.contains("unknown type 'q3_k_x'"), "{msg}");
}

#[test]
fn bad_checkpoint_fails_with_a_message() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x.gguf");
    let (ok, msg) = run(&[
        "convert",
        tmp.path().to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(msg.contains("config.json"), "{msg}");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

#[test]
fn full_disk_leaves_no_file() {
    // RLIMIT_FSIZE stands in for a full disk: writes past 1 MiB fail (EFBIG;
    // SIGXFSZ ignored so the write returns the error instead of killing us).
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("big.gguf");
    let cmd = format!(
        "trap '' XFSZ; ulimit -f 1024; exec '{}' convert '{}' -o '{}' --type f32 --quiet",
        bin(),
        fixture("falcon-mamba-tiny").display(),
        out.display()
    );
    let o = Command::new("sh").args(["-c", &cmd]).output().unwrap();
    let msg = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "should fail: {msg}");
    assert!(msg.contains("big.gguf"), "{msg}");
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn ctrl_c_stops_and_leaves_nothing() {
    // SIGINT once the temp output exists (the header is written and tensors
    // are being encoded). A run that finishes before the signal lands is
    // retried; an interrupted one must fail cleanly.
    let dir = fixture("falcon-mamba-tiny");
    for _attempt in 0..5 {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("int.gguf");
        let child = Command::new(bin())
            .args([
                "convert",
                dir.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
            ])
            .args(["--type", "q4_k_m", "--threads", "1", "--quiet"])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let t0 = std::time::Instant::now();
        while std::fs::read_dir(tmp.path()).unwrap().count() == 0 && t0.elapsed().as_secs() < 20 {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let _ = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        let o = child.wait_with_output().unwrap();
        if o.status.success() {
            continue; // finished first: try again
        }
        let msg = String::from_utf8_lossy(&o.stderr);
        assert!(
            msg.contains("interrupted") && msg.contains("int.gguf"),
            "{msg}"
        );
        let left: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
        return;
    }
    panic!("the conversion always finished before SIGINT arrived");
}
