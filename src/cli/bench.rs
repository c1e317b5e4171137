//! `mamba-gguf bench`: prompt-processing (pp) and generation (tg) speed,
//! llama-bench style, at one or more context depths, with peak RSS.
//!
//! What is measured, per depth d:
//! * the session is first brought to depth d (not timed, see below);
//! * pp: from the depth-d state, `-p` random valid token ids are fed through
//!   [`Session::feed`] in chunks of `--prefill-chunk`; tokens/s = p / wall time;
//! * tg: from the depth-d state, `-n` single-token decode steps, each feeding
//!   the greedy argmax of the previous logits; tokens/s = n / wall time. The
//!   argmax is made where the logits are ([`Session::feed_greedy`]: on a GPU
//!   only the id comes back), as `run` and `serve` decode greedily;
//!   `--host-argmax` brings every step's logits to the host instead;
//! * tg with `--parallel P` (P > 1): P sequences forked from the depth-d
//!   state decode together, `-n` batched steps of one token each (one
//!   forward over all P, as the server's slots do); tokens/s = P n / wall
//!   time, all sequences together (llama-batched-bench's S_TG). Their
//!   first tokens differ, so the sequences do.
//!
//! Each test runs once untimed (warm-up: a pp of one chunk, or one decode step)
//! and then `-r` timed repetitions; mean and sample standard deviation of the
//! per-repetition tokens/s are reported, as llama-bench does.
//!
//! How depth is reached: depths up to `--real-depth-max` (default 4096) are
//! reached by really prefilling that many random tokens (deeper depths build
//! on the shallower ones' states, so `--depth 0,1024,4096` prefills 4096 tokens
//! in all). A Mamba's state has a fixed size and decode does the same work at
//! any depth, so a depth above `--real-depth-max` is measured from the state
//! after `--real-depth-max` real tokens and labelled with the requested depth;
//! the JSON field `depth_prefilled` says how many tokens really went in. Raise
//! `--real-depth-max` to prefill for real (at pp speed: 65536 tokens take
//! minutes).
//!
//! Peak RSS is the process's VmHWM after each test (monotonic over the run).
//!
//! `--profile` (CPU): each single-sequence tg also times every op of its
//! decode steps and prints where a token's time goes, with each matmul's
//! GB/s of weights, beside a memory read loop measured in the same run on
//! the same threads (`read_loop_gbs`), so decode's share of the machine's
//! bandwidth is one ratio of one run.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use mamba_gguf::backend::DeviceRequest;
use mamba_gguf::sampler::argmax;
use mamba_gguf::session::{BatchDecoder, Snapshot, DEFAULT_CHUNK};
use mamba_gguf::{procmem, Model, Session};
use rand::{Rng, SeedableRng};
use serde::Serialize;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The GGUF model (architecture `mamba`).
    #[arg(short = 'm', long = "model")]
    pub model: PathBuf,
    /// Prompt tokens per pp test (0: no pp test).
    #[arg(short = 'p', long = "n-prompt", default_value_t = 512)]
    pub n_prompt: usize,
    /// Generated tokens per tg test (0: no tg test).
    #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
    pub n_gen: usize,
    /// Context depths (tokens already in the state), comma-separated.
    #[arg(
        short = 'd',
        long = "depth",
        value_delimiter = ',',
        default_value = "0"
    )]
    pub depth: Vec<usize>,
    /// Sequences decoded together in the tg tests, comma-separated (each
    /// value one tg test per depth; 1: a single sequence).
    #[arg(long = "parallel", value_delimiter = ',', default_value = "1")]
    pub parallel: Vec<usize>,
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
    /// Timed repetitions per test.
    #[arg(short = 'r', long = "repetitions", default_value_t = 3)]
    pub reps: usize,
    /// Prompt tokens per forward during prefill.
    #[arg(long = "prefill-chunk", default_value_t = DEFAULT_CHUNK)]
    pub prefill_chunk: usize,
    /// Depths up to this are reached by really prefilling; deeper ones reuse
    /// the state after this many real tokens (decode cost does not depend on depth).
    #[arg(long = "real-depth-max", default_value_t = 4096)]
    pub real_depth_max: usize,
    /// Seed of the random prompt tokens.
    #[arg(long, default_value_t = 1234)]
    pub seed: u64,
    /// tg: bring each step's logits to the host and take the argmax there
    /// (by default it is taken where the logits are: on a GPU only the id
    /// crosses the bus).
    #[arg(long)]
    pub host_argmax: bool,
    /// Print a JSON array of records (llama-bench field names) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Write an SVG plot of generation tokens/s and peak RSS against depth.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Print the GPU's load-time self-test verdict on each int8
    /// tensor-core kernel (serving, switched off and why, or not on this
    /// card) to stderr before the tests; an error after the tests if one was
    /// switched off (its weight type then ran on the dp4a path).
    #[arg(long)]
    pub verify: bool,
    /// tg (one sequence, CPU): time each op of the decode step and print
    /// where a token's time goes, each matmul's GB/s of weights, and a
    /// memory read loop on the same threads measured in the same run
    /// (refused on a GPU, whose ops the host only queues).
    #[arg(long)]
    pub profile: bool,
}

