//! OpenAI request parsing (field by field, so that a wrong field is named in
//! the error) and the error body `{"error": {"message", "type", "param", "code"}}`.

use serde_json::{json, Map, Value};

use super::engine::GenParams;
use crate::chat_template::Message;
use crate::sampler::SamplerConfig;

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl ApiError {
    pub fn bad(param: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: 400,
            message: message.into(),
            kind: "invalid_request_error",
            param: (!param.is_empty()).then(|| param.to_string()),
            code: None,
        }
    }

    pub fn new(status: u16, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
        }
    }

    pub fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

/// Server-side limits and defaults applied to requests.
#[derive(Clone, Debug)]
pub struct Limits {
    /// The most `max_tokens` a request may ask for.
    pub max_tokens: usize,
    /// `max_tokens` when the request gives none.
    pub default_max_tokens: usize,
    /// The model's vocabulary size (`logit_bias` ids must be below it).
    pub vocab: usize,
    /// The most choices (`n`) one request may ask for: the slots (a request
    /// asking for more than are free waits in the queue for them).
    pub max_n: usize,
}

/// Every field a request may carry. Each takes effect, or is a no-op by its
/// own definition (`user`, `store`, `metadata`, `service_tier`: bookkeeping
/// for OpenAI's side); any other field is refused with a 400 naming it, so a
/// client never believes it got what this server does not do.
const COMMON_FIELDS: &[&str] = &[
    "model",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "temperature",
    "top_p",
    "min_p",
    "top_k",
    "repeat_penalty",
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "seed",
    "stop",
    "stream",
    "stream_options",
    "logprobs",
    "ignore_eos",
    "return_tokens",
    "grammar",
    "user",
    "store",
    "metadata",
    "service_tier",
];
/// Chat only.
const CHAT_FIELDS: &[&str] = &[
    "messages",
    "top_logprobs",
    "response_format",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
];
/// Completions only: `best_of` 1 and an empty `suffix` ask for nothing
/// more.
const COMPLETION_FIELDS: &[&str] = &["prompt", "echo", "best_of", "suffix"];

/// Refuses every field this server does not implement (see
/// [`COMMON_FIELDS`]), and the values of accepted ones that would ask for
/// something it does not do.
pub fn check_fields(m: &Map<String, Value>, chat: bool) -> Result<(), ApiError> {
    let own = if chat { CHAT_FIELDS } else { COMPLETION_FIELDS };
    let mut keys: Vec<&String> = m.keys().collect();
    keys.sort();
    for k in keys {
        if !COMMON_FIELDS.contains(&k.as_str()) && !own.contains(&k.as_str()) {
            let why = match k.as_str() {
                "tools" | "tool_choice" | "parallel_tool_calls" => {
                    "tools are for /v1/chat/completions"
                }
                "functions" | "function_call" => {
                    "the deprecated functions API is not implemented: give 'tools'"
                }
                "audio" | "modalities" => "this model reads and writes text only",
                "json_schema" => {
                    "give a schema as response_format {\"type\": \"json_schema\", ...}"
                }
                _ => "this server does not implement it",
            };
            return Err(ApiError::bad(
                k,
                format!("unsupported parameter '{k}': {why}"),
            ));
        }
    }
    get_bool(m, "echo")?;
    if opt(m, "best_of").is_some_and(|v| v.as_u64() != Some(1)) {
        return Err(ApiError::bad("best_of", "only best_of = 1 is supported"));
    }
    if opt(m, "suffix").is_some_and(|v| v.as_str() != Some("")) {
        return Err(ApiError::bad(
            "suffix",
            "'suffix' (insertion) is not implemented",
        ));
    }
    Ok(())
}

