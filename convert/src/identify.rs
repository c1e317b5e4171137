//! Which model a GGUF file holds: its family (Falcon Mamba or plain Mamba-1)
//! and, where models.toml knows it, the checkpoint it was made from, with a
//! warning for every piece of metadata that disagrees with models.toml.
//!
//! Files people already have were written by several converters (ours, and
//! llama.cpp's since its Mamba support of March 2024), so the layout varies:
//! `mamba.ssm.dt_b_c_rms` is absent from files written before llama.cpp
//! knew Falcon Mamba (August 2024), `ssm_conv1d` may be 3-D {K, 1, E}, the
//! output head may be omitted (tied) or stored, `general.alignment` may be
//! other than 32, and `mamba.context_length` is 2^20 in llama.cpp's files.

use gguf::{Array, GgufFile};

use crate::known::{KnownModel, Models};

/// The family names of models.toml.
pub const FALCON_MAMBA: &str = "falcon-mamba";
pub const MAMBA: &str = "mamba";

/// What [`identify`] found.
#[derive(Clone, Debug, Default)]
pub struct Identity {
    /// "falcon-mamba" or "mamba"; None for a file that is no Mamba model.
    pub family: Option<&'static str>,
    /// The known checkpoint, if the name or the shape matched one.
    pub known: Option<KnownModel>,
    /// How the known checkpoint was matched ("general.name" or
    /// "hyper-parameters").
    pub matched_by: Option<&'static str>,
    /// Whether the family comes from `mamba.ssm.dt_b_c_rms` (false: the key
    /// is absent and the family is inferred).
    pub family_from_key: bool,
    /// Every disagreement with models.toml, and layout notes.
    pub warnings: Vec<String>,
}

/// Lower-case, spaces and underscores as dashes: "Falcon Mamba 7b Instruct"
/// becomes "falcon-mamba-7b-instruct".
fn slug(s: &str) -> String {
    s.trim()
        .to_ascii_lowercase()
        .replace([' ', '_'], "-")
        .rsplit('/')
        .next()
        .unwrap_or("")
        .to_string()
}

fn u64_key(f: &GgufFile, key: &str) -> Option<u64> {
    f.get_u32(key)
        .map(u64::from)
        .or_else(|_| f.get_u64(key))
        .ok()
}

/// The shape of the model in the file, as models.toml spells it.
struct Shape {
    hidden_size: Option<u64>,
    num_hidden_layers: Option<u64>,
    intermediate_size: Option<u64>,
    state_size: Option<u64>,
    conv_kernel: Option<u64>,
    time_step_rank: Option<u64>,
    vocab_size: Option<u64>,
    tied: bool,
}

impl Shape {
    fn read(f: &GgufFile) -> Shape {
        Shape {
            hidden_size: u64_key(f, "mamba.embedding_length"),
            num_hidden_layers: u64_key(f, "mamba.block_count"),
            intermediate_size: u64_key(f, "mamba.ssm.inner_size"),
            state_size: u64_key(f, "mamba.ssm.state_size"),
            conv_kernel: u64_key(f, "mamba.ssm.conv_kernel"),
            time_step_rank: u64_key(f, "mamba.ssm.time_step_rank"),
            vocab_size: f
                .tensor("token_embd.weight")
                .and_then(|t| t.dims.get(1).copied()),
            tied: f.tensor("output.weight").is_none(),
        }
    }

    /// (field, ours, models.toml's) for every field that differs.
    /// Whether every hyper-parameter is in the file (a shape to match by).
    fn complete(&self) -> bool {
        [
            self.hidden_size,
            self.num_hidden_layers,
            self.intermediate_size,
            self.state_size,
            self.conv_kernel,
            self.time_step_rank,
            self.vocab_size,
        ]
        .iter()
        .all(Option::is_some)
    }

    fn diffs(&self, k: &KnownModel) -> Vec<(&'static str, String, String)> {
        let mut v = Vec::new();
        let mut cmp = |what: &'static str, ours: Option<u64>, theirs: u64| {
            if let Some(o) = ours {
                if o != theirs {
                    v.push((what, o.to_string(), theirs.to_string()));
                }
            }
        };
        cmp("mamba.embedding_length", self.hidden_size, k.hidden_size);
        cmp(
            "mamba.block_count",
            self.num_hidden_layers,
            k.num_hidden_layers,
        );
        cmp(
            "mamba.ssm.inner_size",
            self.intermediate_size,
            k.intermediate_size,
        );
        cmp("mamba.ssm.state_size", self.state_size, k.state_size);
        cmp("mamba.ssm.conv_kernel", self.conv_kernel, k.conv_kernel);
        cmp(
            "mamba.ssm.time_step_rank",
            self.time_step_rank,
            k.time_step_rank,
        );
        // llama.cpp pads the token table to a multiple of 8 at most.
        if let Some(vs) = self.vocab_size {
            if vs < k.vocab_size || vs > k.vocab_size.div_ceil(8) * 8 {
                v.push((
                    "token_embd.weight rows",
                    vs.to_string(),
                    k.vocab_size.to_string(),
                ));
            }
        }
        v
    }
}