/// One test's result, with llama-bench's field names where it has one.
#[derive(Serialize, Debug, Clone)]
pub struct Record {
    pub model_filename: String,
    pub model_type: String,
    pub model_size: u64,
    pub model_n_params: u64,
    pub n_batch: usize,
    pub n_ubatch: usize,
    pub n_threads: usize,
    /// The backend, as llama-bench names it ("CPU").
    pub backends: String,
    /// The device it ran on ("CPU (AVX2)").
    pub devices: String,
    pub n_prompt: usize,
    pub n_gen: usize,
    pub n_depth: usize,
    /// Sequences decoded together (ours, llama-batched-bench's PL; 1 for
    /// pp); `avg_ts` counts the tokens of all of them.
    pub n_parallel: usize,
    /// Tokens really prefilled to reach `n_depth` (ours; see the module docs).
    pub depth_prefilled: usize,
    /// tg: the argmax was taken on the host, each step's logits brought
    /// back (`--host-argmax`; ours).
    pub host_argmax: bool,
    pub avg_ns: u64,
    pub stddev_ns: u64,
    pub avg_ts: f64,
    pub stddev_ts: f64,
    pub samples_ns: Vec<u64>,
    pub samples_ts: Vec<f64>,
    /// VmHWM after this test, bytes.
    pub peak_rss_bytes: u64,
    /// `--profile`, one-sequence tg: where a decode step's time went.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<StepProfile>,
}

/// A decode step's time by op (`--profile`), per token over the timed
/// repetitions.
#[derive(Serialize, Debug, Clone)]
pub struct StepProfile {
    pub tokens: u64,
    pub ns_per_token: f64,
    pub ops: Vec<OpShare>,
    /// Wall time outside the backend's ops (the session, sampling glue).
    pub outside_ns_per_token: f64,
    /// Weight bytes the step's matmuls read per token.
    pub weight_bytes_per_token: f64,
    /// GB/s of the memory read loop (`read_loop_gbs`) on the same threads,
    /// measured in this run.
    pub read_loop_gbs: f64,
}

/// One op of [`StepProfile`].
#[derive(Serialize, Debug, Clone)]
pub struct OpShare {
    pub op: &'static str,
    pub calls_per_token: f64,
    pub ns_per_token: f64,
    /// Weight GB/s while it ran (matmuls only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight_gbs: Option<f64>,
}

impl StepProfile {
    /// The step's profile; its `read_loop_gbs` is filled in after the tests.
    fn new(ops: &[mamba_gguf::backend::OpTime], tokens: u64, wall_ns: u64) -> Self {
        let per = |x: f64| x / tokens.max(1) as f64;
        let inside: f64 = ops.iter().map(|o| o.seconds * 1e9).sum();
        StepProfile {
            tokens,
            ns_per_token: per(wall_ns as f64),
            ops: ops
                .iter()
                .map(|o| OpShare {
                    op: o.op,
                    calls_per_token: per(o.calls as f64),
                    ns_per_token: per(o.seconds * 1e9),
                    weight_gbs: (o.weight_bytes > 0)
                        .then(|| o.weight_bytes as f64 / o.seconds.max(1e-12) / 1e9),
                })
                .collect(),
            outside_ns_per_token: per((wall_ns as f64 - inside).max(0.0)),
            weight_bytes_per_token: per(ops.iter().map(|o| o.weight_bytes as f64).sum()),
            read_loop_gbs: 0.0,
        }
    }

