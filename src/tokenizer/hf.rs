//! The Hugging Face path: the whole `tokenizer.json` run by the `tokenizers`
//! crate, so ids match `transformers` exactly.

use std::str::FromStr;

use tokenizers::decoders::DecoderWrapper;

use super::byte_level;
use super::TokenizerError;

pub struct HfBackend {
    tk: tokenizers::Tokenizer,
    /// `tk` reading special tokens' text as plain text, made on first use.
    plain: std::sync::OnceLock<tokenizers::Tokenizer>,
    /// The raw bytes of each id (empty for an id no token has).
    bytes: Vec<Vec<u8>>,
    /// Whether the decoder is byte-level, so tokens' bytes concatenate to the
    /// text; else decoding goes through the decoder.
    byte_level: bool,
}

impl std::fmt::Debug for HfBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfBackend")
            .field("vocab_size", &self.bytes.len())
            .field("byte_level", &self.byte_level)
            .finish()
    }
}

impl HfBackend {
    pub fn from_json(json: &str) -> Result<HfBackend, TokenizerError> {
        let tk = tokenizers::Tokenizer::from_str(json)
            .map_err(|e| TokenizerError::HfJson(e.to_string()))?;
        let is_byte_level = matches!(tk.get_decoder(), Some(DecoderWrapper::ByteLevel(_)));
        let n = tk
            .get_vocab(true)
            .values()
            .map(|&id| id as usize + 1)
            .max()
            .unwrap_or(0);
        let added = tk.get_added_tokens_decoder();
        let mut bytes = Vec::with_capacity(n);
        for id in 0..n as u32 {
            let b = if let Some(t) = added.get(&id) {
                t.content.as_bytes().to_vec()
            } else if let Some(t) = tk.id_to_token(id) {
                match is_byte_level.then(|| byte_level::decode(&t)).flatten() {
                    Some(b) => b,
                    None => tk.decode(&[id], false).unwrap_or(t).into_bytes(),
                }
            } else {
                Vec::new()
            };
            bytes.push(b);
        }
        Ok(HfBackend {
            tk,
            plain: std::sync::OnceLock::new(),
            bytes,
            byte_level: is_byte_level,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.bytes.len()
    }

    /// Whether `id` is an added token marked special.
    pub fn is_special(&self, id: u32) -> bool {
        self.tk
            .get_added_tokens_decoder()
            .get(&id)
            .is_some_and(|t| t.special)
    }

    /// Encodes `text`; without `parse_special`, added tokens marked
    /// special are read as plain text.
    pub fn encode(
        &self,
        text: &str,
        parse_special: bool,
        out: &mut Vec<u32>,
    ) -> Result<(), TokenizerError> {
        let tk = if parse_special {
            &self.tk
        } else {
            self.plain.get_or_init(|| {
                let mut tk = self.tk.clone();
                tk.set_encode_special_tokens(true);
                tk
            })
        };
        let enc = tk
            .encode(text, false)
            .map_err(|e| TokenizerError::Encode(e.to_string()))?;
        out.extend_from_slice(enc.get_ids());
        Ok(())
    }

    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.bytes
            .get(id as usize)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// `None` when the bytes of the tokens concatenate to the text.
    pub fn decode_via_decoder(&self, ids: &[u32]) -> Option<String> {
        if self.byte_level {
            return None;
        }
        self.tk.decode(ids, false).ok()
    }
}
