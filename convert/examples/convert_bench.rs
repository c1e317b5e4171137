//! By-hand benchmark (never a test): convert a checkpoint with the library,
//! printing one line per tensor and the summary. The CLI (`mamba-gguf
//! convert`) runs the same code with a progress bar.
//!
//!     cargo run --release -p convert --example convert_bench -- HF_DIR OUT.gguf q4_k_m [THREADS]

use std::sync::atomic::AtomicBool;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 4 {
        eprintln!("usage: convert_bench HF_DIR OUT.gguf TYPE [THREADS]");
        std::process::exit(2);
    }
    let Some(ft) = convert::FileType::parse(&a[3]) else {
        eprintln!("unknown type {}", a[3]);
        std::process::exit(2);
    };
    let opts = convert::ConvertOptions {
        file_type: ft,
        pure: false,
        force: true,
        threads: a.get(4).and_then(|t| t.parse().ok()),
        arch: None,
        imatrix: None,
    };
    let cancel = AtomicBool::new(false);
    let r = convert::convert(
        std::path::Path::new(&a[1]),
        std::path::Path::new(&a[2]),
        &opts,
        &cancel,
        &mut |p| {
            if let convert::Progress::Warning(w) = p {
                eprintln!("warning: {w}");
            }
        },
    );
    match r {
        Ok(s) => eprintln!(
            "{} tensors, {:.1} MiB, {:.3} bits/weight, {:.1} s",
            s.tensors,
            s.file_bytes as f64 / 1048576.0,
            s.bits_per_weight(),
            s.seconds
        ),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
