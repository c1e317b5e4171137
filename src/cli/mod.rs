//! The command-line front end: one module per subcommand.

pub mod bench;
pub mod chat;
pub mod convert;
pub mod imatrix;
pub mod inspect;
pub mod logits;
pub mod perplexity;
pub mod quantize;
pub mod run;
pub mod serve;
pub mod threads;
pub mod tokenize;
