// Builds the CPU emulator: the kernel sources in kernels/ compiled as C++
// against emu/cuda_emu.h, linked into the crate for `Device::emu()`.
fn main() {
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo:rerun-if-changed=emu");
    cc::Build::new()
        .cpp(true)
        .file("emu/emu.cpp")
        .include("kernels")
        .include("emu")
        .flag("-std=c++17")
        .flag("-fno-strict-aliasing")
        .opt_level(2)
        .warnings(false)
        .compile("mamba_cuda_emu");
}
