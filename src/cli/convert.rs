//! `mamba-gguf convert HF_DIR -o OUT.gguf [--type q4_k_m] [--threads N]
//! [--pure] [--force] [--quiet]`: a Hugging Face Falcon Mamba / Mamba
//! checkpoint folder to GGUF in one streaming pass.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, Result};
use convert::config::Variant;
use convert::{ConvertOptions, FileType, Progress, Summary};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Hugging Face checkpoint folder (config.json, *.safetensors, tokenizer.json).
    pub hf_dir: PathBuf,
    /// Output GGUF file.
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// Output type: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q2_k_s,
    /// q3_k_s, q3_k_m, q3_k_l, q4_k_s, q4_k_m, q5_k_s, q5_k_m, q6_k, iq4_nl,
    /// iq4_xs, iq3_xxs, iq3_xs, iq3_s, iq3_m, iq2_xxs, iq2_xs, iq2_s, iq2_m, iq1_s, iq1_m, tq1_0, tq2_0
    /// (llama-quantize's names; the iq2 and iq1 types, iq3_xxs and q2_k_s need --imatrix; q3_k, q4_k, q5_k mean
    /// their _m).
    #[arg(long = "type", short = 't', default_value = "q4_k_m")]
    pub ty: String,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Give every matrix the one type (no Q6_K output head).
    #[arg(long)]
    pub pure: bool,
    /// Overwrite an existing output file.
    #[arg(long)]
    pub force: bool,
    /// An importance matrix (GGUF from `mamba-gguf imatrix` or llama-imatrix,
    /// or the older .dat form): each block's scale is fitted weighting each
    /// column by it, as `llama-quantize --imatrix` does (same bytes).
    /// Needed for q2_k_s.
    #[arg(long, value_name = "FILE")]
    pub imatrix: Option<PathBuf>,
    /// No progress bar or summary.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Convert as this architecture whatever config.json says: falcon-mamba
    /// (dt/B/C RMS norm) or mamba (plain Mamba-1).
    #[arg(long, value_parser = parse_arch)]
    pub arch: Option<Variant>,
}

fn parse_arch(s: &str) -> std::result::Result<Variant, String> {
    Variant::parse(s)
        .ok_or_else(|| format!("unknown architecture '{s}' (expected falcon-mamba or mamba)"))
}

/// Parse a type name or list the valid ones.
pub fn parse_type(s: &str) -> Result<FileType> {
    FileType::parse(s).ok_or_else(|| {
        let names: Vec<&str> = convert::mix::ALL_TYPES.iter().map(|t| t.name()).collect();
        anyhow!("unknown type '{s}' (one of: {})", names.join(", "))
    })
}

/// A Ctrl-C flag: the first Ctrl-C asks the conversion to stop (it removes its
/// temp file and returns an error).
pub fn cancel_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    // A second handler cannot be installed; then Ctrl-C simply kills us, and
    // the writer's temp file is left (named .<out>.tmp-<pid>-<random>), and
    // the next write of the same output removes it.
    let _ = ctrlc::set_handler(move || f.store(true, Ordering::SeqCst));
    flag
}

/// A progress bar fed by the library's callback.
pub struct Bar {
    bar: ProgressBar,
    quiet: bool,
    tensors: usize,
}

impl Bar {
    pub fn new(quiet: bool) -> Bar {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        if quiet {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Bar {
            bar,
            quiet,
            tensors: 0,
        }
    }

    pub fn on(&mut self, p: Progress<'_>) {
        match p {
            Progress::Start {
                tensors,
                total_bytes,
            } => {
                self.tensors = tensors;
                self.bar.set_length(total_bytes);
            }
            Progress::Tensor {
                index,
                name,
                ty,
                dims,
            } => self.bar.set_message(format!(
                "[{}/{}] {name} {} {dims:?}",
                index + 1,
                self.tensors,
                ty.name()
            )),
            Progress::Bytes { done } => self.bar.set_position(done),
            Progress::Warning(w) => {
                // Warnings are shown even with --quiet.
                self.bar.suspend(|| eprintln!("warning: {w}"));
            }
        }
    }

    pub fn finish(&self, s: &Summary) {
        self.bar.finish_and_clear();
        if !self.quiet {
            eprintln!(
                "wrote {}: {} tensors, {:.2} MiB, {:.2} bits per weight ({} weights), {:.1} s",
                s.path.display(),
                s.tensors,
                s.file_bytes as f64 / (1024.0 * 1024.0),
                s.bits_per_weight(),
                s.n_params,
                s.seconds
            );
        }
    }

    pub fn abandon(&self) {
        self.bar.finish_and_clear();
    }
}

pub fn run(args: Args) -> Result<()> {
    let ft = parse_type(&args.ty)?;
    let opts = ConvertOptions {
        file_type: ft,
        pure: args.pure,
        force: args.force,
        threads: args.threads,
        arch: args.arch,

        imatrix: match &args.imatrix {
            Some(p) => Some(
                convert::imatrix::ImatrixInput::load(p)
                    .map_err(|e| anyhow!(e).context("reading the importance matrix (--imatrix)"))?,
            ),
            None => None,
        },
    };
    let cancel = cancel_flag();
    let mut bar = Bar::new(args.quiet);
    let res = convert::convert(&args.hf_dir, &args.output, &opts, &cancel, &mut |p| {
        bar.on(p)
    });
    match res {
        Ok(s) => {
            bar.finish(&s);
            Ok(())
        }
        Err(e) => {
            bar.abandon();
            Err(anyhow!(e).context(format!("converting {}", args.hf_dir.display())))
        }
    }
}
