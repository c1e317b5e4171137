//! The CPU emulator backend: calls into emu/emu.cpp, built by build.rs from
//! the very kernel sources the PTX comes from.

use crate::error::{CudaError, Result};
use std::ffi::{c_char, c_uint, c_void, CString};

#[repr(C)]
#[derive(Clone, Copy)]
struct EmuDim {
    x: c_uint,
    y: c_uint,
    z: c_uint,
}

extern "C" {
    fn mamba_emu_launch(
        name: *const c_char,
        grid: EmuDim,
        block: EmuDim,
        shared_bytes: c_uint,
        params: *const c_void,
        params_size: usize,
        err: *mut c_char,
        err_len: usize,
    ) -> i32;
}

/// Runs kernel `name` over host memory.
///
/// # Safety
/// `params` must be the kernel's parameter block, and every pointer in it
/// must address host memory valid for all the reads and writes the kernel
/// makes with that launch configuration.
pub(crate) unsafe fn launch(
    name: &str,
    grid: (u32, u32, u32),
    block: (u32, u32, u32),
    params: &[u8],
) -> Result<()> {
    let cname =
        CString::new(name).map_err(|_| CudaError::Emu(format!("bad kernel name {name:?}")))?;
    let mut err = vec![0u8; 512];
    // SAFETY: the name and the error buffer are valid for the call; the
    // caller vouches for the pointers inside `params`.
    let rc = unsafe {
        mamba_emu_launch(
            cname.as_ptr(),
            EmuDim {
                x: grid.0,
                y: grid.1,
                z: grid.2,
            },
            EmuDim {
                x: block.0,
                y: block.1,
                z: block.2,
            },
            0,
            params.as_ptr().cast(),
            params.len(),
            err.as_mut_ptr().cast(),
            err.len(),
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let end = err.iter().position(|&b| b == 0).unwrap_or(err.len());
    Err(CudaError::Emu(
        String::from_utf8_lossy(&err[..end]).into_owned(),
    ))
}
