//! config.json: the architecture and hyper-parameters of a (Falcon) Mamba
//! checkpoint, checked against the tensor shapes and the known checkpoints.

use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use crate::error::{io_err, ConvertError, Result};
use crate::known::{KnownModel, Models};

/// Which variant of Mamba-1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// transformers' FalconMambaForCausalLM: RMS-normalises dt, B and C.
    FalconMamba,
    /// state-spaces Mamba-1 (MambaForCausalLM).
    Mamba,
}

/// Everything the conversion needs from config.json.
#[derive(Clone, Debug)]
pub struct HParams {
    pub path: PathBuf,
    pub variant: Variant,
    pub d_model: u64,
    pub n_layer: u64,
    pub d_inner: u64,
    pub d_state: u64,
    pub d_conv: u64,
    pub dt_rank: u64,
    /// Rows of the embedding table (config vocab_size).
    pub vocab_size: u64,
    pub rms_eps: f32,
    /// Falcon's dt/B/C norm epsilon (`mixer_rms_eps`, default 1e-6).
    pub mixer_rms_eps: f32,
    pub tie_word_embeddings: bool,
    /// `max_position_embeddings`, when config.json has it (Mamba has no
    /// positions: advisory, the training context).
    pub context_length: Option<u64>,
    pub pad_vocab_multiple: u64,
    pub bos_token_id: Option<i64>,
    pub eos_token_id: Vec<i64>,
    pub pad_token_id: Option<i64>,
    pub name_or_path: Option<String>,
    /// bitsandbytes 4-bit checkpoint.
    pub bnb_4bit: bool,
    /// Known checkpoint this one matched (by name), if any.
    pub known: Option<KnownModel>,
}

fn field_err(path: &Path, what: impl Into<String>) -> ConvertError {
    ConvertError::Field {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

/// Read a JSON file.
pub fn read_json(path: &Path) -> Result<Json> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    serde_json::from_str(&text).map_err(|source| ConvertError::Json {
        path: path.to_path_buf(),
        source,
    })
}

fn get_u64(cfg: &Json, path: &Path, keys: &[&str]) -> Result<Option<u64>> {
    for k in keys {
        if let Some(v) = cfg.get(*k) {
            if v.is_null() {
                continue;
            }
            return match v.as_u64() {
                Some(n) => Ok(Some(n)),
                None => Err(field_err(
                    path,
                    format!("\"{k}\" must be a non-negative integer, found {v}"),
                )),
            };
        }
    }
    Ok(None)
}

fn get_f64(cfg: &Json, path: &Path, keys: &[&str]) -> Result<Option<f64>> {
    for k in keys {
        if let Some(v) = cfg.get(*k) {
            if v.is_null() {
                continue;
            }
            return match v.as_f64() {
                Some(n) => Ok(Some(n)),
                None => Err(field_err(
                    path,
                    format!("\"{k}\" must be a number, found {v}"),
                )),
            };
        }
    }
    Ok(None)
}

/// Token ids may be an int or a list of ints.
pub fn id_list(v: Option<&Json>) -> Vec<i64> {
    match v {
        Some(Json::Number(n)) => n.as_i64().into_iter().collect(),
        Some(Json::Array(a)) => a.iter().filter_map(|x| x.as_i64()).collect(),
        _ => Vec::new(),
    }
}

/// What the folder says besides config.json. A tokenizer never decides the
/// architecture (plain Mamba-1 checkpoints are trained with Falcon's
/// tokenizer too); it can only add a warning.
#[derive(Clone, Debug, Default)]
pub struct FalconHints {
    /// tokenizer.json looks like Falcon's (>>TITLE<< ... special tokens or
    /// Falcon's pre-tokenizer chain).
    pub falcon_tokenizer: bool,
}

impl Variant {
    /// The `--arch` spelling.
    pub fn name(self) -> &'static str {
        match self {
            Variant::FalconMamba => "falcon-mamba",
            Variant::Mamba => "mamba",
        }
    }

    /// Parses an `--arch` value.
    pub fn parse(s: &str) -> Option<Variant> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "falcon-mamba" | "falconmamba" => Some(Variant::FalconMamba),
            "mamba" => Some(Variant::Mamba),
            _ => None,
        }
    }
}

/// The repo id of a folder inside the Hugging Face hub cache
/// (`.../models--tiiuae--Falcon3-Mamba-7B-Base/snapshots/<commit>`), whose
/// own name is a commit hash.
fn hub_cache_repo(dir: &Path) -> Option<String> {
    dir.ancestors().find_map(|a| {
        let name = a.file_name()?.to_str()?;
        let rest = name.strip_prefix("models--")?;
        Some(rest.replacen("--", "/", 1))
    })
}

