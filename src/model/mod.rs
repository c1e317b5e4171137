//! A Mamba-1 / Falcon Mamba model read from a GGUF file: hyper-parameters from
//! the metadata, every tensor checked for presence, type and shape, then the
//! weights handed to a [`Backend`] (the CPU backend leaves them memory-mapped
//! and quantized; its matmuls dequantize on the fly).
//!
//! Shapes below are GGUF dims, innermost first (a PyTorch `[rows, cols]` matrix
//! is `{cols, rows}`), with d = embedding, E = d_inner, N = state size,
//! R = dt rank, K = conv kernel, V = vocabulary.

pub mod block;
mod forward;
pub mod scratch;

use std::path::Path;
use std::sync::Arc;

use gguf::{GgmlType, GgufFile, TensorInfo};

use crate::backend::{Backend, DeviceRequest};
use crate::error::{ModelError, Result};
use crate::state::SlotTable;

pub use scratch::Scratch;

/// The architecture name this runtime accepts.
pub const ARCH: &str = "mamba";

/// Hyper-parameters, all checked against the tensor shapes at load.
#[derive(Clone, Debug, PartialEq)]
pub struct Hparams {
    /// d: `mamba.embedding_length`.
    pub n_embd: usize,
    /// `mamba.block_count`.
    pub n_layer: usize,
    /// E: `mamba.ssm.inner_size`.
    pub d_inner: usize,
    /// N: `mamba.ssm.state_size`.
    pub d_state: usize,
    /// K: `mamba.ssm.conv_kernel`.
    pub d_conv: usize,
    /// R: `mamba.ssm.time_step_rank`.
    pub dt_rank: usize,
    /// V: rows of `token_embd.weight`.
    pub n_vocab: usize,
    /// `mamba.attention.layer_norm_rms_epsilon` (block and final RMS norms).
    pub norm_eps: f32,
    /// Falcon Mamba's weightless RMS norm of dt, B and C (`mamba.ssm.dt_b_c_rms`).
    pub dt_b_c_rms: bool,
    /// Its epsilon: `mamba.ssm.dt_b_c_rms_eps` when present, else `norm_eps`
    /// (what llama.cpp does, having no key for it).
    pub dt_b_c_eps: f32,
    /// Whether the output projection is the token embedding (no `output.weight`).
    pub tied: bool,
}

/// A weight matrix used by a matmul: `n_out` rows of `n_in` values of type
/// `ty`, contiguous in the mapped file (where `info` says).
#[derive(Clone, Debug)]
pub struct Mat {
    pub name: String,
    pub ty: GgmlType,
    pub n_in: usize,
    pub n_out: usize,
    /// Bytes of one row.
    pub row_bytes: usize,
    pub(crate) info: TensorInfo,
}

/// One Mamba block's parameters.
#[derive(Debug)]
pub struct Layer {
    /// `blk.N.attn_norm.weight` {d}
    pub norm: Vec<f32>,
    /// `blk.N.ssm_in.weight` {d, 2E}: rows 0..E give x, rows E..2E give the gate z.
    pub ssm_in: Mat,
    /// `blk.N.ssm_conv1d.weight` {K, E}, stored here transposed as [K][E]
    /// (tap-major) so the per-token conv walks channels contiguously.
    pub conv_w: Vec<f32>,
    /// `blk.N.ssm_conv1d.bias` {E}
    pub conv_b: Vec<f32>,
    /// `blk.N.ssm_x.weight` {E, R+2N}: rows 0..R dt, R..R+N B, R+N..R+2N C.
    pub ssm_x: Mat,
    /// `blk.N.ssm_dt.weight` {R, E}
    pub ssm_dt: Mat,
    /// `blk.N.ssm_dt.bias` {E}
    pub dt_b: Vec<f32>,
    /// `blk.N.ssm_a` {N, E}: A = -exp(A_log), [E][N]
    pub a: Vec<f32>,
    /// `blk.N.ssm_d` {E}
    pub d: Vec<f32>,
    /// `blk.N.ssm_out.weight` {E, d}
    pub ssm_out: Mat,
}