    /// The markdown table `bench --profile` prints under the results.
    fn table(&self, test: &str) -> String {
        let step = self.ns_per_token.max(1.0);
        let mut t = format!(
            "\n{test}: {:.0} us per token over {} tokens, by op\n\n\
             | op | calls/token | us/token | share | weight GB/s |\n\
             | --- | ---: | ---: | ---: | ---: |\n",
            step / 1e3,
            self.tokens
        );
        for o in &self.ops {
            let gbs = o.weight_gbs.map(|g| format!("{g:.1}")).unwrap_or_default();
            let _ = writeln!(
                t,
                "| {} | {:.0} | {:.1} | {:.1}% | {gbs} |",
                o.op,
                o.calls_per_token,
                o.ns_per_token / 1e3,
                100.0 * o.ns_per_token / step
            );
        }
        let _ = writeln!(
            t,
            "| (outside the ops) | | {:.1} | {:.1}% | |",
            self.outside_ns_per_token / 1e3,
            100.0 * self.outside_ns_per_token / step
        );
        let gbs = self.weight_bytes_per_token / step;
        let _ = write!(
            t,
            "\nweights read per token {:.3} GB: {gbs:.1} GB/s over the whole step, \
             {:.0}% of the read loop's {:.1} GB/s (same threads, this run)",
            self.weight_bytes_per_token / 1e9,
            100.0 * gbs / self.read_loop_gbs.max(1e-9),
            self.read_loop_gbs
        );
        t
    }
}

/// GB/s of [`quant::read_loop::sum_words`] over a 1 GiB buffer (anonymous
/// memory in transparent huge pages where the kernel gives them, as the
/// weights are read into) on the current pool's threads, each its own
/// contiguous share: the best of five passes.
fn read_loop_gbs() -> Result<f64> {
    use rayon::prelude::*;
    const BYTES: usize = 1 << 30;
    let mut m = memmap2::MmapMut::map_anon(BYTES).context("cannot map the read loop's buffer")?;
    #[cfg(target_os = "linux")]
    {
        let _ = m.advise(memmap2::Advice::HugePage);
    }
    m.par_chunks_mut(1 << 20)
        .enumerate()
        .for_each(|(i, c)| c.fill(i as u8));
    let threads = rayon::current_num_threads().max(1);
    let share = BYTES.div_ceil(threads).next_multiple_of(128);
    let mut best = 0f64;
    for _ in 0..5 {
        let t = Instant::now();
        let s: u64 = m
            .par_chunks(share)
            .map(quant::read_loop::sum_words)
            .reduce(|| 0, u64::wrapping_add);
        std::hint::black_box(s);
        best = best.max(BYTES as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    Ok(best)
}

impl Record {
    fn test_name(&self) -> String {
        let t = if self.n_gen == 0 {
            format!("pp{}", self.n_prompt)
        } else {
            format!("tg{}", self.n_gen)
        };
        let t = if self.n_parallel > 1 {
            format!("{t} x{}", self.n_parallel)
        } else {
            t
        };
        if self.n_depth > 0 {
            format!("{t} @ d{}", self.n_depth)
        } else {
            t
        }
    }
}

/// llama.cpp's names for `general.file_type`.
fn ftype_name(ft: u32) -> Option<&'static str> {
    Some(match ft {
        0 => "all F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K - Medium",
        11 => "Q3_K - Small",
        12 => "Q3_K - Medium",
        13 => "Q3_K - Large",
        14 => "Q4_K - Small",
        15 => "Q4_K - Medium",
        16 => "Q5_K - Small",
        17 => "Q5_K - Medium",
        18 => "Q6_K",
        32 => "BF16",
        _ => return None,
    })
}

/// Parameter count as llama-bench's size label ("1.4B", "130M").
fn size_label(n: u64) -> String {
    if n >= 1_000_000_000 {
        format!("{:.1}B", n as f64 / 1e9)
    } else {
        format!("{}M", (n as f64 / 1e6).round() as u64)
    }
}

/// "mamba 1.4B Q4_0": architecture, size, file type (or the weight types).
fn model_type(model: &Model, n_params: u64) -> String {
    let f = model.gguf();
    let arch = f.architecture().unwrap_or("mamba");
    let ft = f
        .get("general.file_type")
        .and_then(|v| v.as_u32())
        .and_then(ftype_name)
        .map(str::to_string)
        .unwrap_or_else(|| {
            let names: Vec<&str> = model.weight_types().iter().map(|t| t.name()).collect();
            names.join("+")
        });
    format!("{arch} {} {ft}", size_label(n_params))
}

/// Mean and sample standard deviation (0 for one sample).
fn mean_sd(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    if x.is_empty() {
        return (0.0, 0.0);
    }
    let m = x.iter().sum::<f64>() / n;
    if x.len() < 2 {
        return (m, 0.0);
    }
    let var = x.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (n - 1.0);
    (m, var.sqrt())
}

fn peak_rss_bytes() -> u64 {
    procmem::peak_rss_kib().unwrap_or(0) * 1024
}

struct Ctx<'a> {
    args: &'a Args,
    model_filename: String,
    model_type: String,
    model_size: u64,
    n_params: u64,
    threads: usize,
    backends: String,
    devices: String,
}

