//! `mamba-gguf logits`: the logits a model gives for a text or token ids, as
//! JSON: `{"ids": [...], "logits": [...]}` (last position, full vocabulary),
//! plus `"logits_all": [[...], ...]` (one row per position) with `--all`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use mamba_gguf::backend::DeviceRequest;
use mamba_gguf::session::DEFAULT_CHUNK;
use mamba_gguf::Session;

use super::run::{encode_prompt, init_threads, load_model, load_tokenizer};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The GGUF model (architecture `mamba`).
    #[arg(short = 'm', long = "model")]
    pub model: PathBuf,
    /// Text to tokenize (BOS first if the tokenizer asks for it).
    #[arg(
        short = 'p',
        long = "prompt",
        conflicts_with = "ids",
        required_unless_present = "ids"
    )]
    pub prompt: Option<String>,
    /// Token ids, comma-separated ("1,2,3"), fed as they are.
    #[arg(long)]
    pub ids: Option<String>,
    /// Also print every position's logits.
    #[arg(long)]
    pub all: bool,
    /// Tokens per forward during prefill.
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
}

fn parse_ids(s: &str) -> Result<Vec<u32>> {
    let ids = s
        .split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(|x| {
            x.parse::<u32>()
                .with_context(|| format!("--ids: '{x}' is not a token id"))
        })
        .collect::<Result<Vec<_>>>()?;
    if ids.is_empty() {
        bail!("--ids gives no tokens");
    }
    Ok(ids)
}

pub fn run(args: Args) -> Result<()> {
    init_threads(args.threads)?;
    if args.prefill_chunk == 0 {
        bail!("--prefill-chunk must be at least 1");
    }
    let model = load_model(&args.model, args.device, args.mmap)?;
    let ids = match (&args.ids, &args.prompt) {
        (Some(s), _) => parse_ids(s)?,
        (None, Some(p)) => encode_prompt(&load_tokenizer(&model, &args.model)?, p)?,
        (None, None) => bail!("give -p TEXT or --ids 1,2,3"),
    };
    let mut session = Session::with_chunk(&model, args.prefill_chunk);
    // Written with serde's f32 formatting (shortest round-trip digits).
    #[derive(serde::Serialize)]
    struct Out<'a> {
        ids: &'a [u32],
        logits: &'a [f32],
        #[serde(skip_serializing_if = "Option::is_none")]
        logits_all: Option<Vec<Vec<f32>>>,
    }
    let logits_all = if args.all {
        let mut buf = Vec::new();
        let mut rows: Vec<Vec<f32>> = Vec::with_capacity(ids.len());
        session.feed_each(&ids, &mut buf, |_, row| rows.push(row.to_vec()))?;
        Some(rows)
    } else {
        session.feed(&ids)?;
        None
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let o = Out {
        ids: &ids,
        logits: session.logits()?,
        logits_all,
    };
    serde_json::to_writer(&mut out, &o)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}
