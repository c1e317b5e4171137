//! The CUDA backend, run whole on the CPU emulator of the CUDA execution
//! model (`--device cuda-emu`, the same kernel sources the PTX is built from):
//! logits against transformers (float weights) and against the CPU backend
//! (every quantized type), chunked prefill, batched decode on slots out of
//! order, fork, states moving between the CPU and the emulated GPU, greedy
//! decoding with the logits left on the device, and the server on it.
//! Kernel-by-kernel tests against scalar references are in
//! `cuda/tests/emu_kernels.rs`.
#![cfg(feature = "cuda")]

mod runtime_common;

use gguf::GgmlType;
use mamba_gguf::backend::{Backend, DeviceRequest, Greedy, TopK};
use mamba_gguf::session::BatchDecoder;
use mamba_gguf::{Model, Session};
use runtime_common::*;

/// The CUDA backend under test: the emulator, or a real GPU when
/// `MAMBA_GGUF_TEST_DEVICE=cuda` (how `scripts/cuda/gpu_check.sh` runs these
/// same tests on a machine with one).
fn emu(path: &std::path::Path) -> Model {
    let dev = match std::env::var("MAMBA_GGUF_TEST_DEVICE").as_deref() {
        Ok("cuda") => DeviceRequest::Cuda(0),
        _ => DeviceRequest::CudaEmu,
    };
    let m = Model::load_on(path, dev).unwrap_or_else(|e| panic!("load on {dev:?}: {e}"));
    assert_eq!(m.backend().name(), "CUDA");
    m
}

fn cpu(path: &std::path::Path) -> Model {
    Model::load_on(path, DeviceRequest::Cpu).expect("load on cpu")
}

/// The small Falcon Mamba requantized beside `dir`: Q4_K matrices, the
/// Q6_K head llama.cpp gives Q4_K_M files, Q8_0 where a row does not fit.
fn small_q4_k(f32_gguf: &std::path::Path, dir: &std::path::Path) -> std::path::PathBuf {
    let q = dir.join("q4_k.gguf");
    requantize(f32_gguf, &q, GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::Q8_0);
    q
}

/// A session per prompt, each fed its prompt.
fn prefilled<'m>(m: &'m Model, prompts: &[&[u32]]) -> Vec<Session<'m>> {
    prompts
        .iter()
        .map(|pr| {
            let mut s = Session::new(m);
            s.feed(pr).expect("prefill");
            s
        })
        .collect()
}

/// fp32 in another order of summation (as runtime_reference's bound).
const F32_BOUND: f64 = 1e-4;

#[test]
fn float_weights_match_transformers_on_the_emulated_gpu() {
    // Falcon Mamba (dt/B/C norm), plain Mamba with a tied head from an f16
    // source, and Falcon3-Mamba's layout (mixer eps 1e-5, width 8).
    for fx in [
        "falcon-mamba-small-bf16",
        "mamba-tiny-tied",
        "falcon3-mamba-instruct-tiny",
    ] {
        let r = reference(fx);
        let m = emu(&ours_gguf(fx, convert::FileType::F32));
        // 16 prompt tokens in one chunk: two launches of 8 rows per matmul.
        let ours = all_logits(&m, &r.prompt_ids, 64);
        let rel = rel_max_diff(&ours, &r.logits, r.std);
        eprintln!("{fx} on cuda-emu: rel {rel:.3e}");
        assert!(rel <= F32_BOUND, "{fx}: rel {rel:e}");
    }
}

/// Mean over positions of KL(a || b).
fn mean_kl(a: &[f32], b: &[f32], v: usize) -> f64 {
    let n = a.len() / v;
    (0..n)
        .map(|i| kl(&a[i * v..(i + 1) * v], &b[i * v..(i + 1) * v]))
        .sum::<f64>()
        / n as f64
}

