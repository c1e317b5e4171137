//! `mamba-gguf inspect` (not yet built).

use anyhow::{bail, Result};

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> Result<()> {
    bail!("`inspect` is not built yet")
}
