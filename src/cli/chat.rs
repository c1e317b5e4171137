//! `mamba-gguf chat` (being built).

use anyhow::{bail, Result};

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> Result<()> {
    bail!("`chat` is not built yet")
}