/// What the output must follow: `response_format` (`text`, `json_object`,
/// `json_schema` with its `schema`) or a Lark `grammar`, not both.
pub fn output_spec(m: &Map<String, Value>) -> Result<Option<crate::constrain::Spec>, ApiError> {
    use crate::constrain::Spec;
    let rf = match opt(m, "response_format") {
        None => None,
        Some(rf) => match rf.get("type").and_then(Value::as_str) {
            Some("text") => None,
            Some("json_object") => Some(Spec::JsonObject),
            Some("json_schema") => {
                let schema = rf
                    .get("json_schema")
                    .and_then(|j| j.get("schema"))
                    .filter(|s| s.is_object())
                    .ok_or_else(|| {
                        ApiError::bad(
                            "response_format",
                            "json_schema needs {\"json_schema\": {\"schema\": {...}}}",
                        )
                    })?;
                Some(Spec::JsonSchema(schema.clone()))
            }
            _ => {
                return Err(ApiError::bad(
                    "response_format",
                    "response_format type must be text, json_object or json_schema",
                ))
            }
        },
    };
    let grammar = match opt(m, "grammar") {
        None => None,
        Some(Value::String(g)) => Some(Spec::Lark(g.clone())),
        Some(_) => {
            return Err(ApiError::bad(
                "grammar",
                "'grammar' must be a Lark grammar string",
            ))
        }
    };
    match (rf, grammar) {
        (Some(_), Some(_)) => Err(ApiError::bad(
            "grammar",
            "give response_format or grammar, not both",
        )),
        (a, b) => Ok(a.or(b)),
    }
}

/// OpenAI's `logit_bias`: `{"<token id>": bias}`, bias in [-100, 100].
fn logit_bias(m: &Map<String, Value>, vocab: usize) -> Result<Vec<(u32, f32)>, ApiError> {
    let obj = match opt(m, "logit_bias") {
        None => return Ok(Vec::new()),
        Some(Value::Object(o)) => o,
        Some(_) => {
            return Err(ApiError::bad(
                "logit_bias",
                "'logit_bias' must be an object of token id to bias",
            ))
        }
    };
    let mut out = Vec::with_capacity(obj.len());
    for (k, v) in obj {
        let p = format!("logit_bias.{k}");
        let id = k
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|&i| (i as usize) < vocab)
            .ok_or_else(|| {
                ApiError::bad(
                    &p,
                    format!(
                        "logit_bias key '{k}' is not a token id below the vocabulary size {vocab}"
                    ),
                )
            })?;
        let b = v
            .as_f64()
            .filter(|b| (-100.0..=100.0).contains(b))
            .ok_or_else(|| ApiError::bad(&p, format!("{p} must be a number from -100 to 100")))?;
        out.push((id, b as f32));
    }
    Ok(out)
}

/// Parses a JSON body into an object.
pub fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad("", format!("request body is not valid JSON: {e}")))?;
    match v {
        Value::Object(m) => Ok(m),
        _ => Err(ApiError::bad("", "request body must be a JSON object")),
    }
}

pub(crate) fn opt<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    m.get(key).filter(|v| !v.is_null())
}

pub fn get_bool(m: &Map<String, Value>, key: &str) -> Result<Option<bool>, ApiError> {
    match opt(m, key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::bad(key, format!("'{key}' must be a boolean"))),
    }
}

pub(crate) fn get_f32(
    m: &Map<String, Value>,
    key: &str,
    lo: f64,
    hi: f64,
) -> Result<Option<f32>, ApiError> {
    match opt(m, key) {
        None => Ok(None),
        Some(v) => match v.as_f64() {
            Some(x) if (lo..=hi).contains(&x) => Ok(Some(x as f32)),
            Some(x) => Err(ApiError::bad(
                key,
                format!("'{key}' is {x}, it must be between {lo} and {hi}"),
            )),
            None => Err(ApiError::bad(key, format!("'{key}' must be a number"))),
        },
    }
}

pub(crate) fn get_uint(m: &Map<String, Value>, key: &str) -> Result<Option<u64>, ApiError> {
    match opt(m, key) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| ApiError::bad(key, format!("'{key}' must be a non-negative integer"))),
    }
}

