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
