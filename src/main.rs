//! `mamba-gguf`: convert, inspect and run Falcon Mamba / Mamba GGUF models.

mod cli;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "mamba-gguf",
    version,
    about = "Convert and run 4-bit Falcon Mamba models in GGUF"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Convert a Hugging Face checkpoint folder to GGUF.
    Convert(cli::convert::Args),
    /// Requantize an F32/F16/BF16 GGUF to another type.
    Quantize(cli::quantize::Args),
    /// Print a GGUF file's metadata and tensor table.
    Inspect(cli::inspect::Args),
    /// Generate text from a prompt.
    Run(cli::run::Args),
    /// Print the logits a model gives for a text or token ids.
    Logits(cli::logits::Args),
    /// Tokenize a text with a model's (or vocab-only GGUF's) tokenizer.
    Tokenize(cli::tokenize::Args),
    /// Perplexity over a text file, optionally KL divergence from a base model.
    Perplexity(cli::perplexity::Args),
    /// Collect an importance matrix over a text, for quantize/convert --imatrix.
    Imatrix(cli::imatrix::Args),
    /// Chat interactively with an instruct model.
    Chat(cli::chat::Args),
    /// Serve an OpenAI-compatible HTTP API.
    Serve(cli::serve::Args),
    /// Measure prompt processing and generation speed, llama-bench style.
    Bench(cli::bench::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Convert(a) => cli::convert::run(a),
        Command::Quantize(a) => cli::quantize::run(a),
        Command::Inspect(a) => cli::inspect::run(a),
        Command::Run(a) => cli::run::run(a),
        Command::Logits(a) => cli::logits::run(a),
        Command::Tokenize(a) => cli::tokenize::run(a),
        Command::Perplexity(a) => cli::perplexity::run(a),
        Command::Imatrix(a) => cli::imatrix::run(a),
        Command::Chat(a) => cli::chat::run(a),
        Command::Serve(a) => cli::serve::run(a),
        Command::Bench(a) => cli::bench::run(a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
