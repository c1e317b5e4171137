//! `Device::cuda` on a machine without the NVIDIA driver (this one, CI)
//! returns an error naming the missing library, never a panic. Its own
//! harness (tests/support/harness.rs, `harness = false` in Cargo.toml): where
//! a driver is present that test is reported as ignored, with the reason.

#[path = "../../tests/support/harness.rs"]
mod harness;

use std::process::ExitCode;

use harness::{Ran, Skip};

fn main() -> ExitCode {
    harness::main(vec![
        harness::skippable(
            "cuda_without_driver_is_a_clear_error",
            cuda_without_driver_is_a_clear_error,
        ),
        harness::test(
            "every_launched_kernel_is_in_the_shipped_ptx_and_sass",
            every_launched_kernel_is_in_the_shipped_ptx_and_sass,
        ),
        harness::test(
            "each_card_gets_the_sass_it_can_run",
            each_card_gets_the_sass_it_can_run,
        ),
        harness::test(
            "the_kernels_iq_grids_are_the_quant_crates",
            the_kernels_iq_grids_are_the_quant_crates,
        ),
    ])
}

fn cuda_without_driver_is_a_clear_error() -> Ran {
    if mamba_cuda::cuda::driver_present() {
        return Err(Skip::not_here(
            "a CUDA driver library is present here; the no-driver path is not exercised",
        ));
    }
    let err = match mamba_cuda::Device::cuda(0) {
        Ok(_) => panic!("a device without a driver library"),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(
        matches!(err, mamba_cuda::CudaError::NoDriver { .. }),
        "{msg}"
    );
    assert!(msg.contains("libcuda.so"), "{msg}");
    Ok(())
}

fn every_launched_kernel_is_in_the_shipped_ptx_and_sass() {
    let mut names: Vec<String> = [
        "rms_norm",
        "rms_norm_q8a",
        "rms_norm3",
        "quantize_q8a",
        "add_f32",
        "argmax_f32",
        "topk_f32",
        "conv1d_silu_k4",
        "selective_scan_n16",
        "copy_rows_f32",
        "embed_rows",
        "mma_probe_s8",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for stem in [
        "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "iq1_s",
        "iq1_m", "iq2_xxs", "iq2_xs", "iq2_s", "tq1_0", "tq2_0", "iq3_xxs", "iq3_s", "iq4_nl",
        "iq4_xs", "f32", "f16", "bf16",
    ] {
        for c in 1..=8 {
            names.push(format!("matvec_{stem}_{c}"));
        }
        if !matches!(stem, "f32" | "f16" | "bf16") {
            names.push(format!("matmul_{stem}"));
            names.push(format!("mma_matmul_{stem}"));
            names.push(format!("matvec_{stem}_n3_1"));
            names.push(format!("matvec_{stem}_n3_2"));
        }
    }
    for n in names {
        let module = mamba_cuda::cuda::module_of(&n);
        let m = mamba_cuda::cuda::MODULES
            .iter()
            .find(|m| m.name == module)
            .expect("module shipped");
        assert!(
            m.ptx.contains(&format!(".entry {n}(")),
            "{n} missing from {module}.ptx"
        );
        // The SASS of every architecture holds it too (its ELF symbol table
        // names each kernel, NUL-terminated).
        let sym = format!("{n}\0");
        for (sm, cubin) in m.cubins {
            assert!(
                cubin.windows(sym.len()).any(|w| w == sym.as_bytes()),
                "{n} missing from {module}.sm_{sm}.cubin"
            );
        }
    }
}

/// The SASS a card gets: its own architecture's, else the newest of its
/// major version below it; none across majors (the PTX JIT then).
fn each_card_gets_the_sass_it_can_run() {
    use mamba_cuda::cuda::{pick_cubin, MODULES};
    let cubins = MODULES[0].cubins;
    let sm = |major, minor| pick_cubin(major, minor, cubins).map(|(sm, _)| sm);
    assert_eq!(sm(8, 0), Some(80)); // A100
    assert_eq!(sm(8, 6), Some(86)); // A10, RTX 3090
    assert_eq!(sm(8, 7), Some(86)); // Jetson Orin
    assert_eq!(sm(8, 9), Some(89)); // L4, RTX 4090
    assert_eq!(sm(9, 0), Some(90)); // H100, H200
    assert_eq!(sm(7, 5), None); // T4: PTX
    assert_eq!(sm(10, 0), None); // B200: PTX
    assert_eq!(sm(12, 0), None); // RTX 5090: PTX
    assert_eq!(sm(-1, 0), None);
    for m in MODULES {
        let archs: Vec<u32> = m.cubins.iter().map(|(sm, _)| *sm).collect();
        assert_eq!(archs, [80, 86, 89, 90], "{}", m.name);
        for (sm, c) in m.cubins {
            assert_eq!(
                &c[..4],
                b"\x7fELF",
                "{}.sm_{sm}.cubin is an ELF image",
                m.name
            );
        }
    }
}

/// The IQ1, IQ2 and IQ3 grids the kernels carry (cuda/kernels/iq1_grid.cuh,
/// iq2_grids.cuh, iq3_grids.cuh) are the quant crate's, entry for entry.
fn the_kernels_iq_grids_are_the_quant_crates() {
    let src = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/kernels/iq3_grids.cuh"
    ))
    .expect("iq3_grids.cuh");
    let table = |name: &str| -> Vec<u32> {
        let start = src.find(&format!("{name}[")).expect(name);
        let body = &src[start..];
        let body = &body[body.find('{').expect("{") + 1..body.find("};").expect("};")];
        body.split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| {
                u32::from_str_radix(t.trim_start_matches("0x").trim_end_matches('u'), 16).expect(t)
            })
            .collect()
    };
    assert_eq!(table("IQ3XXS_GRID"), quant::iq3_grids::IQ3XXS_GRID);
    assert_eq!(table("IQ3S_GRID"), quant::iq3_grids::IQ3S_GRID);
    let src2 = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/kernels/iq2_grids.cuh"
    ))
    .expect("iq2_grids.cuh");
    let table64 = |name: &str| -> Vec<u64> {
        let start = src2.find(&format!("{name}[")).expect(name);
        let body = &src2[start..];
        let body = &body[body.find('{').expect("{") + 1..body.find("};").expect("};")];
        body.split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| {
                u64::from_str_radix(t.trim_start_matches("0x").trim_end_matches("ull"), 16)
                    .expect(t)
            })
            .collect()
    };
    assert_eq!(table64("IQ2XXS_GRID"), quant::iq2_grids::IQ2XXS_GRID);
    assert_eq!(table64("IQ2XS_GRID"), quant::iq2_grids::IQ2XS_GRID);
    assert_eq!(table64("IQ2S_GRID"), quant::iq2_grids::IQ2S_GRID);
    let src1 =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/kernels/iq1_grid.cuh"))
            .expect("iq1_grid.cuh");
    let body = &src1[src1.find('{').expect("{") + 1..src1.find("};").expect("};")];
    let iq1: Vec<u64> = body
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            u64::from_str_radix(t.trim_start_matches("0x").trim_end_matches("ull"), 16).expect(t)
        })
        .collect();
    assert_eq!(iq1, quant::iq1_grid::IQ1S_GRID);
}