#[test]
fn every_weight_type_runs_on_the_emulated_gpu_as_on_the_cpu() {
    let fx = "falcon-mamba-small-bf16";
    let r = reference(fx);
    let src = ours_gguf(fx, convert::FileType::F32);
    let dir = tempdir();
    let v = r.vocab;
    // (matrices, LM head): the K types and IQ4_XS with llama.cpp's Q6_K
    // head, every 32-value type (IQ4_NL included), the float types. The embedding gets the same type, so
    // the lookup kernel runs on each too.
    let cases = [
        (GgmlType::Q4_0, GgmlType::Q4_0),
        (GgmlType::Q4_1, GgmlType::Q4_1),
        (GgmlType::Q5_0, GgmlType::Q5_0),
        (GgmlType::Q5_1, GgmlType::Q5_1),
        (GgmlType::Q8_0, GgmlType::Q8_0),
        (GgmlType::Q4_K, GgmlType::Q6_K),
        (GgmlType::Q5_K, GgmlType::Q5_K),
        (GgmlType::Q6_K, GgmlType::Q6_K),
        (GgmlType::Q2_K, GgmlType::Q6_K),
        (GgmlType::Q3_K, GgmlType::Q6_K),
        (GgmlType::TQ2_0, GgmlType::Q6_K),
        (GgmlType::TQ1_0, GgmlType::Q6_K),
        (GgmlType::IQ4_NL, GgmlType::IQ4_NL),
        (GgmlType::IQ4_XS, GgmlType::Q6_K),
        (GgmlType::F16, GgmlType::F16),
        (GgmlType::BF16, GgmlType::BF16),
    ];
    for (ty, head) in cases {
        let p = dir.path().join(format!("{ty:?}.gguf"));
        requantize(&src, &p, ty, head, GgmlType::Q8_0);
        // The same weights dequantized to F32: what an exact product with
        // the quantized weights gives (activations unquantized).
        let exact = dir.path().join(format!("{ty:?}-dequantized.gguf"));
        requantize(&p, &exact, GgmlType::F32, GgmlType::F32, GgmlType::F32);
        // 8 positions (one launch of 8 rows per matmul; the float test above
        // covers more rows): the emulator is slow.
        let ids = &r.prompt_ids[..8];
        let on_cpu = all_logits(&cpu(&p), ids, 64);
        let on_gpu = all_logits(&emu(&p), ids, 64);
        let want = all_logits(&cpu(&exact), ids, 64);
        let rel = rel_max_diff(&on_gpu, &on_cpu, r.std);
        let kl_cpu = mean_kl(&want, &on_cpu, v);
        let kl_gpu = mean_kl(&want, &on_gpu, v);
        let kl_between = mean_kl(&on_cpu, &on_gpu, v);
        eprintln!(
            "{ty:?}/{head:?}: gpu vs cpu rel {rel:.3e}, KL(cpu||gpu) {kl_between:.2e}; KL from the dequantized model: cpu {kl_cpu:.2e}, gpu {kl_gpu:.2e}"
        );
        if matches!(ty, GgmlType::F16 | GgmlType::BF16) {
            // Float weights, f32 activations on both: only the order of sums differs.
            assert!(rel <= F32_BOUND, "{ty:?}: rel {rel:e}");
            let rel = rel_max_diff(&on_gpu, &want, r.std);
            assert!(
                rel <= F32_BOUND,
                "{ty:?}: against the dequantized model, rel {rel:e}"
            );
        } else {
            // Both quantize the activations: the GPU per 32 values (Q8A),
            // the CPU per block of its Q8_0 / Q8_K. Close to each other, and
            // the GPU no further from the exact product than the CPU.
            assert!(kl_between <= 0.05, "{ty:?}: KL(cpu||gpu) {kl_between}");
            assert!(
                kl_gpu <= kl_cpu * 1.5 + 1e-3,
                "{ty:?}: KL from the dequantized model {kl_gpu} (cpu {kl_cpu})"
            );
        }
    }
}

#[test]
fn chunked_prefill_on_the_emulated_gpu_equals_token_by_token() {
    let r = reference("falcon-mamba-small-bf16");
    let m = emu(&ours_gguf(
        "falcon-mamba-small-bf16",
        convert::FileType::F32,
    ));
    let whole = all_logits(&m, &r.prompt_ids, 64);
    for chunk in [1, 5] {
        let got = all_logits(&m, &r.prompt_ids, chunk);
        let rel = rel_max_diff(&got, &whole, r.std);
        assert!(rel <= 1e-5, "chunk {chunk}: rel {rel:e}");
    }
    // Quantized weights: a chunk over 8 rows runs the prefill matmul (one
    // launch per matrix), 8 or fewer the decode matvec; the same logits.
    let dir = tempdir();
    let q = dir.path().join("q4_k.gguf");
    let src = ours_gguf("falcon-mamba-small-bf16", convert::FileType::F32);
    requantize(&src, &q, GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::Q8_0);
    let m = emu(&q);
    let ids = &r.prompt_ids[..r.prompt_ids.len().min(24)];
    let Backend::Cuda(gpu) = m.backend() else {
        panic!("the emulated GPU backend");
    };
    let before = gpu.counts();
    let whole = all_logits(&m, ids, 24);
    // One chunk: 8 launches per block, the embedding, and the head over
    // every row as one norm and one matmul (its weights read once); the
    // dt projection (F16: dt_rank 16 fits no quant block) runs 8 rows per
    // launch.
    let (l, t) = (m.hp.n_layer as u64, ids.len() as u64);
    assert!(t > 8);
    let dt_extra = l * (t.div_ceil(8) - 1);
    assert_eq!(
        gpu.counts().launches - before.launches,
        8 * l + 3 + dt_extra
    );
    for chunk in [1, 8, 13] {
        let got = all_logits(&m, ids, chunk);
        let rel = rel_max_diff(&got, &whole, r.std);
        assert!(rel <= 1e-5, "Q4_K chunk {chunk}: rel {rel:e}");
    }
}

