//! Reading the tokenizer keys of a GGUF file.

use gguf::{GgufFile, Value};

use super::bpe::VocabParts;
use super::pre_split::PreKind;
use super::{SpecialIds, TokenizerError};

pub const HF_JSON_KEY: &str = "tokenizer.huggingface.json";
pub const MODEL_KEY: &str = "tokenizer.ggml.model";
pub const PRE_KEY: &str = "tokenizer.ggml.pre";
pub const TOKENS_KEY: &str = "tokenizer.ggml.tokens";
pub const TYPES_KEY: &str = "tokenizer.ggml.token_type";
pub const MERGES_KEY: &str = "tokenizer.ggml.merges";
pub const BOS_KEY: &str = "tokenizer.ggml.bos_token_id";
pub const ADD_BOS_KEY: &str = "tokenizer.ggml.add_bos_token";
/// Our own key: every end-of-generation id, a u32 array.
pub const EOS_IDS_KEY: &str = "tokenizer.ggml.eos_token_ids";
pub const EOS_KEYS: [&str; 3] = [
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.eot_token_id",
    "tokenizer.ggml.eom_token_id",
];
pub const CHAT_TEMPLATE_KEY: &str = "tokenizer.chat_template";

fn wrong(key: &str, expected: &'static str, v: &Value) -> TokenizerError {
    TokenizerError::WrongType {
        key: key.to_string(),
        expected,
        found: v.type_description(),
    }
}

fn opt_str<'f>(file: &'f GgufFile, key: &str) -> Result<Option<&'f str>, TokenizerError> {
    match file.get(key) {
        None => Ok(None),
        Some(v) => v.as_str().map(Some).ok_or_else(|| wrong(key, "string", v)),
    }
}

fn opt_u32(file: &GgufFile, key: &str) -> Result<Option<u32>, TokenizerError> {
    match file.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_u32()
            .map(Some)
            .ok_or_else(|| wrong(key, "an integer in u32 range", v)),
    }
}

fn opt_bool(file: &GgufFile, key: &str) -> Result<Option<bool>, TokenizerError> {
    match file.get(key) {
        None => Ok(None),
        Some(v) => v.as_bool().map(Some).ok_or_else(|| wrong(key, "bool", v)),
    }
}

fn strings(file: &GgufFile, key: &str) -> Result<Vec<String>, TokenizerError> {
    let v = file.get(key).ok_or_else(|| TokenizerError::MissingKey {
        key: key.to_string(),
    })?;
    v.as_array()
        .and_then(|a| a.as_strings())
        .map(<[String]>::to_vec)
        .ok_or_else(|| wrong(key, "an array of strings", v))
}

/// `tokenizer.huggingface.json`, if present.
pub fn hf_json(file: &GgufFile) -> Result<Option<&str>, TokenizerError> {
    opt_str(file, HF_JSON_KEY)
}

/// The vocabulary, merges and pre-tokenizer of a `gpt2`-model GGUF.
pub fn vocab_parts(file: &GgufFile) -> Result<(VocabParts, PreKind), TokenizerError> {
    let model = opt_str(file, MODEL_KEY)?.ok_or_else(|| TokenizerError::MissingKey {
        key: MODEL_KEY.to_string(),
    })?;
    if model != "gpt2" {
        return Err(TokenizerError::UnsupportedModel {
            model: model.to_string(),
        });
    }
    let pre_name = opt_str(file, PRE_KEY)?.unwrap_or("default");
    let pre = PreKind::from_name(pre_name).ok_or_else(|| TokenizerError::UnsupportedPre {
        pre: pre_name.to_string(),
    })?;
    let tokens = strings(file, TOKENS_KEY)?;
    let token_types = match file.get(TYPES_KEY) {
        None => Vec::new(),
        Some(v) => v
            .as_array()
            .and_then(|a| a.to_i32_vec())
            .ok_or_else(|| wrong(TYPES_KEY, "an array of integers", v))?,
    };
    let merges = strings(file, MERGES_KEY)?;
    Ok((
        VocabParts {
            tokens,
            token_types,
            merges,
        },
        pre,
    ))
}

/// BOS, EOS set, `add_bos` and chat template, each id checked against the
/// vocabulary size.
pub fn special_ids(file: &GgufFile, vocab_size: usize) -> Result<SpecialIds, TokenizerError> {
    let check = |key: &str, id: u32| -> Result<u32, TokenizerError> {
        if (id as usize) < vocab_size {
            Ok(id)
        } else {
            Err(TokenizerError::BadTokenId {
                key: key.to_string(),
                id,
                vocab_size,
            })
        }
    };
    let bos = opt_u32(file, BOS_KEY)?
        .map(|id| check(BOS_KEY, id))
        .transpose()?;
    let mut eos: Vec<u32> = Vec::new();
    let mut add = |id: u32| {
        if !eos.contains(&id) {
            eos.push(id);
        }
    };
    if let Some(v) = file.get(EOS_IDS_KEY) {
        let ids = v
            .as_array()
            .and_then(|a| a.to_u32_vec())
            .ok_or_else(|| wrong(EOS_IDS_KEY, "an array of u32 token ids", v))?;
        for id in ids {
            add(check(EOS_IDS_KEY, id)?);
        }
    }
    for key in EOS_KEYS {
        if let Some(id) = opt_u32(file, key)? {
            add(check(key, id)?);
        }
    }
    let add_bos = opt_bool(file, ADD_BOS_KEY)?.unwrap_or(false);
    if add_bos && bos.is_none() {
        return Err(TokenizerError::MissingKey {
            key: format!("{BOS_KEY} (needed because {ADD_BOS_KEY} is true)"),
        });
    }
    let chat_template = opt_str(file, CHAT_TEMPLATE_KEY)?.map(str::to_string);
    Ok(SpecialIds {
        bos,
        add_bos,
        eos,
        chat_template,
    })
}