/// A validated model's weights as the file holds them: what a backend is
/// built from ([`Backend::new`]).
#[derive(Debug)]
pub struct Weights {
    /// The mapped file the matrices point into.
    pub file: Arc<GgufFile>,
    pub hp: Hparams,
    /// `token_embd.weight` {d, V}: one row per token, dequantized on lookup.
    pub tok_embd: Mat,
    pub layers: Vec<Layer>,
    /// `output_norm.weight` {d}
    pub output_norm: Vec<f32>,
    /// `output.weight` {d, V}, or `token_embd.weight` when tied.
    pub output: Mat,
}

/// A loaded model: its hyper-parameters and metadata (the mapped file), and
/// the backend that holds its weights and its states.
pub struct Model {
    file: Arc<GgufFile>,
    pub hp: Hparams,
    backend: Backend,
    /// Which state slots of the backend's pool are taken.
    pub(crate) slots: Arc<SlotTable>,
    weight_types: Vec<GgmlType>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("hp", &self.hp)
            .field("backend", &self.backend.name())
            .finish()
    }
}

/// Reads metadata and tensors with errors that name the file.
struct Loader<'a> {
    file: &'a GgufFile,
    fname: String,
}

fn dims_string(d: &[u64]) -> String {
    let parts: Vec<String> = d.iter().map(|x| x.to_string()).collect();
    format!("{{{}}}", parts.join(", "))
}

/// Dims with every 1 dropped: a size-1 dim never changes the order of the
/// values, so {K, 1, E} (a 3-D `ssm_conv1d` as some converters keep it) is
/// {K, E}, and {E, 1} is {E}.
fn trim_ones(d: &[u64]) -> Vec<u64> {
    let v: Vec<u64> = d.iter().copied().filter(|&x| x != 1).collect();
    if v.is_empty() {
        vec![1]
    } else {
        v
    }
}

impl<'a> Loader<'a> {
    fn key_u32(&self, key: &str) -> Result<usize> {
        let v = self.file.get_u32(key)?;
        if v == 0 {
            return Err(self.meta(key, "must be greater than 0"));
        }
        Ok(v as usize)
    }

    fn meta(&self, key: &str, what: impl Into<String>) -> ModelError {
        ModelError::Metadata {
            file: self.fname.clone(),
            key: key.to_string(),
            what: what.into(),
        }
    }

    fn info(&self, name: &str, dims: &[usize]) -> Result<TensorInfo> {
        let t = self
            .file
            .tensor(name)
            .ok_or_else(|| ModelError::MissingTensor {
                file: self.fname.clone(),
                name: name.to_string(),
            })?;
        let want: Vec<u64> = dims.iter().map(|&x| x as u64).collect();
        if trim_ones(&t.dims) != trim_ones(&want) {
            return Err(ModelError::Shape {
                file: self.fname.clone(),
                name: name.to_string(),
                expected: dims_string(&want),
                found: dims_string(&t.dims),
            });
        }
        let expected =
            t.ty.row_bytes(dims.first().copied().unwrap_or(1))
                .and_then(|rb| rb.checked_mul(dims.iter().skip(1).product::<usize>()));
        let found = self.file.tensor_data(t).len();
        if !t.ty.is_supported() || expected.is_none() {
            return Err(self.ty_err(name, t.ty, "this runtime cannot dequantize"));
        }
        let expected = expected.unwrap_or(0);
        if found != expected {
            return Err(ModelError::Data {
                file: self.fname.clone(),
                name: name.to_string(),
                expected,
                found,
            });
        }
        Ok(t.clone())
    }

    fn ty_err(&self, name: &str, ty: GgmlType, what: &str) -> ModelError {
        ModelError::TensorType {
            file: self.fname.clone(),
            name: name.to_string(),
            ty,
            what: what.to_string(),
        }
    }

    /// A small tensor read whole into f32 (norms, biases, conv, A, D).
    fn vector(&self, name: &str, dims: &[usize]) -> Result<Vec<f32>> {
        let t = self.info(name, dims)?;
        let data = self.file.tensor_data(&t);
        let n: usize = dims.iter().product();
        let mut out = vec![0f32; n];
        let rowlen = dims.first().copied().unwrap_or(1).max(1);
        let rb = t.ty.row_bytes(rowlen).unwrap_or(0);
        for (dst, src) in out.chunks_mut(rowlen).zip(data.chunks(rb.max(1))) {
            quant::dequantize_row(t.ty, src, dst).map_err(|source| ModelError::Quant {
                name: name.to_string(),
                source,
            })?;
        }
        Ok(out)
    }

