//! `mamba-gguf quantize IN.gguf OUT.gguf TYPE [--pure] [--allow-requantize]`:
//! requantize an F32/F16/BF16 `mamba` GGUF (ours or llama.cpp's).

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use convert::QuantizeOptions;

use super::convert::{cancel_flag, parse_type, Bar};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Input GGUF (F32, F16 or BF16 matrices).
    pub input: PathBuf,
    /// Output GGUF.
    pub output: PathBuf,
    /// Output type: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q2_k_s,
    /// q3_k_s, q3_k_m, q3_k_l, q4_k_s, q4_k_m, q5_k_s, q5_k_m, q6_k, iq4_nl,
    /// iq4_xs, iq3_xxs, iq3_xs, iq3_s, iq3_m, iq2_xxs, iq2_xs, iq2_s, iq2_m, iq1_s, iq1_m, tq1_0, tq2_0
    /// (llama-quantize's names; the iq2 and iq1 types, iq3_xxs and q2_k_s need --imatrix; q3_k, q4_k, q5_k mean
    /// their _m).
    #[arg(value_name = "TYPE")]
    pub ty: String,
    /// Give every matrix the one type (no Q6_K output head).
    #[arg(long)]
    pub pure: bool,
    /// Accept an already-quantized input (dequantized, then requantized).
    #[arg(long)]
    pub allow_requantize: bool,
    /// Overwrite an existing output file.
    #[arg(long)]
    pub force: bool,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// An importance matrix (GGUF from `mamba-gguf imatrix` or llama-imatrix,
    /// or the older .dat form): each block's scale is fitted weighting each
    /// column by it, as `llama-quantize --imatrix` does (same bytes).
    /// Needed for q2_k_s.
    #[arg(long, value_name = "FILE")]
    pub imatrix: Option<PathBuf>,
    /// No progress bar or summary.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

pub fn run(args: Args) -> Result<()> {
    let ft = parse_type(&args.ty)?;
    let opts = QuantizeOptions {
        file_type: ft,
        pure: args.pure,
        allow_requantize: args.allow_requantize,
        force: args.force,
        threads: args.threads,

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
    match convert::quantize(&args.input, &args.output, &opts, &cancel, &mut |p| {
        bar.on(p)
    }) {
        Ok(s) => {
            bar.finish(&s);
            Ok(())
        }
        Err(e) => {
            bar.abandon();
            Err(anyhow!(e).context(format!("quantizing {}", args.input.display())))
        }
    }
}
