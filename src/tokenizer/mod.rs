//! Text <-> token ids: Hugging Face `tokenizer.json` when the GGUF carries it,
//! else a BPE built from `tokenizer.ggml.*`.
//!
//! - [`Tokenizer::from_gguf`] prefers `tokenizer.huggingface.json` (the whole
//!   HF `tokenizer.json` as a string, which our converter writes) and runs it
//!   with the `tokenizers` crate; without it, it builds llama.cpp's byte-level
//!   BPE from `tokenizer.ggml.tokens` / `token_type` / `merges` with the
//!   pre-tokenizer `tokenizer.ggml.pre` names ("falcon", "gpt-2" and kin,
//!   "default", "starcoder" and kin).
//! - Special tokens (control, user-defined, unknown) written in the text are
//!   encoded as themselves, as llama.cpp does with `parse_special = true` and
//!   as HF does for added tokens.
//! - Decoding concatenates each token's raw bytes ([`Tokenizer::token_bytes`],
//!   special tokens as their text) and replaces invalid UTF-8 only.
//! - [`StreamDecoder`] turns ids into text one at a time without ever cutting
//!   a multi-byte character.

mod bpe;
mod byte_level;
mod gguf_load;
mod hf;
mod pre_split;
mod stream;

pub use bpe::{TokenType, VocabParts};
pub use pre_split::PreKind;
pub use stream::StreamDecoder;

use bpe::BpeVocab;
use hf::HfBackend;
use pre_split::PreSplitter;

/// Errors building or running a tokenizer. Each names the GGUF key or JSON
/// field at fault.
#[derive(thiserror::Error, Debug)]
pub enum TokenizerError {
    #[error("missing tokenizer metadata key '{key}'")]
    MissingKey { key: String },

    #[error("tokenizer metadata key '{key}' holds {found}, expected {expected}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: String,
    },

    #[error("tokenizer metadata key '{key}' has {len} entries, expected {expected} (one per token in tokenizer.ggml.tokens)")]
    LengthMismatch {
        key: String,
        len: usize,
        expected: usize,
    },

    #[error("tokenizer metadata key '{key}' = {id} is not a token id (vocabulary has {vocab_size} tokens)")]
    BadTokenId {
        key: String,
        id: u32,
        vocab_size: usize,
    },

    #[error("tokenizer.ggml.model = '{model}' is not supported (only 'gpt2', byte-level BPE)")]
    UnsupportedModel { model: String },

    #[error("tokenizer.ggml.pre = '{pre}' is not a pre-tokenizer we implement (falcon, gpt-2, default, starcoder and their aliases)")]
    UnsupportedPre { pre: String },

    #[error("tokenizer.ggml.merges[{index}] = {merge:?} is not 'left right'")]
    BadMerge { index: usize, merge: String },

    #[error("tokenizer.ggml.tokens is empty")]
    EmptyVocab,

    #[error("tokenizer.ggml.tokens has {n} entries, more than a u32 id can name")]
    VocabTooLarge { n: usize },

    #[error("pre-tokenizer pattern {pattern:?} does not compile: {message}")]
    Regex { pattern: String, message: String },

    #[error("tokenizer.huggingface.json is not a usable tokenizer.json: {0}")]
    HfJson(String),

    #[error("tokenizing failed: {0}")]
    Encode(String),

    #[error("a BOS token was asked for but the tokenizer has none (tokenizer.ggml.bos_token_id)")]
    NoBos,

    #[error(transparent)]
    Gguf(#[from] gguf::GgufError),
}

#[derive(Debug)]
enum Backend {
    Vocab(Box<BpeVocab>),
    Hf(Box<HfBackend>),
}

/// A text tokenizer with the special-token facts a runtime needs.
#[derive(Debug)]
pub struct Tokenizer {
    backend: Backend,
    bos: Option<u32>,
    add_bos: bool,
    eos: Vec<u32>,
    chat_template: Option<String>,
}

/// Special-token facts that come from GGUF keys rather than the vocabulary.
#[derive(Clone, Debug, Default)]
pub struct SpecialIds {
    pub bos: Option<u32>,
    /// Whether prompts get a BOS (`tokenizer.ggml.add_bos_token`).
    pub add_bos: bool,
    /// Every id that ends generation, without duplicates.
    pub eos: Vec<u32>,
    pub chat_template: Option<String>,
}