    /// A matrix of `n_out` rows of `n_in` values ({n_in, n_out}) for matmuls.
    fn mat(&self, name: &str, n_in: usize, n_out: usize) -> Result<Mat> {
        let info = self.info(name, &[n_in, n_out])?;
        let kernel = quant::kernel(info.ty)
            .ok_or_else(|| self.ty_err(name, info.ty, "has no matmul kernel"))?;
        // The CPU's kernel table is also the list of types a matmul can take.
        if kernel.act.row_bytes(n_in).is_none() {
            return Err(self.ty_err(
                name,
                info.ty,
                &format!(
                    "pairs with {} activations, whose block does not divide the row length {n_in}",
                    kernel.act
                ),
            ));
        }
        let row_bytes = info.ty.row_bytes(n_in).unwrap_or(0);
        Ok(Mat {
            name: name.to_string(),
            ty: info.ty,
            n_in,
            n_out,
            row_bytes,
            info,
        })
    }
}

impl Model {
    /// Opens (memory-maps) and validates a GGUF model, on the best backend
    /// found (`--device auto`).
    pub fn load(path: impl AsRef<Path>) -> Result<Model> {
        Model::load_on(path, DeviceRequest::Auto)
    }

    /// [`Model::load`] on the backend `device` asks for.
    pub fn load_on(path: impl AsRef<Path>, device: DeviceRequest) -> Result<Model> {
        Model::from_gguf_on(GgufFile::open(path)?, device)
    }

    /// [`Model::load_on`] with the file read into memory (`no_mmap`, see
    /// [`GgufFile::open_in_memory`]) or mapped.
    pub fn load_with(
        path: impl AsRef<Path>,
        device: DeviceRequest,
        no_mmap: bool,
    ) -> Result<Model> {
        let file = if no_mmap {
            GgufFile::open_in_memory(path)?
        } else {
            GgufFile::open(path)?
        };
        Model::from_gguf_on(file, device)
    }

    /// Validates an opened GGUF and builds the model over it (`auto` backend).
    pub fn from_gguf(file: GgufFile) -> Result<Model> {
        Model::from_gguf_on(file, DeviceRequest::Auto)
    }

    /// [`Model::from_gguf`] on the backend `device` asks for.
    pub fn from_gguf_on(file: GgufFile, device: DeviceRequest) -> Result<Model> {
        let fname = file
            .path()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "<gguf in memory>".to_string());
        let arch = file.architecture().unwrap_or("(none)").to_string();
        if arch != ARCH {
            return Err(ModelError::Architecture {
                file: fname,
                found: arch,
            });
        }
        let l = Loader { file: &file, fname };
        let k = |s: &str| format!("{ARCH}.{s}");
        let n_embd = l.key_u32(&k("embedding_length"))?;
        let n_layer = l.key_u32(&k("block_count"))?;
        let d_inner = l.key_u32(&k("ssm.inner_size"))?;
        let d_state = l.key_u32(&k("ssm.state_size"))?;
        let d_conv = l.key_u32(&k("ssm.conv_kernel"))?;
        let dt_rank = l.key_u32(&k("ssm.time_step_rank"))?;
        let eps_key = k("attention.layer_norm_rms_epsilon");
        let norm_eps = file.get_f32(&eps_key)?;
        if !(norm_eps.is_finite() && norm_eps >= 0.0) {
            return Err(l.meta(&eps_key, format!("{norm_eps} is not a usable epsilon")));
        }
        let rms_key = k("ssm.dt_b_c_rms");
        // Files written before llama.cpp knew Falcon Mamba have no key: plain
        // Mamba, unless models.toml knows the file (by name or shape) as
        // Falcon Mamba, whose norm is then applied.
        let dt_b_c_rms = match file.get(&rms_key) {
            None => {
                convert::identify::identify(&file, &convert::known::Models::builtin()).family
                    == Some(convert::identify::FALCON_MAMBA)
            }
            Some(_) => file.get_bool(&rms_key)?,
        };
        let rms_eps_key = k("ssm.dt_b_c_rms_eps");
        let dt_b_c_eps = match file.get(&rms_eps_key) {
            None => norm_eps,
            Some(_) => {
                let e = file.get_f32(&rms_eps_key)?;
                if !(e.is_finite() && e >= 0.0) {
                    return Err(l.meta(&rms_eps_key, format!("{e} is not a usable epsilon")));
                }
                e
            }
        };