#[test]
fn batched_decode_on_slots_out_of_order_equals_stepping_alone() {
    let (p, dir) = (
        ours_gguf("falcon-mamba-small-bf16", convert::FileType::F32),
        tempdir(),
    );
    let q = small_q4_k(&p, dir.path());
    for path in [p.as_path(), q.as_path()] {
        let m = emu(path);
        let v = m.hp.n_vocab;
        // Take slots 0..5 and free 1 and 3, so the batch's sessions sit on
        // slots in no order (4, 0, 2 after the batch is formed below).
        let mut pad: Vec<Session> = (0..5).map(|_| Session::new(&m)).collect();
        drop(pad.remove(3));
        drop(pad.remove(1));
        let prompts: [&[u32]; 3] = [
            &[5, 9, 100, 7],
            &[42],
            &[300, 301, 302, 303, 304, 305, 306, 307, 308],
        ];
        let (mut batch, mut alone) = (prefilled(&m, &prompts), prefilled(&m, &prompts));
        // Reverse, so rows and slots do not line up.
        batch.reverse();
        alone.reverse();
        let mut dec = BatchDecoder::new(&m, 4);
        let Backend::Cuda(gpu) = m.backend() else {
            panic!("the emulated GPU backend");
        };
        for step in 0..4u32 {
            let ids: Vec<u32> = (0..3).map(|j| (17 + 31 * j + step) % v as u32).collect();
            {
                let mut refs: Vec<&mut Session> = batch.iter_mut().collect();
                let before = gpu.counts();
                dec.step(&mut refs, &ids).expect("batch step");
                let after = gpu.counts();
                // What a step costs the driver (the quantized file: each
                // matmul's activations quantized by the launch that makes
                // them). Per block: norm, in, conv, x (whose last block
                // also norms dt/B/C), dt, scan, out (adding into X); then
                // the embedding, the head's norm and its matvec. Uploads: the token ids, and the slot
                // ids once (the first step; the batch's workspace keeps them
                // for the later ones).
                // Graphs (mamba_cuda::graph): step 0 uploads the slot ids
                // between its launches (two lists), step 1 is the steady
                // step's list seen once, from step 2 on that list is one
                // graph launch holding every kernel of the step.
                if path == q.as_path() {
                    let l = m.hp.n_layer as u64;
                    assert_eq!(after.launches - before.launches, 8 * l + 3);
                    // Step 0 also makes the workspace, uploading the
                    // x-projection's norm tail (matvec.cu's MvTail) with it.
                    let want = if step == 0 { 3 } else { 1 };
                    assert_eq!(after.uploads - before.uploads, want, "step {step}");
                    let (graphs, replayed) = if step >= 2 { (1, 8 * l + 3) } else { (0, 0) };
                    assert_eq!(after.graphs - before.graphs, graphs, "step {step}");
                    assert_eq!(after.replayed - before.replayed, replayed, "step {step}");
                }
            }
            for (j, a) in alone.iter_mut().enumerate() {
                let want = a.feed(&[ids[j]]).expect("step").to_vec();
                let got = batch[j].logits().expect("logits");
                let std = std_of(&want);
                let rel = rel_max_diff(got, &want, std);
                assert!(
                    rel <= 1e-5,
                    "{}: step {step} row {j}: rel {rel:e}",
                    path.display()
                );
            }
        }
        drop(pad);
    }
}