impl Tokenizer {
    /// The HF tokenizer when the file has `tokenizer.huggingface.json`, else
    /// the `tokenizer.ggml.*` vocabulary. Special ids, `add_bos` and the chat
    /// template come from the `tokenizer.ggml.*` / `tokenizer.chat_template`
    /// keys either way.
    pub fn from_gguf(file: &gguf::GgufFile) -> Result<Tokenizer, TokenizerError> {
        match gguf_load::hf_json(file)? {
            Some(json) => {
                let backend = Backend::Hf(Box::new(HfBackend::from_json(json)?));
                let n = match &backend {
                    Backend::Hf(h) => h.vocab_size(),
                    Backend::Vocab(v) => v.len(),
                };
                let specials = gguf_load::special_ids(file, n)?;
                check_ids(&specials, n)?;
                Ok(Tokenizer::with_specials(backend, specials))
            }
            None => Tokenizer::from_gguf_vocab(file),
        }
    }

    /// [`Tokenizer::from_gguf`], plus the stop ids and chat template that
    /// models.toml knows for the model where the file lacks them
    /// ([`Tokenizer::add_known`]): llama.cpp's files of Falcon Mamba 7B
    /// Instruct stop only on `<|endoftext|>`, not on `<|im_end|>`.
    pub fn from_model_file(file: &gguf::GgufFile) -> Result<Tokenizer, TokenizerError> {
        let mut tok = Tokenizer::from_gguf(file)?;
        let id = convert::identify::identify(file, &convert::known::Models::builtin());
        if let Some(k) = id.known {
            tok.add_known(&k.stop_ids, k.chat_template.as_deref());
        }
        Ok(tok)
    }

    /// Always the `tokenizer.ggml.*` vocabulary, even if HF JSON is present.
    pub fn from_gguf_vocab(file: &gguf::GgufFile) -> Result<Tokenizer, TokenizerError> {
        let (parts, pre) = gguf_load::vocab_parts(file)?;
        let n = parts.tokens.len();
        let specials = gguf_load::special_ids(file, n)?;
        Tokenizer::from_vocab_parts(parts, pre, specials)
    }

    /// A GGUF-style vocabulary from plain inputs.
    pub fn from_vocab_parts(
        parts: VocabParts,
        pre: PreKind,
        specials: SpecialIds,
    ) -> Result<Tokenizer, TokenizerError> {
        let vocab = BpeVocab::new(parts, PreSplitter::new(pre)?)?;
        check_ids(&specials, vocab.len())?;
        Ok(Tokenizer::with_specials(
            Backend::Vocab(Box::new(vocab)),
            specials,
        ))
    }

    /// A `tokenizer.json` on its own: no BOS, no EOS ids, no chat template
    /// (those live in the GGUF keys or `tokenizer_config.json`).
    pub fn from_hf_json(json: &str) -> Result<Tokenizer, TokenizerError> {
        Ok(Tokenizer::with_specials(
            Backend::Hf(Box::new(HfBackend::from_json(json)?)),
            SpecialIds::default(),
        ))
    }

    fn with_specials(backend: Backend, s: SpecialIds) -> Tokenizer {
        Tokenizer {
            backend,
            bos: s.bos,
            add_bos: s.add_bos,
            eos: s.eos,
            chat_template: s.chat_template,
        }
    }

    /// Tokenizes `text`, special tokens in it included; prepends the BOS id
    /// when `add_bos` (an error if there is none).
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>, TokenizerError> {
        self.encode_with(text, add_bos, true)
    }

    /// [`Tokenizer::encode`], where `parse_special` false reads the text of
    /// special tokens (`<|endoftext|>`, `>>TITLE<<`) as plain text, as
    /// llama.cpp's `parse_special` and llama-cpp-python's `special=False` do.
    pub fn encode_with(
        &self,
        text: &str,
        add_bos: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_bos {
            out.push(self.bos.ok_or(TokenizerError::NoBos)?);
        }
        match &self.backend {
            Backend::Vocab(v) => v.encode(text, parse_special, &mut out),
            Backend::Hf(h) => h.encode(text, parse_special, &mut out)?,
        }
        Ok(out)
    }