/// Identifies the model in `f` against `models`.
pub fn identify(f: &GgufFile, models: &Models) -> Identity {
    let mut id = Identity::default();
    if f.architecture() != Some("mamba") {
        return id;
    }
    let shape = Shape::read(f);
    let key_family = match f.get("mamba.ssm.dt_b_c_rms") {
        Some(_) => Some(if f.get_bool("mamba.ssm.dt_b_c_rms").unwrap_or(false) {
            FALCON_MAMBA
        } else {
            MAMBA
        }),
        None => None,
    };
    let family_ok = |k: &KnownModel| key_family.is_none_or(|fam| k.family == fam);

    // By name: general.name, then basename (+ size label + finetune).
    let name = f.get_str("general.name").ok().map(slug);
    let mut base = f.get_str("general.basename").ok().map(slug);
    if let (Some(b), Ok(sl)) = (&mut base, f.get_str("general.size_label")) {
        b.push('-');
        b.push_str(&slug(sl));
        if let Ok(ft) = f.get_str("general.finetune") {
            b.push('-');
            b.push_str(&slug(ft));
        }
    }
    let by_name = [name.as_deref(), base.as_deref()]
        .into_iter()
        .flatten()
        .find_map(|n| {
            // The longest known name the file's name is or contains, so
            // "falcon-mamba-7b-instruct-q4_k_m" is the instruct model.
            models
                .model
                .iter()
                .filter(|m| {
                    let kn = m.name.to_ascii_lowercase();
                    n == kn || n.starts_with(&format!("{kn}-"))
                })
                .max_by_key(|m| m.name.len())
        });
    if let Some(k) = by_name.filter(|k| family_ok(k)) {
        id.known = Some(k.clone());
        id.matched_by = Some("general.name");
    } else if shape.complete() {
        // By shape and family; the base model where several share it.
        let cands: Vec<&KnownModel> = models
            .model
            .iter()
            .filter(|m| {
                family_ok(m) && shape.diffs(m).is_empty() && shape.tied == m.tie_word_embeddings
            })
            .collect();
        if let Some(k) = cands.first() {
            id.known = Some((*k).clone());
            id.matched_by = Some("hyper-parameters");
        }
    }

    id.family_from_key = key_family.is_some();
    id.family = key_family.or_else(|| {
        let fam = id.known.as_ref().map(|k| k.family.as_str());
        if fam == Some(FALCON_MAMBA) {
            id.warnings.push(format!(
                "no mamba.ssm.dt_b_c_rms key (a file written before llama.cpp knew Falcon Mamba), but it is {}: mamba-gguf applies the dt/B/C RMS norm, llama.cpp would not (reconvert it to fix the file)",
                id.known.as_ref().map(|k| k.name.as_str()).unwrap_or("Falcon Mamba")
            ));
            Some(FALCON_MAMBA)
        } else {
            Some(MAMBA)
        }
    });

    let Some(k) = id.known.clone() else {
        return id;
    };
    let w = &mut id.warnings;
    if id.matched_by == Some("general.name") {
        for (what, ours, theirs) in shape.diffs(&k) {
            w.push(format!(
                "{what} is {ours}, but models.toml says {theirs} for {}",
                k.name
            ));
        }
        if shape.tied != k.tie_word_embeddings {
            w.push(format!(
                "the output head is {}, but models.toml says {} for {}",
                if shape.tied {
                    "tied (no output.weight)"
                } else {
                    "stored"
                },
                if k.tie_word_embeddings {
                    "tied"
                } else {
                    "untied"
                },
                k.name
            ));
        }
    }
    if let Some(fam) = key_family {
        if fam != k.family {
            w.push(format!(
                "mamba.ssm.dt_b_c_rms says {fam}, but models.toml lists {} as {}",
                k.name, k.family
            ));
        }
    }
    if id.family == Some(FALCON_MAMBA) {
        let want = k.mixer_rms_eps.unwrap_or(1e-6);
        match f.get_f32("mamba.ssm.dt_b_c_rms_eps") {
            Ok(e) if (f64::from(e) - want).abs() > want * 1e-3 => w.push(format!(
                "mamba.ssm.dt_b_c_rms_eps is {e:e}, but {} uses mixer_rms_eps {want:e}",
                k.name
            )),
            Ok(_) => {}
            Err(_) => {
                let eps = f
                    .get_f32("mamba.attention.layer_norm_rms_epsilon")
                    .unwrap_or(1e-5);
                if (f64::from(eps) - want).abs() > want * 1e-3 {
                    w.push(format!(
                        "no mamba.ssm.dt_b_c_rms_eps key (llama.cpp writes none): the dt/B/C norm uses layer_norm_rms_epsilon {eps:e}, while {} was trained with mixer_rms_eps {want:e}",
                        k.name
                    ));
                }
            }
        }
    }
    if let Ok(ctx) = f.get_u32("mamba.context_length") {
        if ctx == 1 << 20 {
            w.push(
                "mamba.context_length is 1048576, llama.cpp's placeholder, not the training context"
                    .to_string(),
            );
        } else if let Some(kc) = k.context_length {
            if ctx != kc {
                w.push(format!(
                    "mamba.context_length is {ctx}, but models.toml says {kc} for {}",
                    k.name
                ));
            }
        }
    }
    if !k.stop_ids.is_empty() {
        let mut have: Vec<u32> = Vec::new();
        match f.get_array("tokenizer.ggml.eos_token_ids") {
            Ok(Array::U32(v)) => have.extend(v),
            Ok(Array::I32(v)) => have.extend(v.iter().filter_map(|&x| u32::try_from(x).ok())),
            Ok(Array::U64(v)) => have.extend(v.iter().filter_map(|&x| u32::try_from(x).ok())),
            Ok(Array::I64(v)) => have.extend(v.iter().filter_map(|&x| u32::try_from(x).ok())),
            _ => {}
        }
        if let Ok(e) = f.get_u32("tokenizer.ggml.eos_token_id") {
            have.push(e);
        }
        let missing: Vec<u32> = k
            .stop_ids
            .iter()
            .copied()
            .filter(|s| !have.contains(s))
            .collect();
        if !missing.is_empty() && f.get("tokenizer.ggml.tokens").is_some() {
            w.push(format!(
                "stop ids {missing:?} of {} are not among the file's end-of-turn ids {have:?} (mamba-gguf stops on them too, from models.toml; llama.cpp will not)",
                k.name
            ));
        }
    }
    if k.chat_template.is_some()
        && f.get("tokenizer.chat_template").is_none()
        && f.get("tokenizer.ggml.tokens").is_some()
    {
        w.push(format!(
            "no tokenizer.chat_template, while {} has one (mamba-gguf uses models.toml's)",
            k.name
        ));
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use gguf::{GgmlType, TensorSpec, Value};

    /// A metadata-and-embedding-only GGUF (the embedding sets the vocab).
    fn file(
        meta: &[(&str, Value)],
        d: u64,
        vocab: u64,
        output: bool,
    ) -> (tempfile::TempDir, GgufFile) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.gguf");
        let mut m: Vec<(String, Value)> =
            vec![("general.architecture".into(), Value::String("mamba".into()))];
        m.extend(meta.iter().map(|(k, v)| (k.to_string(), v.clone())));
        let emb = vec![0u8; (d * vocab * 2) as usize];
        let mut t = vec![(
            TensorSpec::new("token_embd.weight", vec![d, vocab], GgmlType::F16),
            &emb[..],
        )];
        if output {
            t.push((
                TensorSpec::new("output.weight", vec![d, vocab], GgmlType::F16),
                &emb[..],
            ));
        }
        gguf::write_file(&p, &m, &t).unwrap();
        let f = GgufFile::open(&p).unwrap();
        (dir, f)
    }

    const TOML: &str = r#"
[family.falcon-mamba]
architecture = "FalconMambaForCausalLM"
dt_b_c_rms = true
default_quant = "q4_k_m"
context_length = 8192
[family.mamba]
architecture = "MambaForCausalLM"
dt_b_c_rms = false
default_quant = "q4_k_m"
context_length = 8192
[[model]]
name = "falcon-small"
repo = "org/falcon-small"
family = "falcon-mamba"
hidden_size = 16
num_hidden_layers = 2
intermediate_size = 32
state_size = 8
conv_kernel = 4
time_step_rank = 4
vocab_size = 64
tie_word_embeddings = false
mixer_rms_eps = 1e-6
context_length = 32768
stop_ids = [10, 11]
[[model]]
name = "mamba-small"
repo = "org/mamba-small"
family = "mamba"
hidden_size = 16
num_hidden_layers = 2
intermediate_size = 32
state_size = 8
conv_kernel = 4
time_step_rank = 4
vocab_size = 60
tie_word_embeddings = true
"#;

    fn shape() -> Vec<(&'static str, Value)> {
        vec![
            ("mamba.embedding_length", Value::U32(16)),
            ("mamba.block_count", Value::U32(2)),
            ("mamba.ssm.inner_size", Value::U32(32)),
            ("mamba.ssm.state_size", Value::U32(8)),
            ("mamba.ssm.conv_kernel", Value::U32(4)),
            ("mamba.ssm.time_step_rank", Value::U32(4)),
            ("mamba.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ]
    }

    #[test]
    fn names_family_and_model_and_finds_no_fault_in_a_good_file() {
        let models = Models::parse(TOML).unwrap();
        let mut m = shape();
        m.push(("general.name", Value::String("Falcon Small".into())));
        m.push(("mamba.ssm.dt_b_c_rms", Value::Bool(true)));
        m.push(("mamba.ssm.dt_b_c_rms_eps", Value::F32(1e-6)));
        m.push(("mamba.context_length", Value::U32(32768)));
        m.push(("tokenizer.ggml.eos_token_id", Value::U32(11)));
        m.push((
            "tokenizer.ggml.eos_token_ids",
            Value::Array(Array::U32(vec![11, 10])),
        ));
        let (_d, f) = file(&m, 16, 64, true);
        let id = identify(&f, &models);
        assert_eq!(id.family, Some(FALCON_MAMBA));
        assert!(id.family_from_key);
        assert_eq!(id.known.as_ref().unwrap().name, "falcon-small");
        assert_eq!(id.matched_by, Some("general.name"));
        assert!(id.warnings.is_empty(), "{:?}", id.warnings);
    }

    #[test]
    fn warns_on_every_disagreement() {
        let models = Models::parse(TOML).unwrap();
        let mut m = shape();
        m[5] = ("mamba.ssm.time_step_rank", Value::U32(5));
        m.push(("general.name", Value::String("falcon-small-Q4_K_M".into())));
        m.push(("mamba.ssm.dt_b_c_rms", Value::Bool(true)));
        m.push(("mamba.context_length", Value::U32(1 << 20)));
        m.push(("tokenizer.ggml.tokens", Value::Array(Array::String(vec![]))));
        m.push(("tokenizer.ggml.eos_token_id", Value::U32(11)));
        let (_d, f) = file(&m, 16, 64, false);
        let id = identify(&f, &models);
        assert_eq!(id.known.as_ref().unwrap().name, "falcon-small");
        let all = id.warnings.join("\n");
        for needle in [
            "mamba.ssm.time_step_rank is 5",
            "tied (no output.weight)",
            "no mamba.ssm.dt_b_c_rms_eps key",
            "1048576",
            "stop ids [10]",
        ] {
            assert!(all.contains(needle), "{needle} not in:\n{all}");
        }
        assert_eq!(id.warnings.len(), 5, "{all}");
    }

    #[test]
    fn a_file_without_the_norm_key_is_plain_mamba_unless_known_as_falcon() {
        let models = Models::parse(TOML).unwrap();
        // Unknown name and shape: llama.cpp wrote no key before it knew
        // Falcon Mamba, so such a file is plain Mamba.
        let (_d, f) = file(&shape(), 16, 40, true);
        let id = identify(&f, &models);
        assert_eq!(id.family, Some(MAMBA));
        assert!(!id.family_from_key);
        assert!(id.known.is_none());
        // Untied, 64 rows: the shape of the Falcon Mamba entry, so a file
        // without the key is that model, missing its norm.
        let (_d, f) = file(&shape(), 16, 64, true);
        let id = identify(&f, &models);
        assert_eq!(id.known.as_ref().unwrap().name, "falcon-small");
        assert_eq!(id.matched_by, Some("hyper-parameters"));
        assert_eq!(id.family, Some(FALCON_MAMBA));
        assert!(
            id.warnings.iter().any(|w| w.contains("reconvert")),
            "{:?}",
            id.warnings
        );
        // Tied, 60 rows padded to 64: the plain Mamba entry.
        let (_d, f) = file(&shape(), 16, 64, false);
        let id = identify(&f, &models);
        assert_eq!(id.known.as_ref().unwrap().name, "mamba-small");
        assert_eq!(id.family, Some(MAMBA));
        assert!(id.warnings.is_empty(), "{:?}", id.warnings);
    }

    #[test]
    fn not_a_mamba_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.gguf");
        gguf::write_file(
            &p,
            &[("general.architecture".into(), Value::String("llama".into()))],
            &[],
        )
        .unwrap();
        let id = identify(&GgufFile::open(&p).unwrap(), &Models::builtin());
        assert!(id.family.is_none() && id.known.is_none());
    }
}
