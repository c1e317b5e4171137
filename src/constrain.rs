//! Constrained decoding with llguidance (the engine llama.cpp and vLLM use):
//! a JSON schema, "any JSON object", or a Lark grammar becomes a matcher that
//! says, before each token, which tokens may come next; the sampler sees only
//! those, so the output cannot leave the grammar. The model's vocabulary is
//! indexed once ([`Grammars::new`]); each request gets its own matcher.
//!
//! JSON is compact (no free whitespace between tokens): a model that likes
//! spaces cannot pad forever, and the output is what `json.dumps` with
//! `separators=(",", ":")` gives.

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::earley::SlicedBiasComputer;
use llguidance::toktrie::{ApproximateTokEnv, InferenceCapabilities, TokEnv, TokRxInfo, TokTrie};
use llguidance::{Matcher, ParserFactory};
use serde_json::Value;

use crate::tokenizer::Tokenizer;

/// What a request constrains its output to.
#[derive(Clone, Debug, PartialEq)]
pub enum Spec {
    /// Any JSON object (`response_format: {"type": "json_object"}`).
    JsonObject,
    /// A JSON schema (`response_format: {"type": "json_schema", ...}`).
    JsonSchema(Value),
    /// A Lark grammar (the `grammar` field).
    Lark(String),
}

/// The vocabulary indexed for llguidance, made once per model.
pub struct Grammars {
    factory: Arc<ParserFactory>,
}

impl std::fmt::Debug for Grammars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Grammars")
    }
}

/// One request's constraint: which tokens may come next.
#[derive(Clone)]
pub struct Constraint {
    m: Matcher,
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Constraint")
    }
}

impl Grammars {
    /// Indexes `tok`'s vocabulary; special tokens (control ids) are marked
    /// so that no grammar can produce them as text; the first end-of-text id
    /// ends a constrained output.
    pub fn new(tok: &Tokenizer) -> Result<Grammars, String> {
        let n = tok.vocab_size();
        let words: Vec<Vec<u8>> = (0..n as u32)
            .map(|id| {
                let b = tok.token_bytes(id);
                if tok.is_special(id) {
                    let mut w = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                    w.extend_from_slice(&b);
                    w
                } else {
                    b
                }
            })
            .collect();
        let eos = tok.eos_ids().first().copied().unwrap_or(0);
        let info = TokRxInfo::new(n as u32, eos);
        let trie = TokTrie::from(&info, &words);
        let env: TokEnv = Arc::new(ApproximateTokEnv::new(trie));
        let mut factory = ParserFactory::new(
            &env,
            InferenceCapabilities::default(),
            &SlicedBiasComputer::general_slices(),
        )
        .map_err(|e| e.to_string())?;
        factory.set_stderr_log_level(0);
        factory.set_buffer_log_level(0);
        Ok(Grammars {
            factory: Arc::new(factory),
        })
    }

    /// Compiles `spec`; the error is llguidance's message.
    pub fn compile(&self, spec: &Spec) -> Result<Constraint, String> {
        let compact = |mut schema: Value| {
            if let Some(o) = schema.as_object_mut() {
                o.entry("x-guidance").or_insert(serde_json::json!({
                    "whitespace_flexible": false,
                    "item_separator": ",",
                    "key_separator": ":",
                }));
            }
            schema
        };
        let g = match spec {
            Spec::JsonObject => {
                TopLevelGrammar::from_json_schema(compact(serde_json::json!({"type": "object"})))
            }
            Spec::JsonSchema(s) => {
                if !s.is_object() {
                    return Err("the schema must be a JSON object".into());
                }
                TopLevelGrammar::from_json_schema(compact(s.clone()))
            }
            Spec::Lark(src) => TopLevelGrammar::from_lark(src.clone()),
        };
        let parser = self.factory.create_parser(g).map_err(|e| e.to_string())?;
        let mut m = Matcher::new(Ok(parser));
        // A grammar that fails only at its first mask fails here, as a 400.
        m.compute_mask().map_err(|e| e.to_string())?;
        Ok(Constraint { m })
    }
}

impl Constraint {
    /// Sets every token the grammar does not allow next to -inf in `logits`
    /// (the end-of-text ids only when the output may end here).
    pub fn mask(&mut self, logits: &mut [f32]) -> Result<(), String> {
        let allowed = self.m.compute_mask_or_eos().map_err(|e| e.to_string())?;
        for (id, l) in logits.iter_mut().enumerate() {
            if !allowed.is_allowed(id as u32) {
                *l = f32::NEG_INFINITY;
            }
        }
        Ok(())
    }

    /// Advances past the sampled token.
    pub fn consume(&mut self, id: u32) -> Result<(), String> {
        self.m.consume_token(id).map_err(|e| e.to_string())
    }

    /// Whether the grammar is complete (nothing more may follow).
    pub fn is_stopped(&self) -> bool {
        self.m.is_stopped()
    }
}