/// Sampling and length settings common to both endpoints.
pub fn gen_params(
    m: &Map<String, Value>,
    limits: &Limits,
    logprobs: Option<usize>,
) -> Result<GenParams, ApiError> {
    let max = match get_uint(m, "max_completion_tokens")? {
        Some(v) => Some(v),
        None => get_uint(m, "max_tokens")?,
    };
    let max_tokens = match max {
        None => limits.default_max_tokens,
        Some(v) if v as usize <= limits.max_tokens => v as usize,
        Some(v) => {
            return Err(ApiError::bad(
                "max_tokens",
                format!(
                    "max_tokens is {v}, more than this server's limit of {}",
                    limits.max_tokens
                ),
            ))
        }
    };
    let n = match get_uint(m, "n")? {
        None => 1,
        Some(n) if n >= 1 && n as usize <= limits.max_n => n as usize,
        Some(0) => return Err(ApiError::bad("n", "'n' must be at least 1")),
        Some(n) => {
            return Err(ApiError::bad(
                "n",
                format!(
                    "'n' is {n}, more than this server's {} slots (its --parallel): each \
                     choice decodes in a slot of its own (a request waits for free slots, \
                     but cannot ask for more than there are)",
                    limits.max_n
                ),
            ))
        }
    };
    let temp = get_f32(m, "temperature", 0.0, 2.0)?.unwrap_or(1.0);
    let top_p = get_f32(m, "top_p", 0.0, 1.0)?.unwrap_or(1.0);
    let min_p = get_f32(m, "min_p", 0.0, 1.0)?.unwrap_or(0.0);
    let top_k = get_uint(m, "top_k")?.unwrap_or(0) as usize;
    let repeat_penalty = get_f32(m, "repeat_penalty", 0.0, 10.0)?.unwrap_or(1.0);
    let frequency_penalty = get_f32(m, "frequency_penalty", -2.0, 2.0)?.unwrap_or(0.0);
    let presence_penalty = get_f32(m, "presence_penalty", -2.0, 2.0)?.unwrap_or(0.0);
    let logit_bias = logit_bias(m, limits.vocab)?;
    // No seed: a fresh one, reported in the response so the answer can be
    // reproduced.
    let seed = match opt(m, "seed") {
        None => rand::random::<u64>() >> 1,
        Some(v) => match (v.as_u64(), v.as_i64()) {
            (Some(u), _) => u,
            (None, Some(i)) => i as u64,
            _ => return Err(ApiError::bad("seed", "'seed' must be an integer")),
        },
    };
    let stop = match opt(m, "stop") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => {
            let mut out = Vec::new();
            for v in a {
                match v.as_str() {
                    Some(s) => out.push(s.to_string()),
                    None => return Err(ApiError::bad("stop", "'stop' must be strings")),
                }
            }
            if out.len() > 4 {
                return Err(ApiError::bad("stop", "at most 4 stop strings"));
            }
            out
        }
        Some(_) => {
            return Err(ApiError::bad(
                "stop",
                "'stop' must be a string or an array of strings",
            ))
        }
    };
    let stop = stop.into_iter().filter(|s| !s.is_empty()).collect();
    Ok(GenParams {
        max_tokens,
        sampler: SamplerConfig {
            temp,
            top_k,
            top_p,
            min_p,
            repeat_penalty,
            repeat_last_n: 64,
            frequency_penalty,
            presence_penalty,
            logit_bias,
            seed,
        },
        stop,
        logprobs,
        ignore_eos: get_bool(m, "ignore_eos")?.unwrap_or(false),
        n,
        constraint: None,
    })
}