        let embd = file
            .tensor("token_embd.weight")
            .ok_or_else(|| ModelError::MissingTensor {
                file: l.fname.clone(),
                name: "token_embd.weight".into(),
            })?;
        let n_vocab = match embd.dims.get(1) {
            Some(&v) if v > 0 && v <= u32::MAX as u64 => v as usize,
            _ => {
                return Err(ModelError::Shape {
                    file: l.fname.clone(),
                    name: "token_embd.weight".into(),
                    expected: format!("{{{n_embd}, n_vocab}}"),
                    found: dims_string(&embd.dims),
                })
            }
        };
        let tok_embd = l.mat("token_embd.weight", n_embd, n_vocab)?;
        let tied = file.tensor("output.weight").is_none();
        let output = if tied {
            tok_embd.clone()
        } else {
            l.mat("output.weight", n_embd, n_vocab)?
        };
        let output_norm = l.vector("output_norm.weight", &[n_embd])?;

        let xo = dt_rank + 2 * d_state;
        let mut layers = Vec::with_capacity(n_layer);
        for i in 0..n_layer {
            let b = |s: &str| format!("blk.{i}.{s}");
            // Checked in file order: norm, in_proj, conv, ...
            let norm = l.vector(&b("attn_norm.weight"), &[n_embd])?;
            let ssm_in = l.mat(&b("ssm_in.weight"), n_embd, 2 * d_inner)?;
            // {K, E} in the file: E rows of K taps. Transposed to [K][E].
            let conv = l.vector(&b("ssm_conv1d.weight"), &[d_conv, d_inner])?;
            let mut conv_w = vec![0f32; conv.len()];
            for e in 0..d_inner {
                for t in 0..d_conv {
                    conv_w[t * d_inner + e] = conv[e * d_conv + t];
                }
            }
            layers.push(Layer {
                norm,
                ssm_in,
                conv_w,
                conv_b: l.vector(&b("ssm_conv1d.bias"), &[d_inner])?,
                ssm_x: l.mat(&b("ssm_x.weight"), d_inner, xo)?,
                ssm_dt: l.mat(&b("ssm_dt.weight"), dt_rank, d_inner)?,
                dt_b: l.vector(&b("ssm_dt.bias"), &[d_inner])?,
                a: l.vector(&b("ssm_a"), &[d_state, d_inner])?,
                d: l.vector(&b("ssm_d"), &[d_inner])?,
                ssm_out: l.mat(&b("ssm_out.weight"), d_inner, n_embd)?,
            });
        }
        let hp = Hparams {
            n_embd,
            n_layer,
            d_inner,
            d_state,
            d_conv,
            dt_rank,
            n_vocab,
            norm_eps,
            dt_b_c_rms,
            dt_b_c_eps,
            tied,
        };
        let mut weight_types = vec![tok_embd.ty, output.ty];
        for l in &layers {
            for m in [&l.ssm_in, &l.ssm_x, &l.ssm_dt, &l.ssm_out] {
                weight_types.push(m.ty);
            }
        }
        weight_types.sort_by_key(|t| t.id());
        weight_types.dedup();
        let file = Arc::new(file);
        let backend = Backend::new(
            device,
            Weights {
                file: file.clone(),
                hp: hp.clone(),
                tok_embd,
                layers,
                output_norm,
                output,
            },
        )?;
        Ok(Model {
            file,
            hp,
            backend,
            slots: Arc::default(),
            weight_types,
        })
    }

    /// The underlying GGUF (metadata, tokenizer keys).
    pub fn gguf(&self) -> &GgufFile {
        &self.file
    }

    /// The backend that holds the weights and states and runs the ops.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The distinct weight types of the matmul tensors, for display.
    pub fn weight_types(&self) -> Vec<GgmlType> {
        self.weight_types.clone()
    }
}