    /// The text of `ids`: special tokens as their text, ids outside the
    /// vocabulary as nothing, invalid UTF-8 as U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        match String::from_utf8(self.decode_bytes(ids)) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }
    }

    /// The bytes of `ids` (what [`Tokenizer::decode`] turns into text): the
    /// tokens' bytes one after another, which may end inside a character
    /// (llama-cpp-python's `detokenize` returns these), or the decoder's
    /// text for a tokenizer.json that is not byte-level.
    pub fn decode_bytes(&self, ids: &[u32]) -> Vec<u8> {
        if let Backend::Hf(h) = &self.backend {
            if let Some(s) = h.decode_via_decoder(ids) {
                return s.into_bytes();
            }
        }
        let mut bytes = Vec::new();
        for &id in ids {
            self.append_bytes(id, &mut bytes);
        }
        bytes
    }

    fn append_bytes(&self, id: u32, out: &mut Vec<u8>) {
        match &self.backend {
            Backend::Vocab(v) => out.extend_from_slice(&v.token_bytes(id)),
            Backend::Hf(h) => out.extend_from_slice(h.token_bytes(id)),
        }
    }

    /// The raw bytes a token stands for (a special token's text; empty for an
    /// id outside the vocabulary).
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        let mut out = Vec::new();
        self.append_bytes(id, &mut out);
        out
    }

    /// Whether `id` is a control token (`<|endoftext|>`, `>>TITLE<<`, ...):
    /// never text a grammar may produce.
    pub fn is_special(&self, id: u32) -> bool {
        match &self.backend {
            Backend::Vocab(v) => matches!(v.token_type(id), Some(bpe::TokenType::Control)),
            Backend::Hf(h) => h.is_special(id),
        }
    }

    /// A display form: the token's bytes as text, invalid UTF-8 (a piece of a
    /// multi-byte character) shown as `<0xAB>` escapes.
    pub fn token_piece(&self, id: u32) -> String {
        let bytes = self.token_bytes(id);
        let mut out = String::new();
        for chunk in bytes.utf8_chunks() {
            out.push_str(chunk.valid());
            for b in chunk.invalid() {
                out.push_str(&format!("<0x{b:02X}>"));
            }
        }
        out
    }

    pub fn vocab_size(&self) -> usize {
        match &self.backend {
            Backend::Vocab(v) => v.len(),
            Backend::Hf(h) => h.vocab_size(),
        }
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// `tokenizer.ggml.add_bos_token` (false when absent, as for gpt2-style
    /// vocabularies in llama.cpp).
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// Ids that end generation: `tokenizer.ggml.eos_token_ids` plus
    /// `eos_token_id`, `eot_token_id`, `eom_token_id`, without duplicates.
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos
    }

    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// What models.toml knows of the model when the file lacks it: its stop
    /// ids are added to the end-of-generation ids (ids outside the
    /// vocabulary are ignored), and its chat template is used when the file
    /// has none.
    pub fn add_known(&mut self, stop_ids: &[u32], chat_template: Option<&str>) {
        for &id in stop_ids {
            if (id as usize) < self.vocab_size() && !self.eos.contains(&id) {
                self.eos.push(id);
            }
        }
        if self.chat_template.is_none() {
            self.chat_template = chat_template.map(str::to_string);
        }
    }

    /// Whether this runs the HF `tokenizer.json` (else the GGUF vocabulary).
    pub fn is_hf(&self) -> bool {
        matches!(self.backend, Backend::Hf(_))
    }
}

