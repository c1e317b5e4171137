//! `mamba-gguf serve`: an OpenAI-compatible HTTP server with prompt caching by
//! SSM state (see `mamba_gguf::server`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use mamba_gguf::backend::DeviceRequest;
use mamba_gguf::server::{self, ServerConfig};

use super::run::{init_threads, load_model};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The GGUF model.
    #[arg(short = 'm', long = "model")]
    pub model: std::path::PathBuf,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Slots: requests generating at once, stepped together in one batched
    /// forward, and the most choices (`n`) one request may ask for (a
    /// request whose `n` exceeds the free slots waits for them). Each slot
    /// holds one recurrent state (38 MiB at 7B) and a 64-token prefill
    /// scratch (18 MiB at 7B): the default 4 take about 224 MiB at 7B.
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// Requests that may wait for a slot; more get 429.
    #[arg(long, default_value_t = 8)]
    pub queue: usize,
    /// Prompt-cache budget (MiB of model states); 0 disables the cache.
    #[arg(long, default_value_t = 512)]
    pub cache_mb: usize,
    /// Longest prompt in tokens.
    #[arg(long, default_value_t = 32768)]
    pub max_prompt_tokens: usize,
    /// Largest max_tokens a request may ask for.
    #[arg(long, default_value_t = 4096)]
    pub max_tokens: usize,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 4 << 20)]
    pub max_body: usize,
    /// Seconds a request may take in all.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// Rayon threads for the matmuls (default: one per physical core).
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
    /// Require `Authorization: Bearer KEY` on every endpoint but /health
    /// (also from MAMBA_GGUF_API_KEY). Repeat for several keys: each is a
    /// tenant of its own in the state store.
    #[arg(long = "api-key")]
    pub api_key: Vec<String>,
    /// An origin browsers may call from (CORS); repeat for several, `*` for any.
    #[arg(long = "cors-origin")]
    pub cors_origin: Vec<String>,
    /// Keep prompt-cache states in this directory too, so a restarted server
    /// still has them (checksummed; a damaged file is dropped, never served).
    #[arg(long = "cache-dir")]
    pub cache_dir: Option<std::path::PathBuf>,
    /// Disk budget of --cache-dir in MiB (least recently used removed first).
    #[arg(long = "cache-disk-mb", default_value_t = 4096)]
    pub cache_disk_mb: u64,
    /// A system prompt (a text file) to read into the prompt cache at start.
    #[arg(long = "warm")]
    pub warm: Option<std::path::PathBuf>,
    /// Enable llama.cpp's slot API (`POST /slots/{id}?action=save|restore`)
    /// with its state files in this directory (created when missing).
    #[arg(long = "slot-save-path")]
    pub slot_save_path: Option<std::path::PathBuf>,
    /// A state store shared by replicas of this server, under the prompt
    /// cache's memory and disk tiers: `s3://BUCKET/PREFIX` (any
    /// S3-compatible store; credentials, region and endpoint from the AWS_*
    /// environment variables or the flags below) or `file:///DIR` (a shared
    /// filesystem). Any replica then continues any conversation.
    #[arg(long = "state-store")]
    pub state_store: Option<String>,
    /// The S3 endpoint (default: AWS_ENDPOINT_URL, else AWS's).
    #[arg(long = "state-store-endpoint", requires = "state_store")]
    pub state_store_endpoint: Option<String>,
    /// The S3 region (default: AWS_REGION / AWS_DEFAULT_REGION).
    #[arg(long = "state-store-region", requires = "state_store")]
    pub state_store_region: Option<String>,
    /// Milliseconds a state-store lookup may take before the prompt is
    /// prefilled instead.
    #[arg(long = "state-store-timeout-ms", default_value_t = 1500)]
    pub state_store_timeout_ms: u64,
    /// States waiting to be written to the store; more are dropped (and
    /// counted in /metrics).
    #[arg(long = "state-store-queue", default_value_t = 8)]
    pub state_store_queue: usize,
}

pub fn run(args: Args) -> Result<()> {
    init_threads(args.threads)?;
    let name = args
        .model
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let cfg =
        ServerConfig {
            host: args.host,
            port: args.port,
            parallel: args.parallel.max(1),
            queue: args.queue,
            cache_mb: args.cache_mb,
            max_body: args.max_body,
            max_prompt_tokens: args.max_prompt_tokens,
            max_tokens: args.max_tokens,
            default_max_tokens: 256.min(args.max_tokens),
            timeout: Duration::from_secs(args.timeout.max(1)),
            model_name: name,
            api_key: args
                .api_key
                .first()
                .cloned()
                .or_else(|| std::env::var("MAMBA_GGUF_API_KEY").ok())
                .filter(|k| !k.is_empty()),
            api_keys: args
                .api_key
                .iter()
                .skip(1)
                .filter(|k| !k.is_empty())
                .cloned()
                .collect(),
            state_store: args.state_store.map(|url| server::store::StoreConfig {
                url,
                endpoint: args.state_store_endpoint,
                region: args.state_store_region,
                timeout: Duration::from_millis(args.state_store_timeout_ms.max(1)),
                queue: args.state_store_queue.max(1),
            }),
            cors_origins: args.cors_origin,
            cache_dir: args.cache_dir,
            cache_disk_mb: args.cache_disk_mb,
            warm: match &args.warm {
                Some(f) => Some(std::fs::read_to_string(f).with_context(|| {
                    format!("--warm: cannot read {} as UTF-8 text", f.display())
                })?),
                None => None,
            },
            slot_save_path: args.slot_save_path,
        };
    let parallel = cfg.parallel;
    // The port answers at once: 503 (/health included) while the model
    // loads, as llama.cpp's server does, then the API.
    let path = args.model.clone();
    let (device, mmap) = (args.device, args.mmap);
    let shown = args.model.display().to_string();
    let handle = server::spawn_loading(
        move || {
            load_model(&path, device, mmap)
                .map(Arc::new)
                .map_err(|e| format!("{e:#}"))
        },
        move |addr, model| {
            eprintln!(
                "serving {shown} on http://{addr} ({parallel} slot{}, {})",
                if parallel == 1 { "" } else { "s" },
                model.backend().device()
            )
        },
        cfg,
    )?;
    eprintln!(
        "loading {}: http://{} answers 503 until it is ready",
        args.model.display(),
        handle.addr
    );
    handle.wait()?;
    Ok(())
}
