//! `mamba-gguf chat`: an interactive chat. Turns are rendered with the file's
//! chat template; the state after the previous reply is kept (in a small
//! prefix cache keyed by the rendered text), so each turn feeds only the new
//! tokens. Commands: `/reset`, `/save FILE`, `/load FILE`, `/quit`. Ctrl-C ends
//! the reply being written, not the program.

use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use mamba_gguf::backend::DeviceRequest;
use mamba_gguf::chat_template::{ChatTemplate, Message};
use mamba_gguf::generate::{Finish, Generate};
use mamba_gguf::prefill::{prefill, PrefillError, Prompt};
use mamba_gguf::prefix_cache::PrefixCache;
use mamba_gguf::tokenizer::Tokenizer;
use mamba_gguf::{state_file, Sampler, SamplerConfig, Session};

use super::run::{init_threads, load_model, load_tokenizer};
use serde::{Deserialize, Serialize};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The GGUF model (an instruct model with a chat template).
    #[arg(short = 'm', long = "model")]
    pub model: std::path::PathBuf,
    /// A system message to start the conversation with.
    #[arg(long)]
    pub system: Option<String>,
    /// Most tokens per reply.
    #[arg(short = 'n', long, default_value_t = 1024)]
    pub max_tokens: usize,
    /// Temperature (0: greedy).
    #[arg(long, default_value_t = 0.8)]
    pub temp: f32,
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0.05)]
    pub min_p: f32,
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// States kept for earlier turns (MiB).
    #[arg(long, default_value_t = 256)]
    pub cache_mb: usize,
    /// Rayon threads (default: one per physical core).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    /// Backend: auto (a usable CUDA GPU, else the CPU), cpu, cuda, cuda:N, or cuda-emu (the GPU code on a CPU emulator; slow, for testing).
    #[arg(long = "device", default_value = "auto", value_parser = super::run::parse_device)]
    pub device: DeviceRequest,
    /// Map the model file instead of reading it into memory. Read (the
    /// default on the CPU) it sits in huge pages: decode 5-12% faster here.
    /// A GPU backend maps it anyway (its weights live on the device).
    #[arg(long = "mmap")]
    pub mmap: bool,
    /// Print prompt/cache/speed figures after each reply.
    #[arg(long)]
    pub verbose: bool,
}

static GENERATING: AtomicBool = AtomicBool::new(false);
static STOP: AtomicBool = AtomicBool::new(false);

/// What a state file's note holds for chat: the conversation and the text and
/// tokens the saved state has seen.
#[derive(Serialize, Deserialize)]
struct Transcript {
    messages: Vec<Message>,
    text: String,
    tokens: Vec<u32>,
}

struct Chat<'m> {
    tok: Tokenizer,
    template: ChatTemplate,
    session: Session<'m>,
    cache: Mutex<PrefixCache>,
    cache_bytes: usize,
    messages: Vec<Message>,
    /// The rendered text and tokens the session's state has seen.
    text: String,
    tokens: Vec<u32>,
    system: Option<String>,
}

impl<'m> Chat<'m> {
    fn reset(&mut self) -> Result<()> {
        self.messages.clear();
        if let Some(s) = &self.system {
            self.messages.push(Message::new("system", s.clone()));
        }
        self.session.reset()?;
        self.cache = Mutex::new(PrefixCache::new(self.cache_bytes));
        self.text.clear();
        self.tokens.clear();
        Ok(())
    }

