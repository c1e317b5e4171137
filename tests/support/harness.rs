//! The test harness of the test binaries whose tests may find at run time
//! that they cannot run here (a Python package is missing, a CUDA driver is
//! present where its absence is the point). Rust's own harness has no such
//! state: a test that returns early shows as `ok`, so a check that did not
//! run would be counted as passed. These binaries are `harness = false`
//! (Cargo.toml) and run their tests through `libtest-mimic`, which takes the
//! same arguments as libtest (filters, `--skip`, `--exact`,
//! `--test-threads`, `--ignored`, `--list`, `-q`, ...).
//!
//! A test returns [`Ran`]. `Err(Skip)` reports it as `ignored (<why>)` on its
//! own line, counts it as ignored in the summary, and lists it again after
//! the summary; a [`Skip::needs`] (something CI installs) is a failure
//! instead when the environment has `CI=true`: CI installs everything these
//! tests need, so a skip there is a broken CI. A panic fails the test, as
//! with libtest. Included by path from every test crate of the workspace
//! (`#[path = ".../tests/support/harness.rs"] mod harness;`).
#![allow(dead_code)]

use std::process::ExitCode;
use std::sync::Mutex;

use libtest_mimic::{Arguments, Completion, Failed, Trial};

/// Why a test could not run here.
#[derive(Debug)]
pub struct Skip {
    why: String,
    /// Under `CI=true` this skip is a failure.
    fails_ci: bool,
}

impl Skip {
    /// The test needs something that is not installed here but that CI
    /// installs (a Python package): ignored here, a failure under `CI=true`.
    pub fn needs(why: impl Into<String>) -> Skip {
        Skip {
            why: why.into(),
            fails_ci: true,
        }
    }

    /// The test cannot run on this machine by its nature (a CUDA driver is
    /// present where the test is about its absence): ignored, CI included.
    pub fn not_here(why: impl Into<String>) -> Skip {
        Skip {
            why: why.into(),
            fails_ci: false,
        }
    }
}

/// What a test that may be skipped returns.
pub type Ran = Result<(), Skip>;

/// True when running under CI (`CI=true`, as CI runners set it).
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// The tests ignored at run time, with their reasons, for the closing list.
static IGNORED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// A test that always runs: passes unless it panics.
pub fn test(name: &str, f: fn()) -> Trial {
    Trial::test(name, move || {
        f();
        Ok(())
    })
}

/// A test that may find that it cannot run here (see [`Skip`]).
pub fn skippable(name: &str, f: fn() -> Ran) -> Trial {
    let name_ = name.to_string();
    Trial::ignorable_test(name, move || match f() {
        Ok(()) => Ok(Completion::Completed),
        Err(Skip {
            why,
            fails_ci: true,
        }) if under_ci() => Err(Failed::from(format!(
            "could not run, and under CI=true a skip is a failure: {why}"
        ))),
        Err(Skip { why, .. }) => {
            IGNORED
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(format!("{name_}: {why}"));
            Ok(Completion::ignored_with(why))
        }
    })
}

/// Runs `trials` with the command line's arguments (libtest's), then lists
/// the tests ignored at run time with their reasons.
pub fn main(trials: Vec<Trial>) -> ExitCode {
    run(Arguments::from_args(), trials)
}

/// As [`main`], one test at a time unless `--test-threads` says otherwise:
/// for tests that measure the whole process (its RSS, its allocations).
pub fn main_one_at_a_time(trials: Vec<Trial>) -> ExitCode {
    let mut args = Arguments::from_args();
    args.test_threads.get_or_insert(1);
    run(args, trials)
}

fn run(args: Arguments, trials: Vec<Trial>) -> ExitCode {
    let conclusion = libtest_mimic::run(&args, trials);
    let ignored = IGNORED.lock().unwrap_or_else(|e| e.into_inner());
    if !ignored.is_empty() {
        println!("ignored at run time (could not run here):");
        for line in ignored.iter() {
            println!("    {line}");
        }
        println!();
    }
    conclusion.exit_code()
}