/// `messages` of a chat request: a non-empty array of `{role, content}` where
/// content is a string or an array of `{"type": "text", "text": ...}` parts.
pub fn messages(m: &Map<String, Value>) -> Result<Vec<Message>, ApiError> {
    let arr = match m.get("messages") {
        Some(Value::Array(a)) => a,
        None | Some(Value::Null) => {
            return Err(ApiError::bad("messages", "'messages' is required"))
        }
        Some(_) => return Err(ApiError::bad("messages", "'messages' must be an array")),
    };
    if arr.is_empty() {
        return Err(ApiError::bad("messages", "'messages' must not be empty"));
    }
    let mut out = Vec::with_capacity(arr.len());
    for (i, v) in arr.iter().enumerate() {
        let p = format!("messages[{i}]");
        let obj = v
            .as_object()
            .ok_or_else(|| ApiError::bad(&p, format!("{p} must be an object")))?;
        let role = obj.get("role").and_then(|r| r.as_str()).ok_or_else(|| {
            ApiError::bad(&format!("{p}.role"), format!("{p}.role must be a string"))
        })?;
        let mut content = match obj.get("content") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(Value::Array(parts)) => {
                let mut s = String::new();
                for part in parts {
                    match (
                        part.get("type").and_then(|t| t.as_str()),
                        part.get("text").and_then(|t| t.as_str()),
                    ) {
                        (Some("text"), Some(t)) => s.push_str(t),
                        _ => {
                            return Err(ApiError::bad(
                                &format!("{p}.content"),
                                "only text content parts are supported",
                            ))
                        }
                    }
                }
                s
            }
            Some(_) => {
                return Err(ApiError::bad(
                    &format!("{p}.content"),
                    format!("{p}.content must be a string or an array of text parts"),
                ))
            }
        };
        // Tool calls and results in the generic format of tools.rs.
        match (role, obj.get("tool_calls")) {
            (_, None | Some(Value::Null)) => {}
            ("assistant", Some(Value::Array(calls))) => {
                let text = super::tools::calls_text(calls, &p)?;
                if !content.is_empty() && !text.is_empty() {
                    content.push('\n');
                }
                content.push_str(&text);
            }
            _ => {
                return Err(ApiError::bad(
                    &format!("{p}.tool_calls"),
                    format!("{p}.tool_calls must be an array, on an assistant message"),
                ))
            }
        }
        if role == "tool" {
            let id = obj
                .get("tool_call_id")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    ApiError::bad(
                        &format!("{p}.tool_call_id"),
                        format!("{p}.tool_call_id must be a string"),
                    )
                })?;
            // The function's name, from the assistant message that called it.
            let name = arr[..i]
                .iter()
                .rev()
                .filter_map(|m| m.get("tool_calls").and_then(Value::as_array))
                .flatten()
                .find(|c| c.get("id").and_then(Value::as_str) == Some(id))
                .and_then(|c| c.get("function")?.get("name")?.as_str());
            let result = super::tools::result_text(id, name, &content);
            // Results of one turn's calls go back as one user message.
            match out.last_mut() {
                Some(last)
                    if i > 0 && arr[i - 1].get("role").and_then(Value::as_str) == Some("tool") =>
                {
                    let last: &mut Message = last;
                    last.content.push('\n');
                    last.content.push_str(&result);
                }
                _ => out.push(Message::new("user", result)),
            }
            continue;
        }
        out.push(Message::new(role, content));
    }
    Ok(out)
}

/// One prompt of a completion request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PromptIn {
    Text(String),
    /// Token ids, fed as given.
    Ids(Vec<u32>),
}

/// The most prompts one completion request may carry (each is read in turn).
pub const MAX_PROMPTS: usize = 256;

