//! `mamba-gguf perplexity`: perplexity over a text file, as llama-perplexity
//! computes it: the tokens are cut into chunks of --ctx, the state is reset at
//! each chunk (BOS first when the tokenizer asks for it), and only the second
//! half of each chunk is scored (each position has at least ctx/2 tokens of
//! context). With --kl-base, also the mean KL divergence KL(base || model)
//! over the same scored positions and how often both pick the same top token.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use mamba_gguf::backend::DeviceRequest;
use mamba_gguf::sampler::argmax;
use mamba_gguf::session::DEFAULT_CHUNK;
use mamba_gguf::Session;
use serde_json::json;

use super::run::{init_threads, load_model, load_tokenizer, read_text};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The GGUF model (architecture `mamba`).
    #[arg(short = 'm', long = "model")]
    pub model: PathBuf,
    /// The UTF-8 text file to score.
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Tokens per chunk (the state is reset for each).
    #[arg(long, default_value_t = 512)]
    pub ctx: usize,
    /// A base model (e.g. the F16/F32 original) to measure KL divergence from.
    #[arg(long = "kl-base")]
    pub kl_base: Option<PathBuf>,
    /// Tokens per forward.
    #[arg(long = "prefill-chunk", default_value_t = DEFAULT_CHUNK)]
    pub prefill_chunk: usize,
    /// Threads (default: one per physical core).
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,
    /// Backend: auto (a usable CUDA GPU, else the CPU), cpu, cuda, cuda:N, or cuda-emu (the GPU code on a CPU emulator; slow, for testing).
    #[arg(long = "device", default_value = "auto", value_parser = super::run::parse_device)]
    pub device: DeviceRequest,
    /// Map the model file instead of reading it into memory. Read (the
    /// default on the CPU) it sits in huge pages: decode 5-12% faster here.
    /// A GPU backend maps it anyway (its weights live on the device).
    #[arg(long = "mmap")]
    pub mmap: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// log-softmax of one row into `out` (f64 for the sums).
fn log_softmax(x: &[f32], out: &mut [f64]) {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = x.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln() + m;
    for (o, &v) in out.iter_mut().zip(x) {
        *o = v as f64 - lse;
    }
}