    fn turn(&mut self, user: &str, args: &Args, out: &mut impl Write) -> Result<()> {
        self.messages.push(Message::new("user", user));
        let (text, bounds) = match self.template.render_with_boundaries(&self.messages) {
            Ok(r) => r,
            Err(e) => {
                self.messages.pop();
                return Err(e.into());
            }
        };
        let prompt = Prompt { text, bounds };
        let t0 = Instant::now();
        let (tokens, cached) = match prefill(
            &self.cache,
            &mut self.session,
            &self.tok,
            &prompt,
            usize::MAX,
            || None::<PrefillError>,
        ) {
            Ok(r) => r,
            Err(e) => {
                self.messages.pop();
                return Err(e.into());
            }
        };
        let t_prompt = t0.elapsed();
        let cfg = SamplerConfig {
            temp: args.temp,
            top_k: args.top_k,
            top_p: args.top_p,
            min_p: args.min_p,
            repeat_penalty: args.repeat_penalty,
            repeat_last_n: 64,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            logit_bias: Vec::new(),
            seed: args.seed.wrapping_add(self.messages.len() as u64),
        };
        let t1 = Instant::now();
        STOP.store(false, Ordering::SeqCst);
        GENERATING.store(true, Ordering::SeqCst);
        let mut reply = String::new();
        let (generated, finish, result) = {
            let mut gen = Generate::new(
                &mut self.session,
                &self.tok,
                Sampler::new(cfg),
                &[],
                args.max_tokens,
            );
            let mut result = Ok(());
            while !STOP.load(Ordering::SeqCst) {
                match gen.next() {
                    None => break,
                    Some(Ok(piece)) => {
                        reply.push_str(&piece);
                        let _ = write!(out, "{piece}");
                        let _ = out.flush();
                    }
                    Some(Err(e)) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            let finish = gen.finish();
            let synced = gen.sync();
            (gen.tokens().to_vec(), finish, result.and(synced))
        };
        GENERATING.store(false, Ordering::SeqCst);
        let _ = writeln!(out);
        result?;
        // Text the state has seen: the prompt and the whole reply (the
        // decoder's held-back bytes are in `reply` once generation ends; after
        // Ctrl-C they are decoded here).
        let reply = if finish.is_some() {
            reply
        } else {
            self.tok.decode(&generated)
        };
        self.text = format!("{}{}", prompt.text, reply);
        self.tokens = tokens.clone();
        self.tokens.extend_from_slice(&generated);
        lock(&self.cache).insert(&self.text, &self.tokens, &mut self.session)?;
        self.messages.push(Message::new("assistant", reply));
        if args.verbose {
            let dt = t1.elapsed().as_secs_f64();
            eprintln!(
                "[prompt {} tokens, {} from the cache, {} fed in {:.2}s; reply {} tokens in {:.2}s, {:.1} tok/s{}]",
                tokens.len(),
                cached,
                tokens.len() - cached,
                t_prompt.as_secs_f64(),
                generated.len(),
                dt,
                generated.len() as f64 / dt.max(1e-9),
                match finish {
                    Some(Finish::Eos) => "",
                    Some(Finish::Length) => ", max tokens reached",
                    Some(Finish::Error) => ", stopped by an error",
                    None => ", interrupted",
                }
            );
        }
        Ok(())
    }

    fn save(&mut self, path: &str) -> Result<()> {
        let note = serde_json::to_string(&Transcript {
            messages: self.messages.clone(),
            text: self.text.clone(),
            tokens: self.tokens.clone(),
        })?;
        state_file::save_with_note(path, &mut self.session, &note)?;
        Ok(())
    }

    fn load(&mut self, path: &str) -> Result<()> {
        let before = self.session.snapshot()?;
        let note = state_file::load_with_note(path, &mut self.session)?;
        let t: Transcript = match serde_json::from_str(&note) {
            Ok(t) => t,
            Err(e) => {
                self.session.restore(&before)?;
                return Err(anyhow!(
                    "{path}: not a chat state file (its note is not a transcript: {e})"
                ));
            }
        };
        if t.tokens.len() as u64 != self.session.n_past() {
            self.session.restore(&before)?;
            return Err(anyhow!(
                "{path}: transcript has {} tokens but the state has seen {}",
                t.tokens.len(),
                self.session.n_past()
            ));
        }
        self.cache = Mutex::new(PrefixCache::new(self.cache_bytes));
        lock(&self.cache).insert(&t.text, &t.tokens, &mut self.session)?;
        self.messages = t.messages;
        self.text = t.text;
        self.tokens = t.tokens;
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn run(args: Args) -> Result<()> {
    init_threads(args.threads)?;
    let model = load_model(&args.model, args.device, args.mmap)?;
    let tok = load_tokenizer(&model, &args.model)?;
    if tok.chat_template().is_none() {
        eprintln!("note: the model has no tokenizer.chat_template; using ChatML");
    }
    let template = ChatTemplate::from_tokenizer(&tok)?;
    let cache_bytes = args.cache_mb.saturating_mul(1 << 20);
    ctrlc::set_handler(|| {
        if GENERATING.load(Ordering::SeqCst) {
            STOP.store(true, Ordering::SeqCst);
        } else {
            std::process::exit(130);
        }
    })
    .context("installing the Ctrl-C handler")?;
    let mut chat = Chat {
        tok,
        template,
        session: Session::new(&model),
        cache: Mutex::new(PrefixCache::new(cache_bytes)),
        cache_bytes,
        messages: Vec::new(),
        text: String::new(),
        tokens: Vec::new(),
        system: args.system.clone(),
    };
    chat.reset()?;
    eprintln!(
        "chatting with {} on {} (/reset, /save FILE, /load FILE, /quit; Ctrl-C stops a reply)",
        args.model.display(),
        model.backend().device()
    );
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    let mut line = String::new();
    loop {
        let _ = write!(stdout, "> ");
        let _ = stdout.flush();
        line.clear();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        let input = line.trim_end_matches(['\n', '\r']);
        if input.trim().is_empty() {
            continue;
        }
        let cmd = input.trim();
        let res = if cmd == "/quit" || cmd == "/exit" {
            break;
        } else if cmd == "/reset" {
            chat.reset().map(|_| eprintln!("(conversation cleared)"))
        } else if let Some(p) = cmd.strip_prefix("/save ") {
            chat.save(p.trim())
                .map(|_| eprintln!("(saved to {})", p.trim()))
        } else if let Some(p) = cmd.strip_prefix("/load ") {
            chat.load(p.trim()).map(|_| {
                eprintln!(
                    "(loaded {}: {} messages, {} tokens)",
                    p.trim(),
                    chat.messages.len(),
                    chat.tokens.len()
                )
            })
        } else if cmd.starts_with('/') && !cmd.contains(' ') {
            Err(anyhow!(
                "unknown command {cmd} (/reset, /save FILE, /load FILE, /quit)"
            ))
        } else {
            chat.turn(input, &args, &mut stdout)
        };
        if let Err(e) = res {
            eprintln!("error: {e:#}");
        }
    }
    Ok(())
}
