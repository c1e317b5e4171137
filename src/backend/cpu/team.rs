//! The threads of one decode step, kept awake between its parallel ops.
//!
//! A decode step is some 260 parallel ops (four matmuls and a scan per
//! block) with a little serial work between them. On rayon alone each op
//! wakes the pool's sleeping threads again, and on a small VM a wake-up
//! costs tens of microseconds: `bench --profile` showed x_proj and dt_proj
//! (about a megabyte each at 7B) streaming no faster on two threads than on
//! one. Inside [`with_team`] the other threads of rayon's current pool wait
//! for work by spinning (then yielding) instead, and each parallel op hands
//! them its parts through a few atomics: a barrier per op, no lock, no
//! sleep.
//!
//! [`par_chunks_mut`] is the one parallel loop the CPU backend uses: on the
//! team of the calling thread when it leads one, else on rayon. The leader
//! takes parts too, so an op completes even if no helper ever joins (the
//! pool busy elsewhere): slower, never stuck.

use std::cell::{Cell, UnsafeCell};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};
use std::sync::Mutex;

use rayon::prelude::*;

use super::matmul::SharedOut;

/// One op's work: `f(part)` for every part, published by the leader.
type Job = *const (dyn Fn(usize) + Sync + 'static);

/// Spins of an idle helper before it starts yielding its core between
/// checks.
const SPINS_BEFORE_YIELD: u32 = 4096;

struct Team {
    /// The op being run: written by the leader only while no helper can
    /// read it (see [`Team::run`]).
    job: UnsafeCell<Option<Job>>,
    /// Parts in the current op, the next one to claim, and those not done.
    parts: AtomicUsize,
    next: AtomicUsize,
    left: AtomicUsize,
    /// Bumped when an op is published, so a helper enters each op once.
    epoch: AtomicUsize,
    /// Whether `job` is the current op (helpers may enter).
    open: AtomicBool,
    /// Helpers inside the current op (holding `job`).
    inside: AtomicUsize,
    quit: AtomicBool,
}

// SAFETY: `job` is written by the leader only while `open` is false and no
// helper is inside (`inside == 0`, checked after closing), and read by
// helpers only between incrementing `inside` and seeing `open` true; the
// closure it points to outlives the op (`run` waits for every part and
// every helper). Everything else is atomic.
unsafe impl Sync for Team {}

thread_local! {
    /// The team the current thread leads, if any.
    static LEADING: Cell<*const Team> = const { Cell::new(std::ptr::null()) };
}

impl Team {
    fn new() -> Team {
        Team {
            job: UnsafeCell::new(None),
            parts: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            left: AtomicUsize::new(0),
            epoch: AtomicUsize::new(0),
            open: AtomicBool::new(false),
            inside: AtomicUsize::new(0),
            quit: AtomicBool::new(false),
        }
    }

    /// Claims and runs parts of `job` until none are left. A part counts
    /// as done also when it panics (the panic goes on), so the leader never
    /// waits for it forever.
    fn take_parts(&self, job: &(dyn Fn(usize) + Sync)) {
        struct Done<'a>(&'a AtomicUsize);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Release);
            }
        }
        let parts = self.parts.load(Acquire);
        loop {
            let i = self.next.fetch_add(1, AcqRel);
            if i >= parts {
                return;
            }
            let _done = Done(&self.left);
            job(i);
        }
    }

    /// `f(0..parts)` over the leader and whichever helpers join; returns
    /// when every part is done and no helper holds `f`.
    fn run(&self, parts: usize, f: &(dyn Fn(usize) + Sync)) {
        // SAFETY: only the lifetime is erased; the pointer is dereferenced
        // only while this call runs (helpers leave before it returns).
        let job: Job = unsafe {
            std::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), Job>(f as *const _)
        };
        // SAFETY: `open` is false and `inside` was 0 when the previous op
        // ended, so no helper reads `job` now (see `impl Sync`).
        unsafe { *self.job.get() = Some(job) };
        self.parts.store(parts, Relaxed);
        self.next.store(0, Relaxed);
        self.left.store(parts, Relaxed);
        self.open.store(true, SeqCst);
        self.epoch.fetch_add(1, SeqCst);
        let _finish = Finish { team: self, parts };
        self.take_parts(f);
    }

    /// A helper: joins each op as it is published, until the team quits.
    fn help(&self) {
        let mut seen = self.epoch.load(Acquire);
        let mut idle = 0u32;
        loop {
            if self.quit.load(Acquire) {
                return;
            }
            let e = self.epoch.load(Acquire);
            if e == seen {
                idle = idle.saturating_add(1);
                if idle < SPINS_BEFORE_YIELD {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
                continue;
            }
            seen = e;
            idle = 0;
            // Counted inside until this scope ends, also by a panic.
            struct Inside<'a>(&'a AtomicUsize);
            impl Drop for Inside<'_> {
                fn drop(&mut self) {
                    self.0.fetch_sub(1, SeqCst);
                }
            }
            self.inside.fetch_add(1, SeqCst);
            let _inside = Inside(&self.inside);
            if self.open.load(SeqCst) {
                // SAFETY: open, and this helper is counted inside: the
                // leader neither rewrites `job` nor lets the closure go
                // until it leaves (see `impl Sync`).
                if let Some(job) = unsafe { *self.job.get() } {
                    // SAFETY: as above, the closure is alive.
                    self.take_parts(unsafe { &*job });
                }
            }
        }
    }
}