pub fn run(args: Args) -> Result<()> {
    init_threads(args.threads)?;
    if args.ctx < 2 {
        bail!("--ctx must be at least 2");
    }
    if args.prefill_chunk == 0 {
        bail!("--prefill-chunk must be at least 1");
    }
    let text = read_text(None, Some(&args.file))?;
    if text.is_empty() {
        bail!("{} is empty", args.file.display());
    }
    let model = load_model(&args.model, args.device, args.mmap)?;
    let tok = load_tokenizer(&model, &args.model)?;
    let base = match &args.kl_base {
        Some(p) => {
            let b = load_model(p, args.device, args.mmap)?;
            if b.hp.n_vocab != model.hp.n_vocab {
                bail!(
                    "--kl-base {} has a vocabulary of {}, the model {}",
                    p.display(),
                    b.hp.n_vocab,
                    model.hp.n_vocab
                );
            }
            Some(b)
        }
        None => None,
    };
    let bos = if tok.add_bos() { tok.bos_id() } else { None };
    let tokens = tok.encode(&text, false)?;
    // Each chunk is [BOS] + body; ctx counts the BOS.
    let body = args.ctx - bos.is_some() as usize;
    if body == 0 {
        bail!("--ctx {} leaves no room after BOS", args.ctx);
    }
    let (n_chunks, ctx) = if tokens.len() >= body {
        (tokens.len() / body, args.ctx)
    } else if tokens.len() >= 2 {
        eprintln!(
            "note: {} has only {} tokens, fewer than --ctx {}: scoring one chunk of {}",
            args.file.display(),
            tokens.len(),
            args.ctx,
            tokens.len() + bos.is_some() as usize
        );
        (1, tokens.len() + bos.is_some() as usize)
    } else {
        bail!(
            "{} gives {} token(s): too few to score",
            args.file.display(),
            tokens.len()
        );
    };
    let body = ctx - bos.is_some() as usize;
    let first = ctx / 2;
    let v = model.hp.n_vocab;

    let mut ours = Session::with_chunk(&model, args.prefill_chunk);
    let mut theirs = base
        .as_ref()
        .map(|b| Session::with_chunk(b, args.prefill_chunk));
    let (mut buf_a, mut buf_b) = (Vec::new(), Vec::new());
    let (mut lp_a, mut lp_b) = (vec![0f64; v], vec![0f64; v]);
    let mut seq = Vec::with_capacity(ctx);
    let (mut nll, mut nll_base, mut kl_sum, mut agree, mut scored) =
        (0f64, 0f64, 0f64, 0usize, 0usize);
    let t0 = Instant::now();
    for c in 0..n_chunks {
        seq.clear();
        seq.extend(bos);
        seq.extend_from_slice(&tokens[c * body..(c + 1) * body]);
        ours.reset()?;
        if let Some(t) = theirs.as_mut() {
            t.reset()?;
        }
        let mut pos = 0;
        for sub in seq.chunks(args.prefill_chunk) {
            ours.feed_each(sub, &mut buf_a, |_, _| {})?;
            if let Some(t) = theirs.as_mut() {
                t.feed_each(sub, &mut buf_b, |_, _| {})?;
            }
            for j in 0..sub.len() {
                let p = pos + j;
                // Logits at p predict token p+1; score p in [first, ctx-1).
                if p < first || p + 1 >= ctx {
                    continue;
                }
                let target = seq[p + 1] as usize;
                let row_a = &buf_a[j * v..(j + 1) * v];
                log_softmax(row_a, &mut lp_a);
                nll -= lp_a.get(target).copied().unwrap_or(f64::NEG_INFINITY);
                if theirs.is_some() {
                    let row_b = &buf_b[j * v..(j + 1) * v];
                    log_softmax(row_b, &mut lp_b);
                    nll_base -= lp_b.get(target).copied().unwrap_or(f64::NEG_INFINITY);
                    kl_sum += lp_b
                        .iter()
                        .zip(&lp_a)
                        .map(|(&b, &a)| b.exp() * (b - a))
                        .sum::<f64>();
                    agree += (argmax(row_a)? == argmax(row_b)?) as usize;
                }
                scored += 1;
            }
            pos += sub.len();
        }
        eprintln!(
            "[{}/{n_chunks}] ppl {:.4} ({:.1} s)",
            c + 1,
            (nll / scored.max(1) as f64).exp(),
            t0.elapsed().as_secs_f64()
        );
    }
    let ppl = (nll / scored.max(1) as f64).exp();
    let mut obj = json!({
        "tokens": tokens.len(),
        "chunks": n_chunks,
        "ctx": ctx,
        "scored": scored,
        "scoring": "second half of each chunk (llama-perplexity)",
        "ppl": ppl,
    });
    if theirs.is_some() {
        obj["base_ppl"] = json!((nll_base / scored.max(1) as f64).exp());
        obj["mean_kl"] = json!(kl_sum / scored.max(1) as f64);
        obj["top1_agreement"] = json!(agree as f64 / scored.max(1) as f64);
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.json {
        writeln!(out, "{obj}")?;
    } else {
        writeln!(
            out,
            "perplexity: {ppl:.4} over {scored} scored tokens ({n_chunks} chunks of {ctx}, second half of each scored)"
        )?;
        if theirs.is_some() {
            writeln!(
                out,
                "base perplexity: {:.4}; mean KL(base || model): {:.6}; top-1 agreement: {:.2}%",
                obj["base_ppl"].as_f64().unwrap_or(f64::NAN),
                obj["mean_kl"].as_f64().unwrap_or(f64::NAN),
                100.0 * obj["top1_agreement"].as_f64().unwrap_or(f64::NAN)
            )?;
        }
    }
    Ok(())
}