impl Ctx<'_> {
    fn record(
        &self,
        (n_prompt, n_gen, n_parallel): (usize, usize, usize),
        depth: usize,
        prefilled: usize,
        ns: Vec<u64>,
    ) -> Record {
        let n_tok = (n_parallel * (n_prompt + n_gen)) as f64;
        let ts: Vec<f64> = ns
            .iter()
            .map(|&t| n_tok * 1e9 / (t.max(1) as f64))
            .collect();
        let (avg_ts, stddev_ts) = mean_sd(&ts);
        let nsf: Vec<f64> = ns.iter().map(|&t| t as f64).collect();
        let (avg_ns, stddev_ns) = mean_sd(&nsf);
        Record {
            model_filename: self.model_filename.clone(),
            model_type: self.model_type.clone(),
            model_size: self.model_size,
            model_n_params: self.n_params,
            n_batch: self.args.prefill_chunk,
            n_ubatch: self.args.prefill_chunk,
            n_threads: self.threads,
            backends: self.backends.clone(),
            devices: self.devices.clone(),
            n_prompt,
            n_gen,
            n_depth: depth,
            n_parallel,
            depth_prefilled: prefilled,
            host_argmax: self.args.host_argmax && n_gen > 0,
            avg_ns: avg_ns.round() as u64,
            stddev_ns: stddev_ns.round() as u64,
            avg_ts,
            stddev_ts,
            samples_ns: ns,
            samples_ts: ts,
            peak_rss_bytes: peak_rss_bytes(),
            profile: None,
        }
    }
}

fn random_ids(rng: &mut rand::rngs::StdRng, n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|_| rng.gen_range(0..vocab as u32)).collect()
}

/// Runs every test; returns the records in order (per depth: pp, then tg).
fn run_all(ctx: &Ctx, model: &Model, mut progress: impl FnMut(&Record)) -> Result<Vec<Record>> {
    let a = ctx.args;
    let vocab = model.hp.n_vocab;
    let mut rng = rand::rngs::StdRng::seed_from_u64(a.seed);
    let mut depths = a.depth.clone();
    depths.sort_unstable();
    depths.dedup();

    let mut s = Session::with_chunk(model, a.prefill_chunk);
    let mut out = Vec::new();
    let mut fed = 0usize; // tokens really in the depth state
    let mut base: Snapshot = s.snapshot()?;
    for &d in &depths {
        // Bring the depth state forward (untimed).
        let target = d.min(a.real_depth_max);
        if target > fed {
            s.restore(&base)?;
            let ids = random_ids(&mut rng, target - fed, vocab);
            s.feed(&ids).context("prefill to depth")?;
            fed = target;
            base = s.snapshot()?;
        }
        if a.n_prompt > 0 {
            let ids = random_ids(&mut rng, a.n_prompt, vocab);
            s.restore(&base)?;
            s.feed(&ids[..a.n_prompt.min(a.prefill_chunk)])?; // warm-up
            let mut ns = Vec::with_capacity(a.reps);
            for _ in 0..a.reps {
                s.restore(&base)?;
                let t = Instant::now();
                s.feed(&ids)?;
                ns.push(t.elapsed().as_nanos() as u64);
            }
            let r = ctx.record((a.n_prompt, 0, 1), d, fed, ns);
            progress(&r);
            out.push(r);
        }
        if a.n_gen > 0 {
            s.restore(&base)?;
            let first = if fed == 0 {
                rng.gen_range(0..vocab as u32)
            } else {
                s.greedy()?
            };
            for &p in &a.parallel {
                let (ns, ops) = if p == 1 {
                    tg_alone(&mut s, &base, first, a)?
                } else {
                    (tg_batched(model, &base, first, p, a)?, None)
                };
                let wall: u64 = ns.iter().sum();
                let mut r = ctx.record((0, a.n_gen, p), d, fed, ns);
                if let Some(ops) = ops {
                    let tokens = (a.reps * a.n_gen) as u64;
                    r.profile = Some(StepProfile::new(&ops, tokens, wall));
                }
                progress(&r);
                out.push(r);
            }
        }
    }
    Ok(out)
}

