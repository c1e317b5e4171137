//! Tensor descriptions and the shape rules both the reader and the writer
//! enforce (the same ones llama.cpp's loader applies).

use quant::GgmlType;

/// ggml's GGML_MAX_NAME is 64 bytes including the terminating NUL.
pub const MAX_NAME_LEN: usize = 63;
/// ggml's GGML_MAX_DIMS.
pub const MAX_DIMS: usize = 4;

/// One tensor as a GGUF file describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions innermost first, as in the file (ggml's ne[0], ne[1], ...):
    /// a [rows, cols] PyTorch matrix has `dims == [cols, rows]`.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Byte offset from the start of the data section (a multiple of the
    /// file's alignment).
    pub offset: u64,
    pub n_elements: u64,
    pub n_bytes: usize,
}

impl TensorInfo {
    /// Length of a row (dims[0]; 1 for a zero-dimensional tensor).
    pub fn row_len(&self) -> u64 {
        self.dims.first().copied().unwrap_or(1)
    }

    /// Number of rows (the product of every dimension after the first).
    pub fn n_rows(&self) -> u64 {
        self.dims.iter().skip(1).product()
    }

    /// Dims as "{4096, 65024}".
    pub fn dims_string(&self) -> String {
        let parts: Vec<String> = self.dims.iter().map(|d| d.to_string()).collect();
        format!("{{{}}}", parts.join(", "))
    }
}

/// A name or key as shown in an error message: at most 80 characters.
pub(crate) fn shown(s: &str) -> String {
    const MAX: usize = 80;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

/// Checks a tensor name against ggml's limits; returns what is wrong.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "tensor name '{}' is {} bytes long, ggml allows at most {MAX_NAME_LEN}",
            shown(name),
            name.len()
        ));
    }
    Ok(())
}

/// Element count and byte size of a tensor, checking what llama.cpp checks:
/// at most 4 dims, each and their product at most i64::MAX, the row length a
/// multiple of the type's block size, the byte size representable.
pub(crate) fn tensor_size(dims: &[u64], ty: GgmlType) -> Result<(u64, usize), String> {
    if dims.len() > MAX_DIMS {
        return Err(format!(
            "{} dimensions, ggml allows at most {MAX_DIMS}",
            dims.len()
        ));
    }
    let mut n: u64 = 1;
    for (i, &d) in dims.iter().enumerate() {
        if d > i64::MAX as u64 {
            return Err(format!("dimension {i} is {d}, more than i64::MAX"));
        }
        n = n
            .checked_mul(d)
            .filter(|&n| n <= i64::MAX as u64)
            .ok_or_else(|| format!("dims {dims:?} have more than i64::MAX elements"))?;
    }
    let row = dims.first().copied().unwrap_or(1);
    let block = ty.block_size() as u64;
    if block == 0 || row % block != 0 {
        return Err(format!(
            "row length {row} is not a multiple of {}'s block size {block}",
            ty.name()
        ));
    }
    let bytes = (n / block)
        .checked_mul(ty.type_size() as u64)
        .and_then(|b| usize::try_from(b).ok())
        .ok_or_else(|| format!("dims {dims:?} of type {} overflow the byte size", ty.name()))?;
    Ok((n, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_block_layout() {
        assert_eq!(tensor_size(&[64, 3], GgmlType::Q8_0), Ok((192, 6 * 34)));
        assert_eq!(tensor_size(&[], GgmlType::F32), Ok((1, 4)));
        assert_eq!(tensor_size(&[0, 5], GgmlType::F16), Ok((0, 0)));
        assert!(tensor_size(&[33], GgmlType::Q4_0).is_err());
        assert!(tensor_size(&[1, 1, 1, 1, 1], GgmlType::F32).is_err());
        assert!(tensor_size(&[1 << 32, 1 << 32], GgmlType::F32).is_err());
        assert!(tensor_size(&[u64::MAX], GgmlType::I8).is_err());
        assert!(check_name(&"x".repeat(63)).is_ok());
        assert!(check_name(&"x".repeat(64)).is_err());
    }
}
