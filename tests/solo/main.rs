//! The root crate's tests that need the process to themselves or may find
//! at run time that they cannot run here, in one test binary on their own
//! harness (tests/support/harness.rs, `harness = false` in Cargo.toml),
//! which runs them one at a time (unless `--test-threads` says otherwise):
//! - runtime_long and server_abuse bound the growth of the process's
//!   resident memory, which another test running beside them would move;
//! - server_openai's tests need the `openai` and `anthropic` Python
//!   packages: without one its test is reported as ignored, with the
//!   reason (under CI=true, it fails);
//! - server_ui drives the chat page in headless Chromium, ignored (a
//!   failure under CI=true) without chromium and chromedriver.
//! - server_state_store runs two replicas of `serve` on a real SeaweedFS
//!   store, ignored (a failure under CI=true) without `weed` or `openai`.

#[path = "../support/harness.rs"]
mod harness;
#[path = "../runtime_common/mod.rs"]
mod runtime_common;

mod runtime_long;
mod server_abuse;
mod server_openai;
mod server_state_store;
mod server_ui;

use std::process::ExitCode;

fn main() -> ExitCode {
    harness::main_one_at_a_time(vec![
        harness::test(
            "runtime_long::hundred_thousand_tokens_finite_logits_and_flat_memory",
            runtime_long::hundred_thousand_tokens_finite_logits_and_flat_memory,
        ),
        harness::test(
            "server_abuse::the_server_survives_abuse",
            server_abuse::the_server_survives_abuse,
        ),
        harness::skippable(
            "server_openai::official_openai_client",
            server_openai::official_openai_client,
        ),
        harness::skippable(
            "server_openai::official_openai_client_tools",
            server_openai::official_openai_client_tools,
        ),
        harness::skippable(
            "server_openai::official_anthropic_client",
            server_openai::official_anthropic_client,
        ),
        harness::skippable(
            "server_openai::official_ollama_client",
            server_openai::official_ollama_client,
        ),
        harness::skippable(
            "server_ui::chat_page_in_chromium",
            server_ui::chat_page_in_chromium,
        ),
        harness::skippable(
            "server_state_store::two_replicas_on_seaweedfs",
            server_state_store::two_replicas_on_seaweedfs,
        ),
    ])
}