/// The end of an op in [`Team::run`], also when the leader's own part
/// panics: the parts nobody took are dropped (never run), the ones helpers
/// hold are waited for, the op is closed, and the leader returns (or
/// unwinds) only once no helper holds its closure.
struct Finish<'a> {
    team: &'a Team,
    parts: usize,
}

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        let t = self.team;
        let taken = t.next.swap(usize::MAX / 2, AcqRel);
        let unclaimed = self.parts.saturating_sub(taken);
        if unclaimed > 0 {
            t.left.fetch_sub(unclaimed, AcqRel);
        }
        wait_for(|| t.left.load(Acquire) == 0);
        t.open.store(false, SeqCst);
        wait_for(|| t.inside.load(SeqCst) == 0);
    }
}

/// Spins until `done()`, then yields between checks: a helper that took a
/// part and lost its core on a busy machine gets it back.
fn wait_for(done: impl Fn() -> bool) {
    let mut spins = 0u32;
    while !done() {
        if spins < SPINS_BEFORE_YIELD {
            spins += 1;
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

/// Ends the team when the leader's work ends, also by a panic.
struct Leading<'a>(&'a Team);

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        LEADING.with(|c| c.set(std::ptr::null()));
        self.0.quit.store(true, Release);
    }
}

/// Runs `f` (a decode step) on the calling thread with the other threads
/// of rayon's current pool kept awake for its parallel ops
/// ([`par_chunks_mut`]): from a pool's own thread (inside
/// `ThreadPool::install`) its pool's other threads help, from any other
/// thread the global pool's threads do. `f` alone on one thread, or when
/// the calling thread already leads a team.
pub(crate) fn with_team<R>(f: impl FnOnce() -> R) -> R {
    let threads = rayon::current_num_threads();
    if threads <= 1 || LEADING.with(|c| !c.get().is_null()) {
        return f();
    }
    // The caller and threads - 1 helpers: the pool's size in all, also
    // when the caller is a thread outside the pool.
    let helpers = threads - 1;
    let team = Team::new();
    let mut out = None;
    rayon::in_place_scope(|s| {
        for _ in 0..helpers {
            s.spawn(|_| team.help());
        }
        let _leading = Leading(&team);
        LEADING.with(|c| c.set(&team));
        out = Some(f());
    });
    match out {
        Some(r) => r,
        // `f` ran to its end above, or its panic went on through the scope.
        None => unreachable!("with_team: the step neither returned nor panicked"),
    }
}

