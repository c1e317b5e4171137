//! One rule for tests that cannot run here: say so loudly, and never pass
//! under CI. Included by path from every test crate of the workspace
//! (`#[path = ".../tests/support/skip.rs"] mod skip;`).
//!
//! Rust's test harness has no "skipped" state, so a test that returns early
//! shows as `ok`. `skip_or_fail` prints `SKIPPED: <test>: <why>` to stderr
//! (visible with `--nocapture`, and grep-able in CI logs), and when the
//! environment has `CI=true` it panics with the same reason instead: CI
//! installs everything these tests need, so a skip there is a broken CI.
#![allow(dead_code)]

/// True when running under CI (`CI=true`, as CI runners set it).
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Report that `test` could not run because of `why`. Outside CI this prints
/// a `SKIPPED:` line and returns, so the caller returns; under `CI=true` it
/// panics, failing the test.
#[track_caller]
pub fn skip_or_fail(test: &str, why: &str) {
    if under_ci() {
        panic!("SKIPPED under CI=true is a failure: {test}: {why}");
    }
    eprintln!("SKIPPED: {test}: {why}");
}