fn check_ids(s: &SpecialIds, vocab_size: usize) -> Result<(), TokenizerError> {
    let bad = |key: &str, id: u32| TokenizerError::BadTokenId {
        key: key.to_string(),
        id,
        vocab_size,
    };
    if let Some(b) = s.bos {
        if b as usize >= vocab_size {
            return Err(bad("bos", b));
        }
    }
    if let Some(&e) = s.eos.iter().find(|&&e| e as usize >= vocab_size) {
        return Err(bad("eos", e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> Tokenizer {
        // Bytes, then "Ġw" "or" "ld" merges, then a control token.
        let mut tokens: Vec<String> = (0..=255u8)
            .map(|b| byte_level::byte_to_char(b).to_string())
            .collect();
        let merges = ["Ġ w", "o r", "l d"];
        tokens.extend(merges.iter().map(|m| m.replace(' ', "")));
        tokens.push("<|end|>".into());
        let mut types = vec![1; tokens.len()];
        if let Some(t) = types.last_mut() {
            *t = 3;
        }
        Tokenizer::from_vocab_parts(
            VocabParts {
                tokens,
                token_types: types,
                merges: merges.iter().map(|s| s.to_string()).collect(),
            },
            PreKind::Gpt2,
            SpecialIds {
                bos: Some(259),
                add_bos: false,
                eos: vec![259],
                chat_template: None,
            },
        )
        .expect("valid toy vocabulary")
    }

    #[test]
    fn encode_decode_round_trip_with_specials() {
        let t = toy();
        let ids = t.encode("a world<|end|>", false).expect("encodes");
        assert_eq!(ids, [u32::from(b'a'), 256, 257, 258, 259]);
        assert_eq!(t.decode(&ids), "a world<|end|>");
        assert_eq!(t.encode("", false).expect("encodes"), Vec::<u32>::new());
        assert_eq!(t.encode("", true).expect("encodes"), [259]);
        assert_eq!(t.token_piece(256), " w");
    }

    /// `parse_special` false reads a special token's text as text, on the
    /// GGUF vocabulary and on the Hugging Face tokenizer.json alike.
    #[test]
    fn special_text_as_plain_text() {
        let t = toy();
        let plain = t.encode_with("<|end|>", false, false).expect("encodes");
        assert!(!plain.contains(&259) && plain.len() > 1, "{plain:?}");
        assert_eq!(t.decode(&plain), "<|end|>");
        assert_eq!(
            t.encode_with("<|end|>", false, true).expect("encodes"),
            [259]
        );

        let json = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/hf/falcon-mamba-tiny/tokenizer.json"
        ))
        .expect("fixture tokenizer.json");
        let hf = Tokenizer::from_hf_json(&json).expect("loads");
        let text = "Hi<|endoftext|> there";
        let special = hf.encode_with(text, false, true).expect("encodes");
        let plain = hf.encode_with(text, false, false).expect("encodes");
        assert!(special.contains(&11), "{special:?}");
        assert!(
            !plain.contains(&11) && plain.len() > special.len(),
            "{plain:?}"
        );
        assert_eq!(hf.decode(&plain), text);
        assert_eq!(hf.encode(text, false).expect("encodes"), special);
        let ordinary = "The falcon flies";
        assert_eq!(
            hf.encode_with(ordinary, false, false).expect("encodes"),
            hf.encode(ordinary, false).expect("encodes")
        );
    }

    #[test]
    fn pieces_escape_partial_characters() {
        let t = toy();
        // "é" is C3 A9: two byte tokens, each invalid alone.
        let ids = t.encode("é", false).expect("encodes");
        assert_eq!(ids, [0xC3, 0xA9]);
        assert_eq!(t.token_piece(0xC3), "<0xC3>");
        assert_eq!(t.decode(&ids), "é");
        assert_eq!(t.decode(&ids[..1]), "\u{FFFD}");
        assert_eq!(t.decode_bytes(&ids[..1]), [0xC3]);
        assert_eq!(t.decode_bytes(&ids), "é".as_bytes());
        assert_eq!(t.decode(&[99_999]), "");
    }

    #[test]
    fn special_ids_must_be_in_vocab() {
        let e = Tokenizer::from_vocab_parts(
            VocabParts {
                tokens: vec!["a".into()],
                token_types: vec![],
                merges: vec![],
            },
            PreKind::Gpt2,
            SpecialIds {
                bos: Some(5),
                ..SpecialIds::default()
            },
        );
        assert!(matches!(e, Err(TokenizerError::BadTokenId { id: 5, .. })));
        let no_bos = Tokenizer::from_vocab_parts(
            VocabParts {
                tokens: vec!["a".into()],
                token_types: vec![],
                merges: vec![],
            },
            PreKind::Gpt2,
            SpecialIds::default(),
        )
        .expect("valid");
        assert!(matches!(
            no_bos.encode("a", true),
            Err(TokenizerError::NoBos)
        ));
    }
}
