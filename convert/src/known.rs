//! The known checkpoints of `models.toml` (compiled in; see that file).

use serde::Deserialize;
use std::collections::BTreeMap;

/// The repository's models.toml, as compiled into the converter.
pub const MODELS_TOML: &str = include_str!("../../models.toml");

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Family {
    pub architecture: String,
    pub dt_b_c_rms: bool,
    pub default_quant: String,
    pub context_length: u32,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnownModel {
    pub name: String,
    pub repo: String,
    pub family: String,
    pub hidden_size: u64,
    pub num_hidden_layers: u64,
    pub intermediate_size: u64,
    pub state_size: u64,
    pub conv_kernel: u64,
    pub time_step_rank: u64,
    pub vocab_size: u64,
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub stop_ids: Vec<u32>,
    #[serde(default)]
    pub chat_template: Option<String>,
    /// Training context length, written to `mamba.context_length` when the
    /// checkpoint's config.json has none (else the family's default).
    #[serde(default)]
    pub context_length: Option<u32>,
    /// The wrong `model_type` this upload's config.json is known to carry
    /// (the first revision of falcon-mamba-7b-instruct-4bit said "mamba").
    /// Only then does the name override config.json.
    #[serde(default)]
    pub mislabelled: Option<String>,
    /// Falcon's dt/B/C norm epsilon (`mixer_rms_eps`), checked against
    /// config.json.
    #[serde(default)]
    pub mixer_rms_eps: Option<f64>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Models {
    pub family: BTreeMap<String, Family>,
    pub model: Vec<KnownModel>,
}

impl Models {
    /// Parse a models.toml text.
    pub fn parse(text: &str) -> Result<Models, String> {
        let m: Models = toml::from_str(text).map_err(|e| e.to_string())?;
        for k in &m.model {
            if !m.family.contains_key(&k.family) {
                return Err(format!(
                    "model '{}' names unknown family '{}'",
                    k.name, k.family
                ));
            }
        }
        Ok(m)
    }

    /// The compiled-in table.
    pub fn builtin() -> Models {
        // The file is part of the source tree and checked by a unit test.
        Models::parse(MODELS_TOML).unwrap_or(Models {
            family: BTreeMap::new(),
            model: Vec::new(),
        })
    }

    /// Find a checkpoint by a name (folder name, `_name_or_path`, or repo id).
    pub fn find(&self, id: &str) -> Option<&KnownModel> {
        let id = id.trim().trim_end_matches('/');
        let last = id.rsplit('/').next().unwrap_or(id);
        self.model.iter().find(|m| {
            m.repo.eq_ignore_ascii_case(id)
                || m.name.eq_ignore_ascii_case(last)
                || m.repo.eq_ignore_ascii_case(last)
        })
    }

    pub fn family_of(&self, m: &KnownModel) -> Option<&Family> {
        self.family.get(&m.family)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_table_parses_and_names_every_checkpoint() {
        let m = Models::parse(MODELS_TOML).expect("models.toml parses");
        for name in [
            "falcon-mamba-7b",
            "falcon-mamba-7b-instruct",
            "falcon-mamba-7b-4bit",
            "falcon-mamba-7b-instruct-4bit",
            "mamba-130m-hf",
            "mamba-370m-hf",
            "mamba-790m-hf",
            "mamba-1.4b-hf",
            "mamba-2.8b-hf",
            "falcon3-mamba-7b-base",
            "falcon3-mamba-7b-instruct",
        ] {
            assert!(m.find(name).is_some(), "{name}");
        }
        let k = m.find("tiiuae/falcon-mamba-7b-instruct").unwrap();
        assert_eq!(k.intermediate_size, 8192);
        assert_eq!(k.stop_ids, vec![11, 10]);
        assert!(m.family_of(k).unwrap().dt_b_c_rms);
        assert!(m.find("/some/path/Falcon-Mamba-7B").is_some());
        assert!(m.find("falcon-mamba-tiny").is_none());
        let f3 = m.find("tiiuae/Falcon3-Mamba-7B-Instruct").unwrap();
        assert_eq!(f3.stop_ids, vec![10, 11]);
        assert_eq!(f3.context_length, Some(32768));
        assert_eq!(f3.mixer_rms_eps, Some(1e-5));
    }
}