/// `prompt` of a completion request, as OpenAI's API takes it: a string,
/// an array of token ids, or an array of several of either (strings, or
/// arrays of token ids), each a prompt of its own whose choices follow the
/// previous one's. Ids must be below the vocabulary size `vocab`.
pub fn prompts(m: &Map<String, Value>, vocab: usize) -> Result<Vec<PromptIn>, ApiError> {
    let ids = |a: &[Value], p: &str| -> Result<Vec<u32>, ApiError> {
        a.iter()
            .map(|v| {
                v.as_u64()
                    .filter(|&id| (id as usize) < vocab)
                    .map(|id| id as u32)
                    .ok_or_else(|| {
                        ApiError::bad(
                            p,
                            format!("{p}: {v} is not a token id (vocabulary size {vocab})"),
                        )
                    })
            })
            .collect()
    };
    let shape = "'prompt' must be a string, an array of strings, an array of token ids \
                 or an array of arrays of token ids";
    let out = match m.get("prompt") {
        Some(Value::String(s)) => vec![PromptIn::Text(s.clone())],
        Some(Value::Array(a)) if a.is_empty() => {
            return Err(ApiError::bad("prompt", "'prompt' must not be empty"))
        }
        Some(Value::Array(a)) if a.iter().all(Value::is_number) => {
            vec![PromptIn::Ids(ids(a, "prompt")?)]
        }
        Some(Value::Array(a)) => {
            let mut out = Vec::with_capacity(a.len());
            for (i, v) in a.iter().enumerate() {
                let p = format!("prompt[{i}]");
                out.push(match v {
                    Value::String(s) => PromptIn::Text(s.clone()),
                    Value::Array(x) if !x.is_empty() => PromptIn::Ids(ids(x, &p)?),
                    Value::Array(_) => {
                        return Err(ApiError::bad(&p, format!("{p} is an empty prompt")))
                    }
                    _ => return Err(ApiError::bad(&p, shape)),
                });
            }
            out
        }
        None | Some(Value::Null) => return Err(ApiError::bad("prompt", "'prompt' is required")),
        Some(_) => return Err(ApiError::bad("prompt", shape)),
    };
    if out.len() > MAX_PROMPTS {
        return Err(ApiError::bad(
            "prompt",
            format!(
                "'prompt' holds {} prompts, more than this server takes in one request ({MAX_PROMPTS})",
                out.len()
            ),
        ));
    }
    Ok(out)
}

/// Whether to stream, and whether the final chunk carries usage.
pub fn stream(m: &Map<String, Value>) -> Result<(bool, bool), ApiError> {
    let stream = get_bool(m, "stream")?.unwrap_or(false);
    let include_usage = match opt(m, "stream_options") {
        None => false,
        Some(Value::Object(o)) => get_bool(o, "include_usage")
            .map_err(|_| ApiError::bad("stream_options.include_usage", "must be a boolean"))?
            .unwrap_or(false),
        Some(_) => return Err(ApiError::bad("stream_options", "must be an object")),
    };
    Ok((stream, include_usage))
}

/// Log-probabilities asked for: `None`, or `Some(k)`: the chosen token's
/// and the `k` most likely alternatives'. Chat: `logprobs` (a boolean) and
/// `top_logprobs` (0..=20, only with `logprobs: true`); completions:
/// `logprobs` (an integer 0..=5, which is k).
pub fn logprobs(m: &Map<String, Value>, chat: bool) -> Result<Option<usize>, ApiError> {
    if chat {
        let on = get_bool(m, "logprobs")?.unwrap_or(false);
        match (on, get_uint(m, "top_logprobs")?) {
            (_, Some(k)) if k > 20 => Err(ApiError::bad(
                "top_logprobs",
                "'top_logprobs' must be at most 20",
            )),
            (false, Some(k)) if k > 0 => Err(ApiError::bad(
                "top_logprobs",
                "'top_logprobs' needs 'logprobs': true",
            )),
            (false, _) => Ok(None),
            (true, k) => Ok(Some(k.unwrap_or(0) as usize)),
        }
    } else {
        match get_uint(m, "logprobs")? {
            None => Ok(None),
            Some(n) if n <= 5 => Ok(Some(n as usize)),
            Some(_) => Err(ApiError::bad("logprobs", "'logprobs' must be at most 5")),
        }
    }
}
