//! `mamba-gguf run`: generate text from a prompt, streaming it to stdout, with
//! a speed and memory summary on stderr (or one JSON object with `--json`).
//! Also holds the helpers `logits` and `perplexity` share (model loading,
//! prompt reading, thread pool).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use mamba_gguf::backend::DeviceRequest;
use mamba_gguf::generate::{Finish, Generate};
use mamba_gguf::sampler::{Sampler, SamplerConfig};
use mamba_gguf::session::DEFAULT_CHUNK;
use mamba_gguf::tokenizer::Tokenizer;
use mamba_gguf::{procmem, state_file, Model, Session};
use serde_json::json;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The GGUF model (architecture `mamba`).
    #[arg(short = 'm', long = "model")]
    pub model: PathBuf,
    /// The prompt text.
    #[arg(
        short = 'p',
        long = "prompt",
        conflicts_with = "file",
        required_unless_present = "file"
    )]
    pub prompt: Option<String>,
    /// Read the prompt from a UTF-8 file.
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Tokens to generate at most (generation also stops at an end-of-sequence token).
    #[arg(short = 'n', long = "n-predict", default_value_t = 128)]
    pub n_predict: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.8)]
    pub temp: f32,
    /// Keep the k most likely tokens (0: off).
    #[arg(long = "top-k", default_value_t = 40)]
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p (1: off).
    #[arg(long = "top-p", default_value_t = 0.95)]
    pub top_p: f32,
    /// Drop tokens less likely than min-p times the most likely (0: off).
    #[arg(long = "min-p", default_value_t = 0.05)]
    pub min_p: f32,
    /// Penalise tokens seen in the last --repeat-last-n (1: off).
    #[arg(long = "repeat-penalty", default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// Window of the repetition penalty.
    #[arg(long = "repeat-last-n", default_value_t = 64)]
    pub repeat_last_n: usize,
    /// Random seed (default: from the clock; printed in the summary).
    #[arg(long)]
    pub seed: Option<u64>,
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
    /// Prompt tokens per forward during prefill.
    #[arg(long = "prefill-chunk", default_value_t = DEFAULT_CHUNK)]
    pub prefill_chunk: usize,
    /// Print one JSON object at the end instead of streaming text.
    #[arg(long)]
    pub json: bool,
    /// Start from a state saved by --save-state (or chat's /save): the prompt
    /// continues that context instead of starting a fresh one.
    #[arg(long = "load-state")]
    pub load_state: Option<PathBuf>,
    /// Save the state after the prompt and every generated token (the end of
    /// sequence token excluded), to continue later with --load-state.
    #[arg(long = "save-state")]
    pub save_state: Option<PathBuf>,
}

/// Installs the global rayon pool with `threads` threads (by default one per
/// physical core, [`super::threads::default_threads`]).
pub fn init_threads(threads: Option<usize>) -> Result<usize> {
    let n = match threads {
        Some(0) => bail!("--threads must be at least 1"),
        Some(n) => n,
        None => super::threads::default_threads(),
    };
    // Fails only if a pool was already installed (tests calling twice): keep it.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global();
    Ok(rayon::current_num_threads())
}

/// `--device`'s parser: the library's names, and its error listing them.
pub fn parse_device(s: &str) -> Result<DeviceRequest, String> {
    s.parse().map_err(|e: mamba_gguf::ModelError| e.to_string())
}

/// Loads and validates a model onto the backend `device` asks for; errors
/// name the file. For the CPU the file is read into memory (huge pages)
/// unless `mmap`; a GPU backend keeps its weights on the device, so the
/// file is mapped (`auto` maps when the NVIDIA driver is present).
pub fn load_model(path: &Path, device: DeviceRequest, mmap: bool) -> Result<Model> {
    let to_cpu = match device {
        DeviceRequest::Cpu => true,
        DeviceRequest::Auto => !mamba_gguf::backend::cuda_driver_present(),
        #[allow(unreachable_patterns)]
        _ => false,
    };
    let model = Model::load_with(path, device, to_cpu && !mmap)
        .with_context(|| format!("cannot load model {}", path.display()))?;
    if let Some(why) = model.backend().gpu_fallback() {
        eprintln!("warning: --device auto runs on the CPU: the GPU was not used: {why}");
    }
    Ok(model)
}

/// The model file's tokenizer, with the stop ids and chat template that
/// models.toml knows for the model where the file lacks them (llama.cpp's
/// files of the instruct model stop only on `<|endoftext|>`).
pub fn load_tokenizer(model: &Model, path: &Path) -> Result<Tokenizer> {
    Tokenizer::from_model_file(model.gguf())
        .with_context(|| format!("cannot read the tokenizer of {}", path.display()))
}

