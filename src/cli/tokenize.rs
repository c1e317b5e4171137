//! `mamba-gguf tokenize`: the token ids (and pieces) a model's tokenizer
//! gives a text. Works on any GGUF with tokenizer keys, vocab-only ones too.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use mamba_gguf::tokenizer::Tokenizer;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The GGUF file whose tokenizer to use.
    #[arg(short = 'm', long = "model")]
    pub model: PathBuf,
    /// The text to tokenize.
    #[arg(short = 'p', long = "prompt", conflicts_with = "file")]
    pub prompt: Option<String>,
    /// A UTF-8 file whose exact bytes are the text.
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Print `{"ids": [...], "pieces": [...]}`.
    #[arg(long)]
    pub json: bool,
    /// Prepend the BOS token.
    #[arg(long)]
    pub bos: bool,
    /// Use the `tokenizer.ggml.*` vocabulary even if the file carries
    /// `tokenizer.huggingface.json`.
    #[arg(long)]
    pub ggml_vocab: bool,
}

pub fn run(args: Args) -> Result<()> {
    let text = match (&args.prompt, &args.file) {
        (Some(p), None) => p.clone(),
        (None, Some(f)) => {
            let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
            match String::from_utf8(bytes) {
                Ok(s) => s,
                Err(e) => bail!(
                    "{} is not UTF-8 text (invalid byte at offset {})",
                    f.display(),
                    e.utf8_error().valid_up_to()
                ),
            }
        }
        _ => bail!("give the text with exactly one of -p TEXT or -f FILE"),
    };
    let file = gguf::GgufFile::open(&args.model)
        .with_context(|| format!("opening {}", args.model.display()))?;
    let tok = if args.ggml_vocab {
        Tokenizer::from_gguf_vocab(&file)
    } else {
        Tokenizer::from_gguf(&file)
    }
    .with_context(|| format!("building the tokenizer of {}", args.model.display()))?;
    let ids = tok.encode(&text, args.bos)?;
    let pieces: Vec<String> = ids.iter().map(|&id| tok.token_piece(id)).collect();

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.json {
        let v = serde_json::json!({ "ids": ids, "pieces": pieces });
        writeln!(out, "{v}")?;
    } else {
        for (id, piece) in ids.iter().zip(&pieces) {
            writeln!(out, "{id:>7} {piece:?}")?;
        }
    }
    out.flush()?;
    Ok(())
}