#[test]
fn decode_replayed_as_graphs_equals_launching_each_kernel() {
    let p = ours_gguf("falcon-mamba-small-bf16", convert::FileType::F32);
    let dir = tempdir();
    let q = dir.path().join("q4_0.gguf");
    requantize(&p, &q, GgmlType::Q4_0, GgmlType::Q6_K, GgmlType::Q8_0);
    let run = |graphs: bool| {
        let m = emu(&q);
        let Backend::Cuda(gpu) = m.backend() else {
            panic!("the emulated GPU backend");
        };
        gpu.set_graphs(graphs).expect("set graphs");
        let mut s = Session::new(&m);
        let mut logits = s.feed(&[5, 9, 100, 7]).expect("prefill").to_vec();
        for step in 0..6u32 {
            let id = 11 + 37 * step;
            logits.extend_from_slice(s.feed(&[id]).expect("step"));
        }
        (logits, gpu.counts(), m.hp.n_layer as u64)
    };
    let (each, c0, l) = run(false);
    let (replayed, c1, _) = run(true);
    assert_eq!((c0.graphs, c0.replayed), (0, 0));
    assert_eq!(c0.launches, c1.launches);
    // Step 0 shows the step's list; from step 1 on it is one graph of the
    // whole step (7 launches per block, the embedding, the head's two).
    assert_eq!(c1.graphs, 5, "{c1:?}");
    assert_eq!(c1.replayed, 5 * (7 * l + 3), "{c1:?}");
    // Bit for bit: the same kernels on the same buffers in the same order.
    assert!(each
        .iter()
        .zip(&replayed)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
    assert_eq!(each.len(), replayed.len());
}

#[test]
fn states_move_between_the_cpu_and_the_emulated_gpu() {
    let r = reference("falcon-mamba-small-bf16");
    let p = ours_gguf("falcon-mamba-small-bf16", convert::FileType::F32);
    let (mc, mg) = (cpu(&p), emu(&p));
    let (head, tail) = r.prompt_ids.split_at(9);
    let v = r.vocab;
    // The reference rows for the tail positions.
    let want = &r.logits[head.len() * v..];
    // CPU prefill, then the GPU goes on from the CPU's state, and back.
    let mut c = Session::new(&mc);
    c.feed(head).expect("cpu prefill");
    let snap = c.snapshot().expect("snapshot");
    let mut g = Session::new(&mg);
    g.restore(&snap).expect("restore on the gpu");
    let mut got = Vec::new();
    for &id in tail {
        got.extend_from_slice(g.feed(&[id]).expect("gpu step"));
    }
    let rel = rel_max_diff(&got, want, r.std);
    assert!(rel <= F32_BOUND, "cpu -> gpu: rel {rel:e}");
    // GPU prefill, CPU goes on.
    let mut g = Session::new(&mg);
    g.feed(head).expect("gpu prefill");
    let snap = g.snapshot().expect("snapshot on the gpu");
    let mut c = Session::new(&mc);
    c.restore(&snap).expect("restore on the cpu");
    let mut got = Vec::new();
    for &id in tail {
        got.extend_from_slice(c.feed(&[id]).expect("cpu step"));
    }
    let rel = rel_max_diff(&got, want, r.std);
    assert!(rel <= F32_BOUND, "gpu -> cpu: rel {rel:e}");
    // A fork on the device continues exactly as its parent.
    let mut f = g.fork().expect("fork");
    let a = g.feed(&tail[..2]).expect("parent").to_vec();
    let b = f.feed(&tail[..2]).expect("fork").to_vec();
    assert_eq!(a, b);
    // And a reset slot starts over.
    f.reset().expect("reset");
    let first = f.feed(&r.prompt_ids[..1]).expect("after reset").to_vec();
    let rel = rel_max_diff(&first, &r.logits[..v], r.std);
    assert!(rel <= F32_BOUND, "after reset: rel {rel:e}");
}

/// The reference's greedy continuation (a full forward per step) against
/// prefill then one token at a time on the emulated GPU, up to the first
/// near-tie (as runtime_reference does for the CPU).
#[test]
fn greedy_continuation_on_the_emulated_gpu_matches_transformers() {
    for fx in ["falcon-mamba-small-bf16", "mamba-tiny-tied"] {
        let r = reference(fx);
        let m = emu(&ours_gguf(fx, convert::FileType::F32));
        let mut s = Session::new(&m);
        let mut logits = s.feed(&r.prompt_ids).expect("prefill").to_vec();
        let mut compared = 0;
        for (step, (&want, &margin)) in r.greedy_ids.iter().zip(&r.greedy_margins).enumerate() {
            if (margin as f64) < 1e-3 * r.std {
                break;
            }
            let got = mamba_gguf::sampler::argmax_logits(&logits);
            assert_eq!(got, want, "{fx}: greedy step {step}");
            compared += 1;
            logits = s.feed(&[got]).expect("decode").to_vec();
        }
        eprintln!(
            "{fx}: {compared}/{} greedy tokens identical",
            r.greedy_ids.len()
        );
        assert!(compared >= 16, "{fx}: only {compared} steps compared");
    }
}

/// A state file written from the emulated GPU loads on the CPU and goes on
/// as the CPU would have (the file holds the host form of the state).
#[test]
fn state_files_cross_backends() {
    let r = reference("falcon-mamba-small-bf16");
    let p = ours_gguf("falcon-mamba-small-bf16", convert::FileType::F32);
    let (mc, mg) = (cpu(&p), emu(&p));
    let dir = tempdir();
    let f = dir.path().join("gpu.state");
    let (head, tail) = r.prompt_ids.split_at(10);
    let mut g = Session::new(&mg);
    g.feed(head).expect("gpu prefill");
    mamba_gguf::state_file::save(&f, &mut g).expect("save from the gpu");
    let mut c = Session::new(&mc);
    mamba_gguf::state_file::load(&f, &mut c).expect("load on the cpu");
    assert_eq!(c.n_past(), head.len() as u64);
    let got = c.feed(tail).expect("cpu goes on").to_vec();
    let v = r.vocab;
    let want = &r.logits[(r.prompt_ids.len() - 1) * v..];
    let rel = rel_max_diff(&got, want, r.std);
    assert!(rel <= F32_BOUND, "rel {rel:e}");
}

#[test]
fn a_model_the_kernels_cannot_run_is_refused_with_the_reason() {
    // mamba-falcon-tok has d_state 8; the scan kernel is built for 16.
    let p = ours_gguf("mamba-falcon-tok", convert::FileType::F32);
    let err = Model::load_on(&p, DeviceRequest::CudaEmu)
        .expect_err("d_state 8 on the CUDA backend")
        .to_string();
    assert!(
        err.contains("d_state 16") && err.contains("--device cpu"),
        "{err}"
    );
    // auto never fails for want of a GPU: the CPU takes it.
    let m = Model::load_on(&p, DeviceRequest::Auto).expect("auto");
    if !mamba_gguf::backend::cuda_driver_present() {
        assert_eq!(m.backend().name(), "CPU");
    }
}

/// Models are dropped and loaded again after their decode steps ran as
/// graphs, in one process, one after another and two at once (they share the
/// GPU's primary context): each new one decodes what the first did, bit for
/// bit, and one model's drop leaves the other running. On a GPU this is the
/// teardown order that matters (graphs and modules go before the context
/// they belong to is released); the emulator checks the bookkeeping.
#[test]
fn models_dropped_after_graph_replays_load_and_decode_again() {
    let p = ours_gguf("falcon-mamba-small-bf16", convert::FileType::F32);
    let dir = tempdir();
    let q = small_q4_k(&p, dir.path());
    let decode = |m: &Model| {
        let mut s = Session::new(m);
        let mut logits = s.feed(&[5, 9, 100, 7]).expect("prefill").to_vec();
        // From the third step on, each step is one replayed graph.
        for step in 0..3u32 {
            logits.extend_from_slice(s.feed(&[11 + 37 * step]).expect("step"));
        }
        logits
    };
    let graphs = |m: &Model| match m.backend() {
        Backend::Cuda(gpu) => gpu.counts().graphs,
        Backend::Cpu(_) => panic!("the CUDA backend"),
    };
    let first = emu(&q);
    let want = decode(&first);
    assert!(graphs(&first) > 0, "the steps ran as graphs");
    drop(first);
    let again = emu(&q);
    assert_eq!(bits(&decode(&again)), bits(&want), "loaded again");
    assert!(graphs(&again) > 0);
    drop(again);
    let (a, b) = (emu(&q), emu(&q));
    assert_eq!(bits(&decode(&a)), bits(&want));
    drop(a);
    assert_eq!(
        bits(&decode(&b)),
        bits(&want),
        "after the other model's drop"
    );
}

/// `run --device cuda-emu` generates what the CPU generates (greedy, F32)
/// and says where it ran; `--device cuda` without the NVIDIA driver is an
/// error naming the library, not a panic; `--device auto` falls back to the
/// CPU.
#[test]
fn the_cli_runs_on_the_emulated_gpu_and_explains_a_missing_driver() {
    // The tiny fixture with the real Falcon vocabulary, as llama.cpp made it.
    let p = llamacpp_gguf("falcon-mamba-tiny-f32.gguf");
    let run = |device: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_mamba-gguf"))
            .args(["run", "-m"])
            .arg(&p)
            .args([
                "-p",
                "the cat and the dog",
                "-n",
                "8",
                "--temp",
                "0",
                "--device",
                device,
            ])
            .output()
            .expect("spawn")
    };
    let text = |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).to_string();
    let log = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).to_string();
    let on_cpu = run("cpu");
    let on_emu = run("cuda-emu");
    assert!(
        on_cpu.status.success() && on_emu.status.success(),
        "{}",
        log(&on_emu)
    );
    assert_eq!(text(&on_cpu), text(&on_emu));
    assert!(
        log(&on_emu).contains("device CUDA emulator"),
        "{}",
        log(&on_emu)
    );
    if mamba_gguf::backend::cuda_driver_present() {
        eprintln!(
            "SKIPPED part: a CUDA driver is present here, so the no-driver error is not exercised"
        );
        return;
    }
    let no_gpu = run("cuda");
    assert_eq!(no_gpu.status.code(), Some(1), "{}", log(&no_gpu));
    let e = log(&no_gpu);
    assert!(e.contains("libcuda.so") && e.contains("--device"), "{e}");
    assert!(!e.contains("panicked"), "{e}");
    let auto = run("auto");
    assert!(auto.status.success());
    assert!(log(&auto).contains("device CPU"), "{}", log(&auto));
    assert_eq!(text(&auto), text(&on_cpu));
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

