//! The tokenizer metadata: `tokenizer.ggml.*` as llama.cpp's converter derives
//! it from tokenizer.json / tokenizer_config.json / config.json, plus our own
//! `tokenizer.ggml.eos_token_ids` (every stop id of generation_config.json)
//! and the whole tokenizer.json under `tokenizer.huggingface.json`.

use std::collections::HashMap;
use std::path::Path;

use gguf::{Array, Value};
use serde_json::Value as Json;

use crate::config::{id_list, read_json, HParams};
use crate::error::{io_err, ConvertError, Result};

/// ggml token types.
pub const TOKEN_NORMAL: i32 = 1;
pub const TOKEN_CONTROL: i32 = 3;
pub const TOKEN_USER_DEFINED: i32 = 4;
pub const TOKEN_UNUSED: i32 = 5;

/// The parsed tokenizer, ready to be written.
#[derive(Debug, Default)]
pub struct Vocab {
    pub pre: String,
    pub tokens: Vec<String>,
    pub token_types: Vec<i32>,
    pub merges: Vec<String>,
    /// (kind, id) for bos, eos, unk, sep, pad, cls, mask, in llama.cpp's order.
    pub special_ids: Vec<(&'static str, u32)>,
    /// add_bos / add_eos / add_sep flags, in the order llama.cpp sets them.
    pub add_special: Vec<(&'static str, bool)>,
    pub chat_template: Option<String>,
    pub eos_token_ids: Vec<u32>,
    pub hf_json: String,
    /// Whether the vocabulary/pre-tokenizer is Falcon's.
    pub is_falcon: bool,
}

fn field_err(path: &Path, what: impl Into<String>) -> ConvertError {
    ConvertError::Field {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

/// Falcon's pre-tokenizer chain: Punctuation, ByteLevel, Digits, 3-digit Split.
fn is_falcon_pre(pre: Option<&Json>) -> bool {
    let Some(list) = pre
        .filter(|p| p.get("type").and_then(|t| t.as_str()) == Some("Sequence"))
        .and_then(|p| p.get("pretokenizers"))
        .and_then(|l| l.as_array())
    else {
        return false;
    };
    let types: Vec<&str> = list
        .iter()
        .filter_map(|p| p.get("type").and_then(|t| t.as_str()))
        .collect();
    types == ["Punctuation", "ByteLevel", "Digits", "Split"]
}

fn is_plain_bytelevel(pre: Option<&Json>) -> bool {
    pre.and_then(|p| p.get("type")).and_then(|t| t.as_str()) == Some("ByteLevel")
}

/// Cheap look at tokenizer.json for Falcon's fingerprint (used to recognise a
/// Falcon Mamba checkpoint whose config says "mamba").
pub fn looks_like_falcon(dir: &Path) -> bool {
    let Ok(t) = read_json(&dir.join("tokenizer.json")) else {
        return false;
    };
    is_falcon_pre(t.get("pre_tokenizer"))
        || t.get("added_tokens")
            .and_then(|a| a.as_array())
            .map(|a| {
                a.iter()
                    .any(|x| x.get("content").and_then(|c| c.as_str()) == Some(">>TITLE<<"))
            })
            .unwrap_or(false)
}

fn looks_special(tok: &str) -> bool {
    matches!(tok, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (tok.starts_with("<|") && tok.ends_with("|>"))
}

/// A special token entry in tokenizer_config.json: a string or {"content": ...}.
fn token_content(v: Option<&Json>) -> Option<String> {
    match v? {
        Json::String(s) => Some(s.clone()),
        Json::Object(o) => o.get("content").and_then(|c| c.as_str()).map(String::from),
        _ => None,
    }
}

/// Build the vocabulary of `dir` for a model with hyper-parameters `hp`.
pub fn read_vocab(dir: &Path, hp: &HParams) -> Result<Vocab> {
    let tj_path = dir.join("tokenizer.json");
    if !tj_path.is_file() {
        return Err(field_err(
            &tj_path,
            "missing (a Hugging Face fast tokenizer is required)",
        ));
    }
    let hf_json = std::fs::read_to_string(&tj_path).map_err(io_err(&tj_path))?;
    let tj: Json = serde_json::from_str(&hf_json).map_err(|source| ConvertError::Json {
        path: tj_path.clone(),
        source,
    })?;
    let model = tj
        .get("model")
        .ok_or_else(|| field_err(&tj_path, "no \"model\""))?;
    let mtype = model.get("type").and_then(|t| t.as_str()).unwrap_or("");
    if mtype != "BPE" {
        return Err(field_err(
            &tj_path,
            format!("tokenizer model type \"{mtype}\" is not supported (byte-level BPE only)"),
        ));
    }
    let vocab_obj = model
        .get("vocab")
        .and_then(|v| v.as_object())
        .ok_or_else(|| field_err(&tj_path, "model.vocab is not an object"))?;
    let n_vocab = hp.padded_vocab() as usize;
    let mut rev: Vec<Option<String>> = vec![None; n_vocab];
    let mut put = |tok: &str, id: u64| -> Result<()> {
        let slot = rev.get_mut(id as usize).ok_or_else(|| {
            field_err(
                &tj_path,
                format!(
                    "token '{tok}' has id {id}, beyond the model's vocabulary of {n_vocab} (config.json vocab_size {})",
                    hp.vocab_size
                ),
            )
        })?;
        *slot = Some(tok.to_string());
        Ok(())
    };
    for (tok, id) in vocab_obj {
        let id = id
            .as_u64()
            .ok_or_else(|| field_err(&tj_path, format!("token '{tok}' has a non-integer id")))?;
        put(tok, id)?;
    }
    // Added tokens: content -> (id, special, normalized).
    let mut added: HashMap<String, (u64, bool)> = HashMap::new();
    let mut added_list: Vec<(String, u64)> = Vec::new();
    if let Some(list) = tj.get("added_tokens").and_then(|a| a.as_array()) {
        for a in list {
            let (Some(content), Some(id)) = (
                a.get("content").and_then(|c| c.as_str()),
                a.get("id").and_then(|i| i.as_u64()),
            ) else {
                return Err(field_err(&tj_path, format!("bad added_tokens entry {a}")));
            };
            let special = a.get("special").and_then(|s| s.as_bool()).unwrap_or(false);
            put(content, id)?;
            added.insert(content.to_string(), (id, special));
            added_list.push((content.to_string(), id));
        }
    }
    let mut tokens = Vec::with_capacity(n_vocab);
    let mut types = Vec::with_capacity(n_vocab);
    for (i, t) in rev.into_iter().enumerate() {
        match t {
            None => {
                tokens.push(format!("[PAD{i}]"));
                types.push(TOKEN_UNUSED);
            }
            Some(tok) => {
                if let Some(&(_, special)) = added.get(&tok) {
                    if special || looks_special(&tok) {
                        types.push(TOKEN_CONTROL);
                        tokens.push(tok);
                    } else {
                        types.push(TOKEN_USER_DEFINED);
                        tokens.push(tok.replace('\u{2581}', " "));
                    }
                } else {
                    types.push(TOKEN_NORMAL);
                    tokens.push(tok);
                }
            }
        }
    }

    // Merges: "a b" strings, or [a, b] pairs with spaces encoded as U+0120.
    let mut merges = Vec::new();
    if let Some(Json::Array(list)) = model.get("merges") {
        for m in list {
            match m {
                Json::String(s) => merges.push(s.clone()),
                Json::Array(pair) if pair.len() == 2 => {
                    let enc = |v: &Json| -> Result<String> {
                        let s = v
                            .as_str()
                            .ok_or_else(|| field_err(&tj_path, format!("bad merge entry {m}")))?;
                        Ok(s.chars()
                            .map(|c| if c == ' ' { '\u{120}' } else { c })
                            .collect())
                    };
                    merges.push(format!("{} {}", enc(&pair[0])?, enc(&pair[1])?));
                }
                _ => return Err(field_err(&tj_path, format!("bad merge entry {m}"))),
            }
        }
    }
    if merges.is_empty() {
        return Err(field_err(
            &tj_path,
            "no BPE merges (llama.cpp refuses a gpt2 vocabulary without them)",
        ));
    }

    let pre_tok = tj.get("pre_tokenizer");
    let is_falcon = is_falcon_pre(pre_tok);
    let pre = if is_falcon {
        "falcon".to_string()
    } else if is_plain_bytelevel(pre_tok) {
        // GPT-NeoX-20B's vocabulary (state-spaces/mamba-*-hf) hashes as "olmo"
        // in llama.cpp's table; any other plain byte-level BPE uses the GPT-2 regex.
        if added.contains_key("|||IP_ADDRESS|||") {
            "olmo".to_string()
        } else {
            "gpt-2".to_string()
        }
    } else {
        return Err(field_err(
            &tj_path,
            format!(
                "pre-tokenizer {} is not one llama.cpp's Mamba support knows (Falcon's chain or plain ByteLevel)",
                pre_tok.map(|p| p.to_string()).unwrap_or_else(|| "null".into())
            ),
        ));
    };

    // Special tokens and add_*_token flags, as gguf-py's SpecialVocab does.
    let tc_path = dir.join("tokenizer_config.json");
    let mut tc = if tc_path.is_file() {
        Some(read_json(&tc_path)?)
    } else {
        None
    };
    let mut add_special: Vec<(&'static str, bool)> = Vec::new();
    let set_add = |v: &mut Vec<(&'static str, bool)>, k: &'static str, b: bool, overwrite: bool| {
        if let Some(e) = v.iter_mut().find(|e| e.0 == k) {
            if overwrite {
                e.1 = b;
            }
        } else {
            v.push((k, b));
        }
    };
    if let Some(pp) = tj.get("post_processor").filter(|p| !p.is_null()) {
        let procs: Vec<&Json> = match pp.get("processors").and_then(|p| p.as_array()) {
            Some(list) => list.iter().collect(),
            None => vec![pp],
        };
        for proc_ in procs {
            match proc_.get("type").and_then(|t| t.as_str()) {
                Some("ByteLevel") => {
                    set_add(&mut add_special, "bos", false, false);
                    set_add(&mut add_special, "eos", false, false);
                }
                Some("TemplateProcessing") => {
                    let single = proc_.get("single").and_then(|s| s.as_array());
                    if let Some(single) = single.filter(|s| s.len() > 1) {
                        let first = single
                            .first()
                            .and_then(|x| x.get("SpecialToken"))
                            .and_then(|x| x.get("id"))
                            .and_then(|x| x.as_str());
                        let bos = tc.as_ref().and_then(|t| token_content(t.get("bos_token")));
                        if let Some(first) = first {
                            set_add(&mut add_special, "bos", Some(first) == bos.as_deref(), true);
                        }
                        let last = single
                            .last()
                            .and_then(|x| x.get("SpecialToken"))
                            .and_then(|x| x.get("id"))
                            .and_then(|x| x.as_str());
                        let eos = tc.as_ref().and_then(|t| token_content(t.get("eos_token")));
                        if let Some(last) = last {
                            set_add(&mut add_special, "eos", Some(last) == eos.as_deref(), true);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    let mut special_ids: Vec<(&'static str, u32)> = Vec::new();
    let mut chat_template = None;
    let set_id = |v: &mut Vec<(&'static str, u32)>, k: &'static str, id: Option<i64>| {
        if let Some(id) = id.filter(|&i| i >= 0 && (i as u64) < n_vocab as u64) {
            if !v.iter().any(|e| e.0 == k) {
                v.push((k, id as u32));
            }
        }
    };
    const KINDS: [&str; 7] = ["bos", "eos", "unk", "sep", "pad", "cls", "mask"];
    if let Some(tc) = tc.as_mut() {
        chat_template = match tc.get("chat_template") {
            Some(Json::String(s)) => Some(s.clone()),
            _ => None,
        };
        if chat_template.is_none() {
            let jinja = dir.join("chat_template.jinja");
            if jinja.is_file() {
                chat_template = Some(std::fs::read_to_string(&jinja).map_err(io_err(&jinja))?);
            } else {
                let cj = dir.join("chat_template.json");
                if cj.is_file() {
                    chat_template = read_json(&cj)?
                        .get("chat_template")
                        .and_then(|s| s.as_str())
                        .map(String::from);
                }
            }
        }
        for kind in KINDS {
            if let Some(b) = tc
                .get(format!("add_{kind}_token"))
                .and_then(|b| b.as_bool())
            {
                set_add(&mut add_special, kind, b, false);
            }
            if let Some(content) = token_content(tc.get(format!("{kind}_token"))) {
                let id = added_list
                    .iter()
                    .find(|(c, _)| *c == content)
                    .map(|(_, id)| *id as i64);
                set_id(&mut special_ids, kind, id);
            }
        }
    }
    // config.json ids fill what the tokenizer files did not name.
    let cfg = read_json(&hp.path)?;
    for kind in KINDS {
        let id = cfg.get(format!("{kind}_token_id")).and_then(|v| v.as_i64());
        set_id(&mut special_ids, kind, id);
    }
    // llama.cpp writes them in its own fixed order.
    special_ids.sort_by_key(|(k, _)| KINDS.iter().position(|x| x == k));
    // Keep only kinds the GGUF writer has keys for (all of these do).

    // Every stop id: generation_config.json eos (int or list), else config's.
    let gc_path = dir.join("generation_config.json");
    let mut eos_ids: Vec<i64> = if gc_path.is_file() {
        id_list(read_json(&gc_path)?.get("eos_token_id"))
    } else {
        Vec::new()
    };
    if eos_ids.is_empty() {
        eos_ids = hp.eos_token_id.clone();
    }
    let tokenizer_eos = special_ids
        .iter()
        .find(|(k, _)| *k == "eos")
        .map(|&(_, e)| i64::from(e));
    if let Some(e) = tokenizer_eos {
        if !eos_ids.contains(&e) {
            eos_ids.insert(0, e);
        }
    }
    // Falcon3-Mamba's config.json (and its Base generation_config.json) say
    // eos 0, which is the padding token `>>TITLE<<`, not an end of text: an
    // id that is the padding id is never a stop id unless the tokenizer
    // itself names it its eos token (state-spaces Mamba: eos = pad = 0 =
    // `<|endoftext|>`).
    let pad = special_ids
        .iter()
        .find(|(k, _)| *k == "pad")
        .map(|&(_, p)| i64::from(p));
    if let Some(p) = pad {
        if tokenizer_eos != Some(p) && eos_ids.len() > 1 {
            eos_ids.retain(|&e| e != p);
        }
    }
    let mut eos_token_ids: Vec<u32> = Vec::new();
    for id in eos_ids {
        if id < 0 || id as u64 >= n_vocab as u64 {
            return Err(field_err(
                &gc_path,
                format!("eos_token_id {id} is outside the vocabulary of {n_vocab}"),
            ));
        }
        if !eos_token_ids.contains(&(id as u32)) {
            eos_token_ids.push(id as u32);
        }
    }
    if chat_template.is_none() {
        chat_template = hp.known.as_ref().and_then(|k| k.chat_template.clone());
    }

    Ok(Vocab {
        pre,
        tokens,
        token_types: types,
        merges,
        special_ids,
        add_special,
        chat_template,
        eos_token_ids,
        hf_json,
        is_falcon,
    })
}

impl Vocab {
    /// The metadata entries, in llama.cpp's order (plus ours at the end).
    pub fn metadata(&self) -> Vec<(String, Value)> {
        let mut m: Vec<(String, Value)> = vec![
            ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
            ("tokenizer.ggml.pre".into(), Value::String(self.pre.clone())),
            (
                "tokenizer.ggml.tokens".into(),
                Value::Array(Array::String(self.tokens.clone())),
            ),
            (
                "tokenizer.ggml.token_type".into(),
                Value::Array(Array::I32(self.token_types.clone())),
            ),
            (
                "tokenizer.ggml.merges".into(),
                Value::Array(Array::String(self.merges.clone())),
            ),
        ];
        for (k, id) in &self.special_ids {
            let key = match *k {
                "bos" => "tokenizer.ggml.bos_token_id",
                "eos" => "tokenizer.ggml.eos_token_id",
                "unk" => "tokenizer.ggml.unknown_token_id",
                "sep" => "tokenizer.ggml.seperator_token_id",
                "pad" => "tokenizer.ggml.padding_token_id",
                "cls" => "tokenizer.ggml.cls_token_id",
                "mask" => "tokenizer.ggml.mask_token_id",
                _ => continue,
            };
            m.push((key.into(), Value::U32(*id)));
        }
        for (k, b) in &self.add_special {
            let key = match *k {
                "bos" => "tokenizer.ggml.add_bos_token",
                "eos" => "tokenizer.ggml.add_eos_token",
                "sep" => "tokenizer.ggml.add_sep_token",
                _ => continue,
            };
            m.push((key.into(), Value::Bool(*b)));
        }
        if let Some(t) = &self.chat_template {
            m.push(("tokenizer.chat_template".into(), Value::String(t.clone())));
        }
        m.push((
            "tokenizer.ggml.eos_token_ids".into(),
            Value::Array(Array::U32(self.eos_token_ids.clone())),
        ));
        m.push((
            "tokenizer.huggingface.json".into(),
            Value::String(self.hf_json.clone()),
        ));
        m
    }
}