/// The prompt from -p or -f (which must be UTF-8).
pub fn read_text(prompt: Option<&str>, file: Option<&Path>) -> Result<String> {
    match (prompt, file) {
        (Some(p), _) => Ok(p.to_string()),
        (None, Some(f)) => {
            let bytes = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
            String::from_utf8(bytes).map_err(|e| {
                anyhow::anyhow!(
                    "{} is not UTF-8 text (invalid byte at offset {})",
                    f.display(),
                    e.utf8_error().valid_up_to()
                )
            })
        }
        (None, None) => bail!("give a prompt with -p TEXT or -f FILE"),
    }
}

/// Tokenizes a prompt, BOS first when the tokenizer asks for it; refuses an
/// empty result.
pub fn encode_prompt(tok: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    if text.is_empty() {
        bail!("the prompt is empty");
    }
    let ids = tok
        .encode(text, tok.add_bos())
        .context("cannot tokenize the prompt")?;
    if ids.is_empty() {
        bail!("the prompt gives no tokens");
    }
    Ok(ids)
}

fn rate(n: usize, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

pub fn run(args: Args) -> Result<()> {
    let threads = init_threads(args.threads)?;
    if args.prefill_chunk == 0 {
        bail!("--prefill-chunk must be at least 1");
    }
    let text = read_text(args.prompt.as_deref(), args.file.as_deref())?;
    let t0 = Instant::now();
    let model = load_model(&args.model, args.device, args.mmap)?;
    let tok = load_tokenizer(&model, &args.model)?;
    let load_s = t0.elapsed().as_secs_f64();
    let prompt_ids = encode_prompt(&tok, &text)?;
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    });
    let sampler = Sampler::new(SamplerConfig {
        temp: args.temp,
        top_k: args.top_k,
        top_p: args.top_p,
        min_p: args.min_p,
        repeat_penalty: args.repeat_penalty,
        repeat_last_n: args.repeat_last_n,
        frequency_penalty: 0.0,
        presence_penalty: 0.0,
        logit_bias: Vec::new(),
        seed,
    });
    let mut session = Session::with_chunk(&model, args.prefill_chunk);
    if let Some(path) = &args.load_state {
        state_file::load(path, &mut session)
            .with_context(|| format!("cannot load the state {}", path.display()))?;
    }

    // The one decode loop (`Generate`): sample, stop at EOS or n, stream.
    let mut gen = Generate::new(&mut session, &tok, sampler, &prompt_ids, args.n_predict);
    let t1 = Instant::now();
    gen.prefill()?;
    let prefill_s = t1.elapsed().as_secs_f64();

    let mut text_out = String::new();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let t2 = Instant::now();
    for piece in gen.by_ref() {
        let piece = piece?;
        if !args.json {
            out.write_all(piece.as_bytes())?;
            out.flush()?;
        }
        text_out.push_str(&piece);
    }
    let decode_s = t2.elapsed().as_secs_f64();
    let stop = match gen.finish() {
        Some(Finish::Eos) => "eos",
        Some(Finish::Error) => "error",
        Some(Finish::Length) | None => "length",
    };
    let ids = gen.tokens().to_vec();
    if let Some(path) = &args.save_state {
        // Generation stops at n without feeding the last token it sampled;
        // the saved context must hold it.
        gen.sync()?;
        drop(gen);
        state_file::save(path, &mut session)
            .with_context(|| format!("cannot save the state to {}", path.display()))?;
    } else {
        drop(gen);
    }
    let peak = procmem::peak_rss_kib();
    let stats = json!({
        "prompt_tokens": prompt_ids.len(),
        "load_s": load_s,
        "prefill_s": prefill_s,
        "prefill_tok_s": rate(prompt_ids.len(), prefill_s),
        "generated_tokens": ids.len(),
        "decode_s": decode_s,
        "decode_tok_s": rate(ids.len(), decode_s),
        "stop": stop,
        "seed": seed,
        "threads": threads,
        "backend": model.backend().name(),
        "device": model.backend().device(),
        "prefill_chunk": args.prefill_chunk,
        "peak_rss_kib": peak,
        "state_and_scratch_bytes": session.bytes(),
    });
    if args.json {
        let obj = json!({"prompt_ids": prompt_ids, "ids": ids, "text": text_out, "stats": stats});
        writeln!(out, "{obj}")?;
    } else {
        writeln!(out)?;
        out.flush()?;
        eprintln!(
            "\nprompt: {} tokens, prefill {:.2} tok/s ({:.3} s); generated: {} tokens, decode {:.2} tok/s ({:.3} s); stop: {stop}",
            prompt_ids.len(),
            rate(prompt_ids.len(), prefill_s),
            prefill_s,
            ids.len(),
            rate(ids.len(), decode_s),
            decode_s
        );
        eprintln!(
            "peak RSS {} MiB; load {:.3} s; seed {seed}; threads {threads}; device {}; weights {}",
            peak.map(|k| format!("{:.1}", k as f64 / 1024.0))
                .unwrap_or_else(|| "?".into()),
            load_s,
            model.backend().device(),
            model
                .weight_types()
                .iter()
                .map(|t| t.name())
                .collect::<Vec<_>>()
                .join("+")
        );
    }
    Ok(())
}