/// tg of one sequence: a warm-up step, then `-r` timed runs of `-n` steps;
/// with `--profile`, each op's totals over the timed runs.
fn tg_alone(
    s: &mut Session,
    base: &Snapshot,
    first: u32,
    a: &Args,
) -> Result<(Vec<u64>, Option<Vec<mamba_gguf::backend::OpTime>>)> {
    s.restore(base)?;
    s.feed(&[first])?; // warm-up
    let be = s.model().backend();
    if a.profile {
        // Restoring the state between runs is no op of the forward: only
        // the steps are summed.
        be.profile_start();
    }
    let mut ns = Vec::with_capacity(a.reps);
    for _ in 0..a.reps {
        s.restore(base)?;
        let mut tok = first;
        let t = Instant::now();
        for _ in 0..a.n_gen {
            tok = if a.host_argmax {
                argmax(s.feed(&[tok])?)?
            } else {
                s.feed_greedy(&[tok])?
            };
        }
        ns.push(t.elapsed().as_nanos() as u64);
    }
    Ok((ns, a.profile.then(|| be.profile_stop())))
}

/// tg of `p` sequences in batched steps, each from `base` with its own
/// first token (`first + j`, so the sequences differ).
fn tg_batched(model: &Model, base: &Snapshot, first: u32, p: usize, a: &Args) -> Result<Vec<u64>> {
    let vocab = model.hp.n_vocab as u32;
    let mut seqs = (0..p)
        .map(|_| Session::try_with_chunk(model, 1))
        .collect::<std::result::Result<Vec<_>, _>>()
        .context("cannot allocate the parallel sequences")?;
    let mut dec = BatchDecoder::new(model, p);
    let starts: Vec<u32> = (0..p as u32).map(|j| (first + j) % vocab).collect();
    let mut run = |steps: usize| -> Result<u64> {
        for s in seqs.iter_mut() {
            s.restore(base)?;
        }
        let mut toks = starts.clone();
        let t = Instant::now();
        for _ in 0..steps {
            let mut refs: Vec<&mut Session> = seqs.iter_mut().collect();
            if a.host_argmax {
                dec.step(&mut refs, &toks)?;
                for (tok, s) in toks.iter_mut().zip(refs.iter_mut()) {
                    *tok = argmax(s.logits()?)?;
                }
            } else {
                dec.step_greedy(&mut refs, &toks)?;
                for (tok, s) in toks.iter_mut().zip(refs.iter_mut()) {
                    *tok = s.greedy()?;
                }
            }
        }
        Ok(t.elapsed().as_nanos() as u64)
    };
    run(1)?; // warm-up
    (0..a.reps).map(|_| run(a.n_gen)).collect()
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn table_header() -> String {
    "| model                          |       size |     params | backend | threads |           test |                  t/s | peak RSS MiB |\n\
     | ------------------------------ | ---------: | ---------: | ------- | ------: | -------------: | -------------------: | -----------: |"
        .to_string()
}

fn table_row(r: &Record) -> String {
    format!(
        "| {:<30} | {:>10} | {:>10} | {:<7} | {:>7} | {:>14} | {:>20} | {:>12.1} |",
        r.model_type,
        if r.model_size >= 1 << 30 {
            format!("{:.2} GiB", r.model_size as f64 / (1u64 << 30) as f64)
        } else {
            format!("{:.2} MiB", mib(r.model_size))
        },
        if r.model_n_params >= 1_000_000_000 {
            format!("{:.2} B", r.model_n_params as f64 / 1e9)
        } else {
            format!("{:.2} M", r.model_n_params as f64 / 1e6)
        },
        r.backends,
        r.n_threads,
        r.test_name(),
        format!("{:.2} ± {:.2}", r.avg_ts, r.stddev_ts),
        mib(r.peak_rss_bytes)
    )
}

/// A hand-written SVG: generation tokens/s (left axis) and peak RSS (right
/// axis) against depth, depths evenly spaced.
pub fn svg_plot(records: &[Record], title: &str) -> String {
    // Single-sequence tg only (a --parallel record is another series).
    let tg: Vec<&Record> = records
        .iter()
        .filter(|r| r.n_gen > 0 && r.n_parallel == 1)
        .collect();
    let (w, h) = (720.0f64, 420.0f64);
    let (l, r, t, b) = (70.0, 80.0, 50.0, 60.0);
    let pw = w - l - r;
    let ph = h - t - b;
    let n = tg.len().max(1);
    let x_at = |i: usize| {
        if n == 1 {
            l + pw / 2.0
        } else {
            l + pw * i as f64 / (n - 1) as f64
        }
    };
    let ts_max = tg
        .iter()
        .map(|r| r.avg_ts + r.stddev_ts)
        .fold(0.0, f64::max)
        .max(1e-9)
        * 1.15;
    let rss_max = tg
        .iter()
        .map(|r| mib(r.peak_rss_bytes))
        .fold(0.0, f64::max)
        .max(1e-9)
        * 1.15;
    let y_ts = |v: f64| t + ph * (1.0 - v / ts_max);
    let y_rss = |v: f64| t + ph * (1.0 - v / rss_max);
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="15">{}</text>"#,
        w / 2.0,
        esc(title)
    );
    // Axes and horizontal grid (5 steps).
    let _ = writeln!(
        s,
        r##"<path d="M{l} {t} V{} H{}" fill="none" stroke="#333"/><line x1="{}" y1="{t}" x2="{}" y2="{}" stroke="#333"/>"##,
        t + ph,
        l + pw,
        l + pw,
        l + pw,
        t + ph
    );
    for k in 0..=5 {
        let f = k as f64 / 5.0;
        let y = t + ph * (1.0 - f);
        let _ = writeln!(
            s,
            r##"<line x1="{l}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end" fill="#1f77b4">{:.1}</text><text x="{}" y="{:.1}" fill="#d62728">{:.0}</text>"##,
            l + pw,
            l - 6.0,
            y + 4.0,
            ts_max * f,
            l + pw + 6.0,
            y + 4.0,
            rss_max * f
        );
    }
    for (i, rec) in tg.iter().enumerate() {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            x_at(i),
            t + ph + 18.0,
            rec.n_depth
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">context depth (tokens already in the state)</text>"#,
        l + pw / 2.0,
        h - 14.0
    );
    let _ = writeln!(
        s,
        r##"<text transform="translate(18 {}) rotate(-90)" text-anchor="middle" fill="#1f77b4">generation tokens/s (tg{})</text>"##,
        t + ph / 2.0,
        tg.first().map(|r| r.n_gen).unwrap_or(0)
    );
    let _ = writeln!(
        s,
        r##"<text transform="translate({} {}) rotate(90)" text-anchor="middle" fill="#d62728">peak RSS (MiB)</text>"##,
        w - 18.0,
        t + ph / 2.0
    );
    // The two series.
    let line = |pts: Vec<(f64, f64)>, color: &str, s: &mut String| {
        let d: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
            d.join(" ")
        );
        for (x, y) in pts {
            let _ = writeln!(
                s,
                r#"<circle cx="{x:.1}" cy="{y:.1}" r="4" fill="{color}"/>"#
            );
        }
    };
    line(
        tg.iter()
            .enumerate()
            .map(|(i, r)| (x_at(i), y_ts(r.avg_ts)))
            .collect(),
        "#1f77b4",
        &mut s,
    );
    for (i, rec) in tg.iter().enumerate() {
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#1f77b4"/>"##,
            y_ts(rec.avg_ts - rec.stddev_ts),
            y_ts(rec.avg_ts + rec.stddev_ts),
            x = x_at(i)
        );
    }
    line(
        tg.iter()
            .enumerate()
            .map(|(i, r)| (x_at(i), y_rss(mib(r.peak_rss_bytes))))
            .collect(),
        "#d62728",
        &mut s,
    );
    s.push_str("</svg>\n");
    s
}