/// Greedy decoding on the emulated GPU: the choice is made on the device
/// and the logits stay there, yet everything that reads the position sees
/// what feeding and taking the argmax on the host gives: the same ids, and
/// the same logits bit for bit (computed from the kept row of X when asked)
/// in the session, its fork and its snapshot. Batched greedy steps alike,
/// with one launch more than a step bringing logits back (the argmax),
/// replayed in the step's graph.
#[test]
fn greedy_decoding_on_the_emulated_gpu_keeps_the_logits_there_until_asked() {
    let (p, dir) = (
        ours_gguf("falcon-mamba-small-bf16", convert::FileType::F32),
        tempdir(),
    );
    let q = small_q4_k(&p, dir.path());
    let m = emu(&q);
    let r = reference("falcon-mamba-small-bf16");
    // One sequence; a prefill of 10 in chunks of 4: two chunks fed as
    // usual, the last one on the greedy path.
    let prompt = &r.prompt_ids[..10];
    let mut host = Session::with_chunk(&m, 4);
    let mut dev = Session::with_chunk(&m, 4);
    let mut want = host.feed(prompt).expect("prefill").to_vec();
    let mut id = dev.feed_greedy(prompt).expect("greedy prefill");
    for step in 0..5 {
        assert_eq!(id as usize, argmax(&want), "step {step}");
        assert!(dev.host_logits().is_none(), "step {step}: logits came back");
        assert_eq!(dev.n_past(), host.n_past());
        if step == 2 {
            let mut fork = dev.fork().expect("fork");
            assert!(fork.host_logits().is_none());
            assert_eq!(fork.greedy().expect("fork's pick"), id);
            assert_eq!(bits(fork.logits().expect("fork's logits")), bits(&want));
            let snap = dev.snapshot().expect("snapshot");
            assert_eq!(bits(&snap.logits), bits(&want));
            assert_eq!(snap.state, host.state().expect("state"));
        }
        if step == 4 {
            assert_eq!(bits(dev.logits().expect("logits")), bits(&want));
            assert_eq!(dev.host_logits().map(bits), Some(bits(&want)));
            assert_eq!(dev.greedy().expect("pick"), id);
        }
        want = host.feed(&[id]).expect("step").to_vec();
        id = dev.feed_greedy(&[id]).expect("greedy step");
    }

    // Three sequences in batched greedy steps against batched steps that
    // bring every row's logits back.
    let prompts: [&[u32]; 3] = [&[5, 9, 100, 7], &[42], &[300, 301, 302]];
    let (mut batch, mut alone) = (prefilled(&m, &prompts), prefilled(&m, &prompts));
    let (mut dec, mut with_logits) = (BatchDecoder::new(&m, 4), BatchDecoder::new(&m, 4));
    let Backend::Cuda(gpu) = m.backend() else {
        panic!("the emulated GPU backend");
    };
    let l = m.hp.n_layer as u64;
    let mut ids: Vec<u32> = batch
        .iter_mut()
        .map(|s| s.greedy().expect("pick"))
        .collect();
    for step in 0..4 {
        let before = gpu.counts();
        let mut refs: Vec<&mut Session> = batch.iter_mut().collect();
        dec.step_greedy(&mut refs, &ids).expect("greedy batch step");
        let after = gpu.counts();
        assert_eq!(after.launches - before.launches, 8 * l + 4, "step {step}");
        let (graphs, replayed) = if step >= 2 { (1, 8 * l + 4) } else { (0, 0) };
        assert_eq!(after.graphs - before.graphs, graphs, "step {step}");
        assert_eq!(after.replayed - before.replayed, replayed, "step {step}");
        let mut refs: Vec<&mut Session> = alone.iter_mut().collect();
        with_logits.step(&mut refs, &ids).expect("batch step");
        for (j, (b, a)) in batch.iter_mut().zip(alone.iter_mut()).enumerate() {
            let want = a.logits().expect("logits").to_vec();
            assert!(b.host_logits().is_none(), "step {step} row {j}");
            assert_eq!(
                b.greedy().expect("pick") as usize,
                argmax(&want),
                "step {step} row {j}"
            );
            if step == 1 {
                assert_eq!(bits(b.logits().expect("logits")), bits(&want), "row {j}");
            }
            ids[j] = b.greedy().expect("pick");
        }
    }
}

