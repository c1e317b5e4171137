//! `mamba-gguf imatrix -m MODEL -f TEXT [-o imatrix.gguf] [-c 512]`: an
//! importance matrix for `quantize --imatrix` / `convert --imatrix`, as
//! llama-imatrix makes one (same flags where they mean the same, same GGUF
//! output, which llama-quantize reads too). See `mamba_gguf::imatrix`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use mamba_gguf::backend::DeviceRequest;
use mamba_gguf::imatrix::{collect, ImatrixOptions};
use mamba_gguf::session::DEFAULT_CHUNK;

use super::run::{init_threads, load_model, load_tokenizer, read_text};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The GGUF model to run (F32/F16/BF16 ideally: the matrix is for
    /// quantizing it).
    #[arg(short = 'm', long = "model")]
    pub model: PathBuf,
    /// The UTF-8 text to run over (a calibration set).
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Where to write the matrix (GGUF form).
    #[arg(short = 'o', long = "output-file", default_value = "imatrix.gguf")]
    pub output: PathBuf,
    /// Tokens per chunk; each chunk is a fresh sequence.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 512)]
    pub ctx: usize,
    /// Process at most this many chunks.
    #[arg(long = "chunks")]
    pub chunks: Option<usize>,
    /// Do not compute the perplexity of each chunk's second half.
    #[arg(long = "no-ppl")]
    pub no_ppl: bool,
    /// Tokens per forward.
    #[arg(long = "prefill-chunk", default_value_t = DEFAULT_CHUNK)]
    pub prefill_chunk: usize,
    /// Threads (default: one per physical core).
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,
    /// Backend: auto (a usable CUDA GPU, else the CPU), cpu, cuda, cuda:N, or cuda-emu.
    #[arg(long = "device", default_value = "auto", value_parser = super::run::parse_device)]
    pub device: DeviceRequest,
    /// Overwrite an existing output file.
    #[arg(long)]
    pub force: bool,
    /// No progress output.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

pub fn run(args: Args) -> Result<()> {
    init_threads(args.threads)?;
    if args.prefill_chunk == 0 {
        bail!("--prefill-chunk must be at least 1");
    }
    if args.chunks == Some(0) {
        bail!("--chunks must be at least 1");
    }
    if args.output.exists() && !args.force {
        bail!(
            "{} already exists (pass --force to overwrite it)",
            args.output.display()
        );
    }
    let text = read_text(None, Some(&args.file))?;
    if text.is_empty() {
        bail!("{} is empty", args.file.display());
    }
    let model = load_model(&args.model, args.device, false)?;
    let tok = load_tokenizer(&model, &args.model)?;
    let bos = if tok.add_bos() { tok.bos_id() } else { None };
    let tokens = tok
        .encode(&text, bos.is_some())
        .with_context(|| format!("cannot tokenize {}", args.file.display()))?;
    let opts = ImatrixOptions {
        ctx: args.ctx,
        chunks: args.chunks,
        ppl: !args.no_ppl,
        prefill_chunk: args.prefill_chunk,
    };
    let quiet = args.quiet;
    let tty = std::io::stderr().is_terminal();
    let t0 = Instant::now();
    let (matrix, ppl) = collect(
        &model,
        &tokens,
        bos,
        args.file.to_string_lossy().into_owned(),
        &opts,
        &mut |p| {
            if quiet {
                return;
            }
            let secs = t0.elapsed().as_secs_f64();
            let eta = secs / p.done as f64 * (p.of - p.done) as f64;
            let ppl = p.ppl.map(|v| format!(", ppl {v:.4}")).unwrap_or_default();
            let end = if tty && p.done < p.of { "\r" } else { "\n" };
            eprint!(
                "[{}/{}] {secs:.1} s, ETA {eta:.0} s{ppl}{end}",
                p.done, p.of
            );
        },
    )
    .with_context(|| format!("collecting over {}", args.file.display()))?;
    matrix
        .save(&args.output)
        .with_context(|| format!("writing {}", args.output.display()))?;
    if !quiet {
        eprintln!(
            "wrote {}: {} matrices, {} chunks of {} tokens{}",
            args.output.display(),
            matrix.entries.len(),
            matrix.chunk_count,
            matrix.chunk_size,
            ppl.map(|v| format!(", final ppl {v:.4}"))
                .unwrap_or_default()
        );
    }
    Ok(())
}
