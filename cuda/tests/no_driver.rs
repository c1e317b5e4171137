//! `Device::cuda` on a machine without the NVIDIA driver (this one, CI)
//! returns an error naming the missing library, never a panic.

#[test]
fn cuda_without_driver_is_a_clear_error() {
    if mamba_cuda::cuda::driver_present() {
        eprintln!(
            "note: a CUDA driver library is present here; the no-driver path is not exercised"
        );
        return;
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
}

#[test]
fn every_launched_kernel_is_in_the_shipped_ptx() {
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
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for stem in [
        "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q4_k", "q5_k", "q6_k", "f32", "f16", "bf16",
    ] {
        for c in 1..=8 {
            names.push(format!("matvec_{stem}_{c}"));
        }
        if !matches!(stem, "f32" | "f16" | "bf16") {
            names.push(format!("matmul_{stem}"));
        }
    }
    for n in names {
        let module = mamba_cuda::cuda::module_of(&n);
        let (_, ptx) = mamba_cuda::cuda::PTX
            .iter()
            .find(|(m, _)| *m == module)
            .expect("module shipped");
        assert!(
            ptx.contains(&format!(".entry {n}(")),
            "{n} missing from {module}.ptx"
        );
    }
}