/// The backend op under the greedy path: the pick of each row of X equals
/// the host's argmax of the logits `head` gives for that row, on the CPU
/// and on the emulated GPU, past one head launch (35 rows: 32 + 3), for an
/// F32 head (float matvec, a NaN row reported as NaN) and a Q6_K one
/// (dp4a); rows of X go to the host and back unchanged; rows past the
/// workspace and partial rows are errors.
#[test]
fn greedy_picks_equal_the_host_argmax_of_the_head_on_both_backends() {
    let (p, dir) = (
        ours_gguf("falcon-mamba-small-bf16", convert::FileType::F32),
        tempdir(),
    );
    let q = small_q4_k(&p, dir.path());
    for path in [p.as_path(), q.as_path()] {
        let float_head = path == p.as_path();
        for m in [cpu(path), emu(path)] {
            let (be, d, v) = (m.backend(), m.hp.n_embd, m.hp.n_vocab);
            let label = format!("{} {}", path.display(), be.name());
            let rows = 35;
            let mut ws = be.workspace(40);
            let mut seed = 0x2545_f491u32;
            let mut x: Vec<f32> = (0..rows * d)
                .map(|_| {
                    seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (seed >> 8) as f32 / (1u32 << 24) as f32 * 4.0 - 2.0
                })
                .collect();
            // Row 7 repeats row 6 (equal picks); row 33 holds a NaN.
            x.copy_within(6 * d..7 * d, 7 * d);
            x[33 * d + 5] = f32::NAN;
            be.write_x(&mut ws, 0, &x).expect("write X");
            let mut back = vec![0.0; rows * d];
            be.read_x(&mut ws, 0..rows, &mut back).expect("read X");
            assert_eq!(bits(&back), bits(&x), "{label}: X round trip");
            let mut picks = vec![Greedy::Id(u32::MAX); rows];
            be.greedy(&mut ws, 0..rows, &mut picks).expect("greedy");
            let mut logits = vec![0.0; rows * v];
            be.head(&mut ws, 0..rows, &mut logits).expect("head");
            for (j, (pick, row)) in picks.iter().zip(logits.chunks_exact(v)).enumerate() {
                let want = match row.iter().position(|l| l.is_nan()) {
                    Some(i) => Greedy::Nan(i as u32),
                    None => Greedy::Id(argmax(row) as u32),
                };
                assert_eq!(*pick, want, "{label}: row {j}");
            }
            assert_eq!(picks[6], picks[7], "{label}");
            if float_head {
                assert!(
                    matches!(picks[33], Greedy::Nan(_)),
                    "{label}: {:?}",
                    picks[33]
                );
            }
            // The k largest of each row: as sorting the head's logits.
            for k in [1, 40, 256] {
                let mut tops = vec![TopK::default(); rows];
                be.top_k(&mut ws, 0..rows, k, &mut tops).expect("top-k");
                let mut logits = vec![0.0; rows * v];
                be.head(&mut ws, 0..rows, &mut logits).expect("head");
                for (j, (top, row)) in tops.iter().zip(logits.chunks_exact(v)).enumerate() {
                    let mut want: Vec<(u32, f32)> =
                        (0..v as u32).zip(row.iter().copied()).collect();
                    want.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                    want.truncate(k);
                    let nan = row.iter().position(|l| l.is_nan()).map(|i| i as u32);
                    assert_eq!(top.nan, nan, "{label}: k {k} row {j}");
                    if nan.is_none() {
                        assert_eq!(top.cands, want, "{label}: k {k} row {j}");
                        assert_eq!(top.greedy(), picks[j], "{label}: k {k} row {j}");
                    }
                }
            }
            let mut tops = vec![TopK::default(); rows];
            let e = be
                .top_k(&mut ws, 0..rows, 257, &mut tops)
                .expect_err("k past the most");
            assert!(e.to_string().contains("257"), "{label}: {e}");
            // A row range past the workspace, a partial row.
            let e = be
                .greedy(&mut ws, 38..41, &mut picks)
                .expect_err("past the workspace");
            assert!(e.to_string().contains("40"), "{label}: {e}");
            let e = be
                .write_x(&mut ws, 0, &x[..d + 1])
                .expect_err("partial row");
            assert!(e.to_string().contains("X"), "{label}: {e}");
        }
    }
}

