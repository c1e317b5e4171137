//! The `general.*` and `mamba.*` metadata, with the values llama.cpp's
//! converter writes (except `mamba.context_length`, see below) and our
//! `mamba.ssm.dt_b_c_rms_eps`.

use std::path::Path;

use gguf::Value;

use crate::config::{HParams, Variant};
use crate::known::Models;
use crate::mix::FileType;

/// Context length written when models.toml has none for the family: a sane
/// default instead of llama.cpp's 2^20 (a Mamba's state does not grow).
pub const DEFAULT_CONTEXT_LENGTH: u32 = 8192;

/// Python's `str.title()` for one word: upper-case a cased letter that follows
/// an uncased character, lower-case the others.
fn title(word: &str) -> String {
    let mut out = String::with_capacity(word.len());
    let mut prev_cased = false;
    for c in word.chars() {
        let cased = c.is_lowercase() || c.is_uppercase();
        if cased && !prev_cased {
            out.extend(c.to_uppercase());
        } else if cased {
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
        prev_cased = cased;
    }
    out
}

fn is_version_or_number(w: &str) -> bool {
    let mut chars = w.chars();
    match chars.next() {
        Some(c) if c.is_ascii_digit() => true,
        Some('v') => {
            let rest: &str = &w[1..];
            !rest.is_empty()
                && rest
                    .split('.')
                    .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
        }
        _ => false,
    }
}

/// gguf-py's `Metadata.id_to_title`: "falcon-mamba-7b" -> "Falcon Mamba 7b".
pub fn id_to_title(id: &str) -> String {
    id.trim()
        .replace('-', " ")
        .split_whitespace()
        .map(|w| {
            let is_lower =
                w.chars().any(|c| c.is_lowercase()) && !w.chars().any(|c| c.is_uppercase());
            if is_lower && !is_version_or_number(w) {
                title(w)
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// gguf-py's `model_weight_count_rounded_notation` ("8.4M", "130M", "7.3B").
pub fn size_label(n: u64) -> String {
    let x = n as f64;
    let (scaled, suffix) = if x > 1e12 {
        (x * 1e-12, "T")
    } else if x > 1e9 {
        (x * 1e-9, "B")
    } else if x > 1e6 {
        (x * 1e-6, "M")
    } else {
        (x * 1e-3, "K")
    };
    let int_digits = format!("{}", scaled.round() as u64);
    let len = int_digits.trim_start_matches('0').len();
    let fix = 2usize.saturating_sub(len);
    format!("{scaled:.fix$}{suffix}")
}

/// The model's display name as llama.cpp derives it: from config.json's
/// `_name_or_path` when that is a model id (at most one '/'), else the folder.
pub fn model_name(dir: &Path, hp: &HParams) -> String {
    if let Some(n) = hp
        .name_or_path
        .as_deref()
        .filter(|n| n.matches('/').count() <= 1)
    {
        let model = n.split_once('/').map(|(_, m)| m).unwrap_or(n);
        if n.contains(' ') {
            return n.to_string();
        }
        return id_to_title(model);
    }
    let folder = dir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "model".into());
    id_to_title(&folder)
}

/// general.* and mamba.* entries for a conversion.
pub fn model_metadata(
    dir: &Path,
    hp: &HParams,
    known: &Models,
    ft: FileType,
    n_params: u64,
) -> Vec<(String, Value)> {
    // The checkpoint's own training context, else models.toml's for the
    // known model, else its family's, else ours.
    let ctx = hp
        .context_length
        .map(|c| c.min(u64::from(u32::MAX)) as u32)
        .or_else(|| hp.known.as_ref().and_then(|k| k.context_length))
        .or_else(|| {
            hp.known
                .as_ref()
                .and_then(|k| known.family_of(k))
                .map(|f| f.context_length)
        })
        .unwrap_or(DEFAULT_CONTEXT_LENGTH);
    let falcon = hp.variant == Variant::FalconMamba;
    let u32v = |x: u64| Value::U32(x.min(u64::from(u32::MAX)) as u32);
    let mut m: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String("mamba".into())),
        ("general.type".into(), Value::String("model".into())),
        ("general.name".into(), Value::String(model_name(dir, hp))),
        (
            "general.size_label".into(),
            Value::String(size_label(n_params)),
        ),
        ("mamba.context_length".into(), Value::U32(ctx)),
        ("mamba.embedding_length".into(), u32v(hp.d_model)),
        ("mamba.feed_forward_length".into(), Value::U32(0)),
        ("mamba.attention.head_count".into(), Value::U32(0)),
        ("mamba.block_count".into(), u32v(hp.n_layer)),
        ("mamba.ssm.conv_kernel".into(), u32v(hp.d_conv)),
        ("mamba.ssm.inner_size".into(), u32v(hp.d_inner)),
        ("mamba.ssm.state_size".into(), u32v(hp.d_state)),
        ("mamba.ssm.time_step_rank".into(), u32v(hp.dt_rank)),
        (
            "mamba.attention.layer_norm_rms_epsilon".into(),
            Value::F32(hp.rms_eps),
        ),
        ("mamba.ssm.dt_b_c_rms".into(), Value::Bool(falcon)),
    ];
    if falcon {
        m.push((
            "mamba.ssm.dt_b_c_rms_eps".into(),
            Value::F32(hp.mixer_rms_eps),
        ));
    }
    m.push(("general.file_type".into(), Value::U32(ft.ftype_id())));
    m.push(("general.quantization_version".into(), Value::U32(2)));
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_like_gguf_py() {
        assert_eq!(id_to_title("falcon-mamba-tiny"), "Falcon Mamba Tiny");
        assert_eq!(
            id_to_title("falcon-mamba-small-bf16"),
            "Falcon Mamba Small Bf16"
        );
        assert_eq!(id_to_title("mamba-1.4b-hf"), "Mamba 1.4b Hf");
        assert_eq!(id_to_title("Falcon-Mamba-7B"), "Falcon Mamba 7B");
        assert_eq!(id_to_title("model-v2"), "Model v2");
    }

    #[test]
    fn size_labels_like_gguf_py() {
        assert_eq!(size_label(8_388_608), "8.4M");
        assert_eq!(size_label(1_100_000), "1.1M");
        assert_eq!(size_label(129_135_360), "129M");
        assert_eq!(size_label(7_272_665_088), "7.3B");
        assert_eq!(size_label(500_000), "500K");
    }
}