/// Parse config.json in `dir`.
///
/// The architecture is what config.json says (`architectures`,
/// `model_type`), except for a checkpoint models.toml lists as mislabelled
/// (matched by folder name or `_name_or_path`), and `arch` (the user's
/// `--arch`) overrides both. `warn` receives non-fatal findings.
pub fn read_config(
    dir: &Path,
    known: &Models,
    hints: &FalconHints,
    arch: Option<Variant>,
    warn: &mut dyn FnMut(String),
) -> Result<HParams> {
    let path = dir.join("config.json");
    let cfg = read_json(&path)?;
    if !cfg.is_object() {
        return Err(field_err(&path, "not a JSON object"));
    }
    let archs: Vec<String> = cfg
        .get("architectures")
        .and_then(|a| a.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let model_type = cfg.get("model_type").and_then(|s| s.as_str()).unwrap_or("");
    let name_or_path = cfg
        .get("_name_or_path")
        .and_then(|s| s.as_str())
        .filter(|s| !s.is_empty())
        .map(String::from);

    // Which known checkpoint (by folder name, the Hugging Face cache's repo
    // folder, then _name_or_path)?
    let canonical = dir.canonicalize().ok();
    let dir_name = canonical
        .as_deref()
        .and_then(|p| p.file_name().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let k = known
        .find(&dir_name)
        .or_else(|| {
            canonical
                .as_deref()
                .and_then(hub_cache_repo)
                .and_then(|r| known.find(&r))
        })
        .or_else(|| name_or_path.as_deref().and_then(|n| known.find(n)))
        .cloned();
    let known_falcon = k
        .as_ref()
        .and_then(|m| known.family_of(m))
        .map(|f| f.dt_b_c_rms);

    let is_falcon_arch =
        archs.iter().any(|a| a == "FalconMambaForCausalLM") || model_type == "falcon_mamba";
    let is_mamba_arch = archs
        .iter()
        .any(|a| a == "MambaForCausalLM" || a == "MambaLMHeadModel")
        || model_type == "mamba";
    if !is_falcon_arch && !is_mamba_arch && arch.is_none() {
        let what = if archs.is_empty() {
            format!(
                "model_type \"{model_type}\" (expected FalconMambaForCausalLM or MambaForCausalLM, or pass --arch)"
            )
        } else {
            format!(
                "architectures {archs:?}, model_type \"{model_type}\" (expected FalconMambaForCausalLM or MambaForCausalLM, or pass --arch)"
            )
        };
        return Err(ConvertError::Architecture { path, what });
    }
    let from_config = if is_falcon_arch {
        Variant::FalconMamba
    } else {
        Variant::Mamba
    };
    // A checkpoint models.toml knows to carry the wrong model_type.
    let mislabel = k
        .as_ref()
        .filter(|m| m.mislabelled.as_deref() == Some(model_type) && !is_falcon_arch)
        .and_then(|m| known.family_of(m).map(|f| (m.name.clone(), f.dt_b_c_rms)));
    let variant = match (arch, &mislabel) {
        (Some(v), _) => {
            if v != from_config && (is_falcon_arch || is_mamba_arch) {
                warn(format!(
                    "{}: says model_type \"{model_type}\"; converting as {} because --arch says so",
                    path.display(),
                    v.name()
                ));
            }
            v
        }
        (None, Some((name, falcon))) => {
            let v = if *falcon {
                Variant::FalconMamba
            } else {
                Variant::Mamba
            };
            warn(format!(
                "{}: says model_type \"{model_type}\", which models.toml records as a mislabel of {name}: converting as {}",
                path.display(),
                v.name()
            ));
            v
        }
        (None, None) => {
            if from_config == Variant::Mamba {
                if known_falcon == Some(true) {
                    warn(format!(
                        "{}: says model_type \"{model_type}\" but models.toml lists {} as Falcon Mamba: converting as plain Mamba as config.json says (pass --arch falcon-mamba to keep the dt/B/C RMS norm)",
                        path.display(),
                        k.as_ref().map(|m| m.name.as_str()).unwrap_or("it")
                    ));
                } else if hints.falcon_tokenizer {
                    warn(format!(
                        "{}: says model_type \"{model_type}\" and uses Falcon's tokenizer: converting as plain Mamba as config.json says (pass --arch falcon-mamba if this is a Falcon Mamba checkpoint)",
                        path.display()
                    ));
                }
            }
            from_config
        }
    };

    let need = |keys: &[&str]| -> Result<u64> {
        get_u64(&cfg, &path, keys)?.ok_or_else(|| {
            field_err(
                &path,
                format!("missing \"{}\"", keys.first().copied().unwrap_or("?")),
            )
        })
    };
    let d_model = need(&["hidden_size", "d_model"])?;
    let n_layer = need(&["num_hidden_layers", "n_layer"])?;
    let vocab_size = need(&["vocab_size"])?;
    // d_inner from intermediate_size (never from `expand`: TII's config says
    // expand 16 for d_inner 8192); 0 = take it from the tensor shapes.
    let d_inner = get_u64(&cfg, &path, &["intermediate_size", "d_inner"])?.unwrap_or(0);
    let d_state = get_u64(&cfg, &path, &["state_size", "d_state"])?.unwrap_or(16);
    let d_conv = get_u64(&cfg, &path, &["conv_kernel", "d_conv"])?.unwrap_or(4);
    let dt_rank = match cfg.get("time_step_rank").or_else(|| cfg.get("dt_rank")) {
        Some(Json::String(s)) if s == "auto" => d_model.div_ceil(16),
        Some(v) if !v.is_null() => v.as_u64().ok_or_else(|| {
            field_err(
                &path,
                format!("\"time_step_rank\" must be an integer or \"auto\", found {v}"),
            )
        })?,
        _ => d_model.div_ceil(16),
    };
    let rms_eps =
        get_f64(&cfg, &path, &["layer_norm_epsilon", "rms_norm_eps"])?.unwrap_or(1e-5) as f32;
    // config.json, else the known checkpoint's, else transformers' default.
    let mixer_rms_eps = get_f64(&cfg, &path, &["mixer_rms_eps"])?
        .or_else(|| k.as_ref().and_then(|m| m.mixer_rms_eps))
        .unwrap_or(1e-6) as f32;
    let tie_word_embeddings = match cfg.get("tie_word_embeddings") {
        Some(Json::Bool(b)) => *b,
        None | Some(Json::Null) => true, // transformers' default
        Some(v) => {
            return Err(field_err(
                &path,
                format!("\"tie_word_embeddings\" must be a bool, found {v}"),
            ))
        }
    };
    let pad_vocab_multiple = get_u64(&cfg, &path, &["pad_vocab_size_multiple"])?
        .unwrap_or(8)
        .max(1);
    if d_model == 0
        || n_layer == 0
        || vocab_size == 0
        || d_state == 0
        || d_conv == 0
        || dt_rank == 0
    {
        return Err(field_err(&path, "a hyper-parameter is zero"));
    }
    if cfg.get("use_bias").and_then(|b| b.as_bool()) == Some(true) {
        return Err(ConvertError::Architecture {
            path,
            what: "use_bias true (biases on in_proj/out_proj) has no place in llama.cpp's mamba layout".into(),
        });
    }
    let bnb_4bit = match cfg.get("quantization_config") {
        None | Some(Json::Null) => false,
        Some(q) => {
            let method = q.get("quant_method").and_then(|s| s.as_str()).unwrap_or("");
            let four = q
                .get("load_in_4bit")
                .and_then(|b| b.as_bool())
                .unwrap_or(false)
                || q.get("_load_in_4bit")
                    .and_then(|b| b.as_bool())
                    .unwrap_or(false);
            if method == "bitsandbytes" && four {
                true
            } else {
                return Err(ConvertError::Architecture {
                    path,
                    what: format!(
                        "quantization_config {q} (only bitsandbytes 4-bit checkpoints are supported)"
                    ),
                });
            }
        }
    };

    let hp = HParams {
        path: path.clone(),
        variant,
        d_model,
        n_layer,
        d_inner,
        d_state,
        d_conv,
        dt_rank,
        vocab_size,
        rms_eps,
        mixer_rms_eps,
        tie_word_embeddings,
        context_length: get_u64(&cfg, &path, &["max_position_embeddings"])?.filter(|&c| c > 0),
        pad_vocab_multiple,
        bos_token_id: cfg.get("bos_token_id").and_then(|v| v.as_i64()),
        eos_token_id: id_list(cfg.get("eos_token_id")),
        pad_token_id: cfg.get("pad_token_id").and_then(|v| v.as_i64()),
        name_or_path,
        bnb_4bit,
        known: k,
    };
    Ok(hp)
}

impl HParams {
    /// Warn about every disagreement with the matched known checkpoint.
    pub fn check_known(&self, warn: &mut dyn FnMut(String)) {
        let Some(k) = &self.known else { return };
        let mut cmp = |what: &str, ours: u64, theirs: u64| {
            if ours != theirs {
                warn(format!(
                    "{}: {what} is {ours}, but models.toml says {theirs} for {}",
                    self.path.display(),
                    k.name
                ));
            }
        };
        cmp("hidden_size", self.d_model, k.hidden_size);
        cmp("num_hidden_layers", self.n_layer, k.num_hidden_layers);
        cmp(
            "intermediate_size (d_inner)",
            self.d_inner,
            k.intermediate_size,
        );
        cmp("state_size", self.d_state, k.state_size);
        cmp("conv_kernel", self.d_conv, k.conv_kernel);
        cmp("time_step_rank", self.dt_rank, k.time_step_rank);
        cmp("vocab_size", self.vocab_size, k.vocab_size);
        cmp(
            "tie_word_embeddings",
            u64::from(self.tie_word_embeddings),
            u64::from(k.tie_word_embeddings),
        );
        if let Some(e) = k.mixer_rms_eps {
            if self.variant == Variant::FalconMamba
                && (f64::from(self.mixer_rms_eps) - e).abs() > e * 1e-3
            {
                warn(format!(
                    "{}: mixer_rms_eps is {:e}, but models.toml says {e:e} for {}",
                    self.path.display(),
                    self.mixer_rms_eps,
                    k.name
                ));
            }
        }
    }

    /// The token list length llama.cpp writes: vocab_size rounded up to a
    /// multiple of pad_vocab_size_multiple.
    pub fn padded_vocab(&self) -> u64 {
        self.vocab_size.div_ceil(self.pad_vocab_multiple) * self.pad_vocab_multiple
    }
}