fn write_atomic(path: &Path, text: &str) -> Result<()> {
    path.file_name().context("--plot needs a file name")?;
    gguf::tmpfile::write_atomic(path, text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// `--verify`: the tensor-core self-test's verdicts (mamba_cuda::mma, run
/// when the CUDA backend loaded the model) on stderr; the kernels switched off.
fn verify_report() -> Vec<String> {
    #[cfg(feature = "cuda")]
    {
        use mamba_cuda::mma::Verdict;
        let all = mamba_cuda::mma::verdicts();
        if all.is_empty() {
            eprintln!(
                "verify: no GPU self-test ran (the CPU backend, or MAMBA_GGUF_CUDA_SELFTEST=0)"
            );
        }
        let mut off = Vec::new();
        for (dev, kernel, v) in all {
            let what = match &v {
                Verdict::Serving => "agrees with the dp4a matmul: serving".to_string(),
                Verdict::Unavailable => {
                    "not on this card (below sm_80): the dp4a matmul serves".to_string()
                }
                Verdict::SwitchedOff(why) => {
                    off.push(kernel.to_string());
                    format!("SWITCHED OFF ({why}): the dp4a matmul serves")
                }
            };
            eprintln!("verify: {dev}: {kernel} {what}");
        }
        off
    }
    #[cfg(not(feature = "cuda"))]
    {
        eprintln!("verify: built without the CUDA backend: nothing to verify");
        Vec::new()
    }
}

pub fn run(args: Args) -> Result<()> {
    if args.threads == Some(0) {
        bail!("--threads must be at least 1");
    }
    if args.reps == 0 {
        bail!("--repetitions must be at least 1");
    }
    if args.prefill_chunk == 0 {
        bail!("--prefill-chunk must be at least 1");
    }
    if args.n_prompt == 0 && args.n_gen == 0 {
        bail!("nothing to measure: -p and -n are both 0");
    }
    if args.parallel.contains(&0) {
        bail!("--parallel values must be at least 1");
    }
    let threads = args.threads.unwrap_or_else(super::threads::default_threads);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .context("cannot start the thread pool")?;

    let model = super::run::load_model(&args.model, args.device, args.mmap)?;
    if args.profile {
        if !model.backend().profile_start() {
            bail!(
                "--profile times the CPU backend's ops; on {} the host only queues them",
                model.backend().device()
            );
        }
        model.backend().profile_stop();
    }
    let switched_off = if args.verify {
        verify_report()
    } else {
        Vec::new()
    };
    let tensors = model.gguf().tensors();
    let n_params: u64 = tensors.iter().map(|t| t.n_elements).sum();
    let model_size: u64 = tensors.iter().map(|t| t.n_bytes as u64).sum();
    let ctx = Ctx {
        args: &args,
        model_filename: args.model.display().to_string(),
        model_type: model_type(&model, n_params),
        model_size,
        n_params,
        threads,
        backends: model.backend().name().to_string(),
        devices: model.backend().device(),
    };

    // Write errors (a closed pipe) end the run with an error, not a panic.
    let stdout = std::io::stdout();
    let mut write_err: Option<std::io::Error> = None;
    if !args.json {
        writeln!(stdout.lock(), "{}", table_header())?;
    }
    let json = args.json;
    let mut records = pool.install(|| {
        run_all(&ctx, &model, |r| {
            if !json && write_err.is_none() {
                let mut o = stdout.lock();
                if let Err(e) = writeln!(o, "{}", table_row(r)).and_then(|_| o.flush()) {
                    write_err = Some(e);
                }
            }
        })
    })?;
    if let Some(e) = write_err {
        return Err(e).context("cannot write to stdout");
    }
    if args.profile {
        // After the tests, when the load's page-cache and huge-page work
        // is long over, on the pool that decoded.
        let gbs = pool.install(read_loop_gbs)?;
        for p in records.iter_mut().filter_map(|r| r.profile.as_mut()) {
            p.read_loop_gbs = gbs;
        }
    }
    if json {
        writeln!(stdout.lock(), "{}", serde_json::to_string_pretty(&records)?)
            .context("cannot write to stdout")?;
    }
    if !json {
        for r in &records {
            if let Some(p) = &r.profile {
                writeln!(stdout.lock(), "{}", p.table(&r.test_name()))
                    .context("cannot write to stdout")?;
            }
        }
    }
    if let Some(p) = &args.plot {
        let title = format!("{} — {} threads", ctx.model_type, threads);
        write_atomic(p, &svg_plot(&records, &title))?;
        if !json {
            eprintln!("plot written to {}", p.display());
        }
    }
    if !switched_off.is_empty() {
        bail!(
            "--verify: the self-test switched off {} (those weight types ran on the dp4a path)",
            switched_off.join(", ")
        );
    }
    Ok(())
}