/// `serve` on the emulated GPU: four requests at once, decoded in batched
/// steps. Two are plain greedy (their steps choose on the device and leave
/// the logits there); the third, shorter, asks for logprobs, so the steps it
/// joins bring every row's logits back; the fourth samples with a top-k cut,
/// so the steps it joins after the third bring back 40 candidates per row
/// (the greedy rows take the first). Each answers what feeding one token at
/// a time and sampling from all the host logits gives on the same backend.
#[test]
fn the_server_on_the_emulated_gpu_answers_as_sampling_from_host_logits() {
    use mamba_gguf::server::{self, ServerConfig};
    use mamba_gguf::tokenizer::Tokenizer;
    use serde_json::{json, Value};
    // A vocabulary of 1024 (a byte-level BPE of 1000): the emulator runs
    // the LM head in a few milliseconds, the 65024 of the real one in seconds.
    let (p, dir) = (
        ours_gguf("falcon-mamba-small-bf16", convert::FileType::F32),
        tempdir(),
    );
    let q = small_q4_k(&p, dir.path());
    let m = std::sync::Arc::new(emu(&q));
    let tok = Tokenizer::from_gguf(m.gguf()).expect("tokenizer");
    let prompts = ["The sky is", "Rust is a language", "1, 2, 3,", "Once upon"];
    let lens = [12, 12, 4, 8];
    let sampled = mamba_gguf::SamplerConfig {
        temp: 0.9,
        top_k: 40,
        top_p: 0.95,
        min_p: 0.02,
        seed: 3,
        ..mamba_gguf::SamplerConfig::default()
    };
    let want: Vec<Vec<u32>> = prompts
        .iter()
        .zip(lens)
        .enumerate()
        .map(|(i, (pr, n))| {
            let ids = tok.encode(pr, tok.add_bos()).expect("encodes");
            let mut s = Session::new(&m);
            let mut logits = s.feed(&ids).expect("prefill").to_vec();
            let mut sampler = mamba_gguf::Sampler::new(sampled.clone());
            let mut out = Vec::new();
            for _ in 0..n {
                let id = if i == 3 {
                    sampler.sample(&logits, &[])
                } else {
                    argmax(&logits) as u32
                };
                out.push(id);
                logits = s.feed(&[id]).expect("step").to_vec();
            }
            out
        })
        .collect();
    let h = server::spawn(
        m.clone(),
        ServerConfig {
            port: 0,
            parallel: 4,
            cache_mb: 0,
            timeout: std::time::Duration::from_secs(300),
            ..ServerConfig::default()
        },
    )
    .expect("server starts");
    let addr = h.addr;
    let client = || {
        reqwest::blocking::Client::builder()
            .timeout(std::time::Duration::from_secs(300))
            .build()
            .expect("client")
    };
    let gate = std::sync::Barrier::new(prompts.len());
    let got: Vec<Vec<u32>> = std::thread::scope(|s| {
        let hs: Vec<_> = prompts
            .iter()
            .enumerate()
            .map(|(i, pr)| {
                let gate = &gate;
                s.spawn(move || {
                    let mut body = json!({"prompt": pr, "temperature": 0, "max_tokens": lens[i],
                                          "ignore_eos": true, "return_tokens": true});
                    if i == 2 {
                        body["logprobs"] = json!(1);
                    }
                    if i == 3 {
                        for (k, v) in [
                            ("temperature", json!(0.9)),
                            ("top_k", json!(40)),
                            ("top_p", json!(0.95)),
                            ("min_p", json!(0.02)),
                            ("seed", json!(3)),
                        ] {
                            body[k] = v;
                        }
                    }
                    let c = client();
                    gate.wait();
                    let r = c
                        .post(format!("http://{addr}/v1/completions"))
                        .json(&body)
                        .send()
                        .expect("request");
                    assert_eq!(r.status().as_u16(), 200);
                    let v: Value = r.json().expect("JSON answer");
                    v["choices"][0]["token_ids"]
                        .as_array()
                        .expect("token_ids")
                        .iter()
                        .map(|x| x.as_u64().expect("id") as u32)
                        .collect()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("client")).collect()
    });
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "request {i} ({:?})", prompts[i]);
    }
    let health: Value = client()
        .get(format!("http://{addr}/health"))
        .send()
        .expect("health")
        .json()
        .expect("JSON");
    eprintln!("decode counters: {}", health["decode"]);
    assert!(
        health["decode"]["max_batch"].as_u64().unwrap_or(0) >= 2,
        "no batched step: {health}"
    );
}

/// Sampling with a top-k cut on the emulated GPU: the k candidates are
/// taken on the device and the logits stay there; drawing from them gives,
/// draw after draw, the tokens the same sampler draws from all the host
/// logits, for one sequence (`Generate`) and in batched steps; the logits
/// computed afterwards from the kept row are the forward's, bit for bit.
#[test]
fn top_k_sampling_on_the_emulated_gpu_draws_what_the_host_logits_draw() {
    use mamba_gguf::generate::Generate;
    use mamba_gguf::tokenizer::Tokenizer;
    use mamba_gguf::{Sampler, SamplerConfig};
    let (p, dir) = (
        ours_gguf("falcon-mamba-small-bf16", convert::FileType::F32),
        tempdir(),
    );
    let q = small_q4_k(&p, dir.path());
    let m = emu(&q);
    let tok = Tokenizer::from_gguf(m.gguf()).expect("tokenizer");
    let cfg = |seed| SamplerConfig {
        temp: 0.9,
        top_k: 40,
        top_p: 0.95,
        min_p: 0.02,
        seed,
        ..SamplerConfig::default()
    };
    let prompt = tok.encode("The river", tok.add_bos()).expect("encodes");
    let n = 10;
    // The host way: all the logits, the sampler's full path.
    let mut s = Session::new(&m);
    let mut sampler = Sampler::new(cfg(3));
    let mut logits = s.feed(&prompt).expect("prefill").to_vec();
    let mut want = Vec::new();
    for _ in 0..n {
        let id = sampler.sample(&logits, &[]);
        want.push(id);
        logits = s.feed(&[id]).expect("step").to_vec();
    }
    // Generate takes the top-k cut on the device.
    let mut s = Session::new(&m);
    assert_eq!(Sampler::new(cfg(3)).device_top_k(256), Some(40));
    let mut gen = Generate::new(&mut s, &tok, Sampler::new(cfg(3)), &prompt, n);
    for piece in gen.by_ref() {
        piece.expect("generates");
    }
    assert_eq!(gen.tokens(), &want[..]);
    drop(gen);
    assert!(
        s.host_logits().is_none(),
        "the last step's logits came back"
    );

    // Three sequences in batched top-k steps against batched steps that
    // bring the logits back, each with its own seeded sampler.
    let prompts: [&[u32]; 3] = [&[5, 9, 100, 7], &[42], &[300, 301, 302]];
    let (mut batch, mut alone) = (prefilled(&m, &prompts), prefilled(&m, &prompts));
    let mut cut: Vec<Sampler> = (0..3).map(|j| Sampler::new(cfg(j))).collect();
    let mut full: Vec<Sampler> = (0..3).map(|j| Sampler::new(cfg(j))).collect();
    let (mut dec, mut with_logits) = (BatchDecoder::new(&m, 4), BatchDecoder::new(&m, 4));
    let mut ids: Vec<u32> = Vec::new();
    for j in 0..3 {
        let id = full[j].sample(alone[j].logits().expect("logits"), &[]);
        let c = batch[j].top_k(40).expect("top-k").to_vec();
        assert_eq!(cut[j].sample_top_k(&c), id);
        ids.push(id);
    }
    for step in 0..4 {
        let mut refs: Vec<&mut Session> = batch.iter_mut().collect();
        dec.step_top_k(&mut refs, &ids, 40)
            .expect("top-k batch step");
        let mut refs: Vec<&mut Session> = alone.iter_mut().collect();
        with_logits.step(&mut refs, &ids).expect("batch step");
        for j in 0..3 {
            let want = alone[j].logits().expect("logits").to_vec();
            assert!(batch[j].host_logits().is_none(), "step {step} row {j}");
            let c = batch[j].top_k(40).expect("top-k").to_vec();
            assert_eq!(c, TopK::of(&want, 40).cands, "step {step} row {j}");
            assert_eq!(batch[j].greedy().expect("pick") as usize, argmax(&want));
            ids[j] = cut[j].sample_top_k(&c);
            assert_eq!(ids[j], full[j].sample(&want, &[]), "step {step} row {j}");
            if step == 3 {
                assert_eq!(bits(batch[j].logits().expect("logits")), bits(&want));
            }
        }
    }
}

/// llama.cpp's IQ3_XXS and IQ3_S files (tests/fixtures/llamacpp-quant, made
/// with an imatrix; we read these types, we do not write them) run on the
/// emulated GPU as on the CPU.
#[test]
fn llama_cpp_iq3_files_run_on_the_emulated_gpu_as_on_the_cpu() {
    let ids: Vec<u32> = vec![5, 300, 17, 900, 44, 2, 610, 77];
    for ty in ["iq3_xxs", "iq3_s"] {
        let p = root()
            .join("tests/fixtures/llamacpp-quant")
            .join(format!("mamba-tiny-tied.{ty}.pure.gguf"));
        let on_cpu = all_logits(&cpu(&p), &ids, 64);
        let on_gpu = all_logits(&emu(&p), &ids, 64);
        let v = on_cpu.len() / ids.len();
        let kl_between = mean_kl(&on_cpu, &on_gpu, v);
        eprintln!("{ty}: KL(cpu||gpu) {kl_between:.2e}");
        assert!(kl_between <= 0.05, "{ty}: KL(cpu||gpu) {kl_between}");
    }
}