/// `f(i, chunk i)` for the `chunk`-long pieces of `buf` (the last may be
/// shorter), in parallel: on the calling thread's team if it leads one,
/// else on rayon's current pool. The first error is returned (the other
/// parts still run).
pub(crate) fn par_chunks_mut<T: Send, E: Send>(
    buf: &mut [T],
    chunk: usize,
    f: impl Fn(usize, &mut [T]) -> Result<(), E> + Sync,
) -> Result<(), E> {
    let chunk = chunk.max(1);
    let team = LEADING.with(|c| c.get());
    if team.is_null() {
        return buf
            .par_chunks_mut(chunk)
            .enumerate()
            .try_for_each(|(i, c)| f(i, c));
    }
    let (len, base) = (buf.len(), SharedOut(buf.as_mut_ptr()));
    let err = Mutex::new(None);
    let part = |i: usize| {
        let start = i * chunk;
        let end = (start + chunk).min(len);
        let base = &base;
        // SAFETY: parts are disjoint ranges of `buf`, which this call
        // borrows mutably until `run` returns, after every part is done.
        let piece = unsafe { std::slice::from_raw_parts_mut(base.0.add(start), end - start) };
        if let Err(e) = f(i, piece) {
            let mut first = err.lock().unwrap_or_else(|p| p.into_inner());
            first.get_or_insert(e);
        }
    };
    // SAFETY: LEADING is set only by `with_team` on this thread, for the
    // life of its team, which outlives this call (it is on that call's
    // stack, below us).
    unsafe { &*team }.run(len.div_ceil(chunk), &part);
    match err.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// [`par_chunks_mut`] for parts that cannot fail.
pub(crate) fn par_chunks_each<T: Send>(
    buf: &mut [T],
    chunk: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    let done = par_chunks_mut(buf, chunk, |i, c| {
        f(i, c);
        Ok::<(), std::convert::Infallible>(())
    });
    let Ok(()) = done;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .expect("pool")
    }

    #[test]
    fn every_part_runs_once_in_and_out_of_a_team() {
        for threads in [1, 2, 3, 8] {
            pool(threads).install(|| {
                let check = || {
                    for (len, chunk) in [(0usize, 4usize), (1, 4), (10, 3), (1000, 7), (64, 64)] {
                        let mut v = vec![0u32; len];
                        par_chunks_mut(&mut v, chunk, |i, c| {
                            for (k, x) in c.iter_mut().enumerate() {
                                *x += (i * chunk + k) as u32 + 1;
                            }
                            Ok::<(), ()>(())
                        })
                        .expect("no error");
                        let want: Vec<u32> = (1..=len as u32).collect();
                        assert_eq!(v, want, "threads {threads} len {len} chunk {chunk}");
                    }
                };
                check();
                // Many ops in one team, as a decode step has.
                with_team(|| {
                    for _ in 0..200 {
                        check();
                    }
                    // Nested: the inner call runs on the same team.
                    with_team(check);
                });
            });
        }
    }

    #[test]
    fn a_thread_outside_the_pool_leads_on_the_global_pool() {
        // The test thread is no rayon thread: the global pool's threads help.
        let mut v = vec![0u32; 1000];
        with_team(|| {
            for _ in 0..100 {
                par_chunks_mut(&mut v, 7, |_, c| {
                    for x in c.iter_mut() {
                        *x += 1;
                    }
                    Ok::<(), ()>(())
                })
                .expect("ok");
            }
        });
        assert!(v.iter().all(|&x| x == 100));
    }

    #[test]
    fn helpers_take_parts() {
        // Parts long enough (about 50 us) that the leader cannot finish an
        // op before a helper joins it: more than one thread runs parts.
        pool(2).install(|| {
            let leader = std::thread::current().id();
            let others = AtomicUsize::new(0);
            with_team(|| {
                for _ in 0..100 {
                    let mut v = vec![0u8; 8];
                    par_chunks_mut(&mut v, 1, |_, _| {
                        let t = std::time::Instant::now();
                        while t.elapsed() < std::time::Duration::from_micros(50) {
                            std::hint::spin_loop();
                        }
                        if std::thread::current().id() != leader {
                            others.fetch_add(1, Relaxed);
                        }
                        Ok::<(), ()>(())
                    })
                    .expect("ok");
                }
            });
            assert!(others.load(Relaxed) > 0, "no helper ever took a part");
        });
    }

    #[test]
    fn a_panicking_part_ends_the_step_with_the_panic_wherever_it_ran() {
        for threads in [2, 3] {
            pool(threads).install(|| {
                for bad in [0, 3, 7] {
                    let r = std::panic::catch_unwind(|| {
                        with_team(|| {
                            let mut v = vec![0u8; 8];
                            par_chunks_mut(&mut v, 1, |i, _| {
                                let t = std::time::Instant::now();
                                while t.elapsed() < std::time::Duration::from_micros(30) {}
                                assert!(i != bad, "part {i} fails");
                                Ok::<(), ()>(())
                            })
                        })
                    });
                    assert!(r.is_err(), "threads {threads}: part {bad}'s panic was lost");
                }
                // The pool and a new team still work.
                let mut v = vec![0u8; 64];
                with_team(|| {
                    par_chunks_mut(&mut v, 4, |_, c| {
                        c.fill(1);
                        Ok::<(), ()>(())
                    })
                })
                .expect("ok");
                assert!(v.iter().all(|&x| x == 1));
            });
        }
    }

    #[test]
    fn the_first_error_comes_back_and_a_panic_ends_the_team() {
        pool(2).install(|| {
            let r = with_team(|| {
                let mut v = vec![0u8; 100];
                par_chunks_mut(&mut v, 10, |i, _| if i == 3 { Err(i) } else { Ok(()) })
            });
            assert_eq!(r, Err(3));
            let caught = std::panic::catch_unwind(|| with_team(|| panic!("step failed")));
            assert!(caught.is_err());
            // The pool still works, and so does a new team.
            let mut v = vec![0u8; 100];
            with_team(|| {
                par_chunks_mut(&mut v, 10, |_, c| {
                    c.fill(1);
                    Ok::<(), ()>(())
                })
            })
            .expect("ok");
            assert!(v.iter().all(|&x| x == 1));
        });
    }
}
