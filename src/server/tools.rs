//! Tool (function) calls for `/v1/chat/completions`: `tools`, `tool_choice`
//! (`auto`, `none`, `required`, or a named function) and
//! `parallel_tool_calls`; anthropic.rs maps `/v1/messages`' tools onto the
//! same [`Tools`] (`tool_use` / `tool_result` blocks in the same format).
//!
//! Falcon Mamba has no tool-call format of its own, so this server uses a
//! generic one, the same for every model:
//! - the tools are described to the model at the end of the system message
//!   (one is added when the conversation has none): [`Tools::describe`];
//! - a call is the reply's text `<tool_call>{"name":"NAME","arguments":{...}}</tool_call>`
//!   (compact JSON), several separated by a newline; an assistant message's
//!   `tool_calls` go back into the prompt in that form;
//! - a tool's result (a `tool` message) goes back as a user message
//!   `<tool_result id="CALL_ID" name="NAME">\nRESULT\n</tool_result>`
//!   (consecutive results in one user message), since chat templates know
//!   only user and assistant turns.
//!
//! The reply is constrained with llguidance ([`crate::constrain`]): with
//! `auto`, either plain text that does not start with `<tool_call>`, or
//! calls; with `required`, calls to any of the tools; with a named
//! function, calls to it; with `none`, plain text only. Each call's
//! arguments are generated under that function's JSON schema (its
//! `parameters`), so they validate against it. The calls come back in
//! OpenAI's shape (`message.tool_calls`, `finish_reason: "tool_calls"`;
//! streamed as `delta.tool_calls`).

use serde_json::{json, Map, Value};

use super::api::{opt, ApiError};
use crate::constrain::Spec;

/// What opens and closes a call in the reply's text.
pub const OPEN: &str = "<tool_call>";
pub const CLOSE: &str = "</tool_call>";

/// One function the model may call.
#[derive(Clone, Debug, PartialEq)]
pub struct Function {
    pub name: String,
    pub description: Option<String>,
    /// Its arguments' JSON schema (an object schema; `{}` when none).
    pub parameters: Value,
}

/// `tool_choice`.
#[derive(Clone, Debug, PartialEq)]
pub enum Choice {
    Auto,
    None,
    Required,
    Named(String),
}

/// A request's tools.
#[derive(Clone, Debug, PartialEq)]
pub struct Tools {
    pub functions: Vec<Function>,
    pub choice: Choice,
    /// More than one call in a reply (`parallel_tool_calls`, default true).
    pub parallel: bool,
}

/// A call the model made.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    pub name: String,
    /// The arguments as compact JSON text (OpenAI sends them as a string).
    pub arguments: String,
}

/// Whether `n` may name a function (1 to 64 letters, digits, `_`, `-`).
pub fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Tools {
    /// `tools`, `tool_choice` and `parallel_tool_calls` of a chat request:
    /// None without tools (then `tool_choice` may only be `none` or absent).
    pub fn parse(m: &Map<String, Value>) -> Result<Option<Tools>, ApiError> {
        let parallel = super::api::get_bool(m, "parallel_tool_calls")?.unwrap_or(true);
        let list = match opt(m, "tools") {
            None => None,
            Some(Value::Array(a)) => Some(a),
            Some(_) => return Err(ApiError::bad("tools", "'tools' must be an array")),
        };
        let mut functions = Vec::new();
        for (i, t) in list.into_iter().flatten().enumerate() {
            let p = format!("tools[{i}]");
            let bad = |what: &str| ApiError::bad(&p, format!("{p}: {what}"));
            let t = t.as_object().ok_or_else(|| bad("must be an object"))?;
            match t.get("type").and_then(Value::as_str) {
                Some("function") => {}
                _ => {
                    return Err(bad(
                        "only {\"type\": \"function\", ...} tools are supported",
                    ))
                }
            }
            for k in t.keys() {
                if k != "type" && k != "function" {
                    return Err(bad(&format!("unsupported field '{k}'")));
                }
            }
            let f = t
                .get("function")
                .and_then(Value::as_object)
                .ok_or_else(|| bad("'function' must be an object"))?;
            for k in f.keys() {
                // `strict` asks for arguments that follow the schema: they
                // always do here.
                if !["name", "description", "parameters", "strict"].contains(&k.as_str()) {
                    return Err(bad(&format!("unsupported field 'function.{k}'")));
                }
            }
            let name = f
                .get("name")
                .and_then(Value::as_str)
                .filter(|n| valid_name(n))
                .ok_or_else(|| bad("function.name must be 1 to 64 letters, digits, '_' or '-'"))?;
            if functions.iter().any(|g: &Function| g.name == name) {
                return Err(bad(&format!("a second function named '{name}'")));
            }
            let description = match f.get("description") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(_) => return Err(bad("function.description must be a string")),
            };
            let parameters = match f.get("parameters") {
                None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
                Some(v @ Value::Object(_)) => v.clone(),
                Some(_) => return Err(bad("function.parameters must be a JSON schema object")),
            };
            functions.push(Function {
                name: name.to_string(),
                description,
                parameters,
            });
        }
        let choice = match opt(m, "tool_choice") {
            None => Choice::Auto,
            Some(Value::String(s)) => match s.as_str() {
                "auto" => Choice::Auto,
                "none" => Choice::None,
                "required" => Choice::Required,
                _ => {
                    return Err(ApiError::bad(
                        "tool_choice",
                        "tool_choice must be \"auto\", \"none\", \"required\" or \
                         {\"type\": \"function\", \"function\": {\"name\": ...}}",
                    ))
                }
            },
            Some(Value::Object(o)) => {
                let name = o
                    .get("function")
                    .and_then(|f| f.get("name"))
                    .and_then(Value::as_str)
                    .filter(|_| o.get("type").and_then(Value::as_str) == Some("function"))
                    .ok_or_else(|| {
                        ApiError::bad(
                            "tool_choice",
                            "a named tool_choice is {\"type\": \"function\", \"function\": {\"name\": ...}}",
                        )
                    })?;
                if !functions.iter().any(|f| f.name == name) {
                    return Err(ApiError::bad(
                        "tool_choice",
                        format!("tool_choice names '{name}', which is not one of the tools"),
                    ));
                }
                Choice::Named(name.to_string())
            }
            Some(_) => {
                return Err(ApiError::bad(
                    "tool_choice",
                    "tool_choice must be a string or an object",
                ))
            }
        };
        if functions.is_empty() {
            return match choice {
                Choice::Auto | Choice::None if opt(m, "tool_choice").is_none() => Ok(None),
                Choice::None => Ok(None),
                _ => Err(ApiError::bad(
                    "tool_choice",
                    "tool_choice asks for a tool call, but the request gives no tools",
                )),
            };
        }
        Ok(Some(Tools {
            functions,
            choice,
            parallel,
        }))
    }

    /// The text added to the system message: the tools and how to call them.
    pub fn describe(&self) -> String {
        let mut s = String::from(
            "You can call the following tools. To call one, reply with only\n\
             <tool_call>{\"name\":\"TOOL NAME\",\"arguments\":{ARGUMENTS AS JSON}}</tool_call>\n",
        );
        if self.parallel {
            s.push_str("(several calls: one per line). ");
        }
        s.push_str(
            "A tool's result comes back as <tool_result ...>...</tool_result>. \
             Otherwise, answer in plain text.\nTools:\n",
        );
        for f in &self.functions {
            let mut o = json!({"name": f.name});
            if let Some(d) = &f.description {
                o["description"] = json!(d);
            }
            o["parameters"] = f.parameters.clone();
            s.push_str(&o.to_string());
            s.push('\n');
        }
        s
    }

    /// The grammar the reply must follow (see the module docs).
    pub fn spec(&self) -> Spec {
        // A call's JSON, compact, its arguments under the function's schema.
        let call_schema = |f: &Function| {
            json!({
                "type": "object",
                "properties": {"name": {"const": f.name}, "arguments": f.parameters},
                "required": ["name", "arguments"],
                "additionalProperties": false,
            })
        };
        let allowed: Vec<&Function> = match &self.choice {
            Choice::Named(n) => self.functions.iter().filter(|f| &f.name == n).collect(),
            _ => self.functions.iter().collect(),
        };
        let mut schema = if allowed.len() == 1 {
            call_schema(allowed[0])
        } else {
            json!({"anyOf": allowed.iter().map(|f| call_schema(f)).collect::<Vec<_>>()})
        };
        if let Some(o) = schema.as_object_mut() {
            o.insert(
                "x-guidance".into(),
                json!({"whitespace_flexible": false, "item_separator": ",", "key_separator": ":"}),
            );
        }
        let calls = if self.parallel {
            "calls: call (\"\\n\" call)*"
        } else {
            "calls: call"
        };
        // Plain text: anything that does not begin a call.
        let text = format!("TEXT: /(?s:.+)/ & ~/{}(?s:.*)/", regex_escape(OPEN));
        let start = match self.choice {
            Choice::Auto => "start: calls | TEXT",
            Choice::None => "start: TEXT",
            Choice::Required | Choice::Named(_) => "start: calls",
        };
        Spec::Lark(format!(
            "{start}\n{calls}\ncall: \"{OPEN}\" args \"{CLOSE}\"\nargs: %json {schema}\n{text}\n"
        ))
    }
}

fn regex_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if "\\.+*?()|[]{}^$/".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The length of the JSON value at the start of `s` once it is complete
/// (an object or array up to its closing bracket, a string up to its
/// closing quote), or None while it is not. Strings are scanned with their
/// escapes, so a bracket or `</tool_call>` inside one ends nothing. Other
/// values (numbers, literals) end at a delimiter, and are None until one
/// follows them.
fn json_value_len(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    match b.first()? {
        b'{' | b'[' | b'"' => {}
        _ => {
            return b
                .iter()
                .position(|c| b",}] \n\t\r".contains(c))
                .filter(|&n| n > 0)
        }
    }
    let (mut depth, mut in_str, mut esc) = (0usize, false, false);
    for (i, &c) in b.iter().enumerate() {
        if in_str {
            if esc {
                esc = false;
            } else if c == b'\\' {
                esc = true;
            } else if c == b'"' {
                in_str = false;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            continue;
        }
        match c {
            b'"' => in_str = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// What opens a call up to its function's name.
const HEAD: &str = "<tool_call>{\"name\":\"";
/// What follows the name, up to the arguments.
const MID: &str = "\",\"arguments\":";
/// What follows the arguments.
const TAIL: &str = "}</tool_call>";

/// A call at the start of `s` as far as it goes: its name once complete,
/// the raw text of its arguments so far, whether they are complete, and
/// the call's length once it is complete. None when `s` does not (yet)
/// hold a call's name or is not a call in the generated form.
fn partial_call(s: &str) -> Option<(&str, &str, bool, Option<usize>)> {
    let rest = s.strip_prefix(HEAD)?;
    let name_len = rest.find('"')?;
    let name = &rest[..name_len];
    let after = &rest[name_len..];
    if after.len() < MID.len() {
        return None;
    }
    let args = after.strip_prefix(MID)?;
    let start = s.len() - args.len();
    match json_value_len(args) {
        None => Some((name, args, false, None)),
        Some(n) => {
            let tail = &args[n..];
            let whole = tail.starts_with(TAIL).then_some(start + n + TAIL.len());
            Some((name, &args[..n], true, whole))
        }
    }
}

/// The calls in a reply's text when it is calls (it begins with one), or
/// None when it is text. Each call's arguments are its raw JSON text as
/// generated (compact, under the grammar), so streamed deltas add up to
/// them. A call cut short (the reply reached max_tokens inside it) is left
/// out.
pub fn parse_calls(text: &str) -> Option<Vec<Call>> {
    if !text.starts_with(OPEN) {
        return None;
    }
    let mut calls = Vec::new();
    let mut s = text;
    while let Some((name, args, true, Some(len))) = partial_call(s) {
        if serde_json::from_str::<Value>(args).is_err() || !valid_name(name) {
            break;
        }
        calls.push(Call {
            name: name.to_string(),
            arguments: args.to_string(),
        });
        match s[len..].strip_prefix('\n') {
            Some(next) => s = next,
            None => break,
        }
    }
    Some(calls)
}

/// A call's id: the request's id and the call's index (unique per reply).
pub fn call_id(request_id: &str, choice: usize, index: usize) -> String {
    format!("call_{request_id}_{choice}_{index}")
}

/// OpenAI's `tool_calls` of a message.
pub fn calls_json(calls: &[Call], request_id: &str, choice: usize) -> Value {
    json!(calls
        .iter()
        .enumerate()
        .map(|(i, c)| json!({
            "id": call_id(request_id, choice, i),
            "type": "function",
            "function": {"name": c.name, "arguments": c.arguments},
        }))
        .collect::<Vec<_>>())
}

/// An assistant message's `tool_calls`, as the reply's text had them.
pub fn calls_text(calls: &[Value], p: &str) -> Result<String, ApiError> {
    let mut out = Vec::new();
    for (i, c) in calls.iter().enumerate() {
        let q = format!("{p}.tool_calls[{i}]");
        let f = c
            .get("function")
            .filter(|_| c.get("type").and_then(Value::as_str).unwrap_or("function") == "function")
            .ok_or_else(|| ApiError::bad(&q, format!("{q} must be a function call")))?;
        let name = f
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::bad(&q, format!("{q}.function.name must be a string")))?;
        // The arguments as the model wrote them: compact JSON.
        let args: Value = match f.get("arguments") {
            Some(Value::String(s)) => serde_json::from_str(s).map_err(|e| {
                ApiError::bad(&q, format!("{q}.function.arguments is not JSON: {e}"))
            })?,
            Some(v @ Value::Object(_)) => v.clone(),
            _ => {
                return Err(ApiError::bad(
                    &q,
                    format!("{q}.function.arguments must be a JSON string"),
                ))
            }
        };
        out.push(call_text(name, &args));
    }
    Ok(out.join("\n"))
}

/// A call as the reply's text has it.
pub fn call_text(name: &str, arguments: &Value) -> String {
    format!(
        "{OPEN}{}{CLOSE}",
        json!({"name": name, "arguments": arguments})
    )
}

/// A tool message's result, as the model reads it.
pub fn result_text(id: &str, name: Option<&str>, content: &str) -> String {
    let name = name.map(|n| format!(" name=\"{n}\"")).unwrap_or_default();
    format!("<tool_result id=\"{id}\"{name}>\n{content}\n</tool_result>")
}

/// Streams a reply's text as OpenAI's chat deltas when the reply may be
/// tool calls: text that could still begin a call is held back; once the
/// reply is calls, each call goes out as a delta with its id and name (as
/// soon as the name is complete), then its arguments as they are
/// generated, token by token (`{"tool_calls": [{"index", "function":
/// {"arguments": PIECE}}]}`), the pieces adding up to the call's arguments.
#[derive(Debug, Default)]
pub struct DeltaStream {
    text: String,
    /// Bytes of `text` sent as content (text mode).
    sent: usize,
    /// Calls mode: where the current call begins in `text`, its index,
    /// whether its name went out, and the bytes of its arguments sent.
    call_at: usize,
    call: usize,
    named: bool,
    args_sent: usize,
    mode: Mode,
}

#[derive(Debug, Default, PartialEq, Eq, Clone, Copy)]
enum Mode {
    #[default]
    Undecided,
    Text,
    Calls,
    /// The text stopped following the calls' form (it cannot under the
    /// grammar): nothing more is sent.
    Broken,
}

impl DeltaStream {
    /// Adds generated text; returns the deltas to send (`{"content": ...}`
    /// or `{"tool_calls": [...]}` objects).
    pub fn push(&mut self, piece: &str, request_id: &str, choice: usize) -> Vec<Value> {
        self.text.push_str(piece);
        let mut out = Vec::new();
        if self.mode == Mode::Undecided {
            if self.text.starts_with(OPEN) {
                self.mode = Mode::Calls;
            } else if !OPEN.starts_with(self.text.as_str()) {
                self.mode = Mode::Text;
            }
        }
        match self.mode {
            Mode::Undecided | Mode::Broken => {}
            Mode::Text => {
                if self.sent < self.text.len() {
                    out.push(json!({"content": &self.text[self.sent..]}));
                    self.sent = self.text.len();
                }
            }
            Mode::Calls => self.calls(request_id, choice, &mut out),
        }
        out
    }

    fn calls(&mut self, request_id: &str, choice: usize, out: &mut Vec<Value>) {
        loop {
            let s = &self.text[self.call_at..];
            let Some((name, args, _, whole)) = partial_call(s) else {
                let head = if s.len() < HEAD.len() {
                    HEAD.starts_with(s)
                } else {
                    s.starts_with(HEAD)
                };
                if !head {
                    self.mode = Mode::Broken;
                }
                return;
            };
            let i = self.call;
            if !self.named {
                self.named = true;
                out.push(
                    json!({"tool_calls": [{"index": i, "id": call_id(request_id, choice, i),
                    "type": "function", "function": {"name": name, "arguments": ""}}]}),
                );
            }
            if self.args_sent < args.len() {
                out.push(json!({"tool_calls": [{"index": i,
                    "function": {"arguments": &args[self.args_sent..]}}]}));
                self.args_sent = args.len();
            }
            let Some(len) = whole else { return };
            // The next call, after a newline.
            let next = self.call_at + len;
            match self.text.as_bytes().get(next) {
                None => return,
                Some(b'\n') => {
                    self.call_at = next + 1;
                    self.call += 1;
                    self.named = false;
                    self.args_sent = 0;
                }
                Some(_) => {
                    self.mode = Mode::Broken;
                    return;
                }
            }
        }
    }

    /// At the end: the deltas still held back (text that only began like a
    /// call), and whether the reply was calls.
    pub fn finish(&mut self) -> (Vec<Value>, bool) {
        if matches!(self.mode, Mode::Calls | Mode::Broken) {
            return (Vec::new(), true);
        }
        let mut out = Vec::new();
        if self.sent < self.text.len() {
            out.push(json!({"content": &self.text[self.sent..]}));
            self.sent = self.text.len();
        }
        (out, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::constrain::Grammars;
    use crate::tokenizer::Tokenizer;

    fn tools(choice: Value, parallel: bool) -> Tools {
        let m = json!({
            "tools": [
                {"type": "function", "function": {"name": "get_weather", "description": "Weather now",
                 "parameters": {"type": "object", "properties": {
                     "city": {"type": "string"},
                     "unit": {"enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"], "additionalProperties": false}}},
                {"type": "function", "function": {"name": "add", "parameters": {
                    "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                    "required": ["a", "b"], "additionalProperties": false}}},
            ],
            "tool_choice": choice,
            "parallel_tool_calls": parallel,
        });
        Tools::parse(m.as_object().expect("object"))
            .expect("parses")
            .expect("tools")
    }

    /// Whether the grammar takes `text` (as the tokenizer splits it) and
    /// may end after it.
    fn takes(g: &Grammars, tok: &Tokenizer, t: &Tools, text: &str) -> bool {
        let mut c = g.compile(&t.spec()).expect("compiles");
        let ids = tok.encode(text, false).expect("encodes");
        let mut logits = vec![0f32; tok.vocab_size()];
        for id in ids {
            logits.fill(0.0);
            c.mask(&mut logits).expect("mask");
            if logits[id as usize] == f32::NEG_INFINITY {
                return false;
            }
            c.consume(id).expect("consumes");
        }
        logits.fill(0.0);
        c.mask(&mut logits).expect("mask");
        c.is_stopped()
            || tok
                .eos_ids()
                .iter()
                .any(|&e| logits[e as usize] > f32::NEG_INFINITY)
    }

    #[test]
    fn each_tool_choice_allows_what_it_says() {
        let path = crate::llamacpp_fixture::llamacpp_gguf("falcon-mamba-tiny-f32.gguf");
        let model = crate::Model::load(path).expect("fixture model loads");
        let tok = Tokenizer::from_model_file(model.gguf()).expect("tokenizer");
        let g = Grammars::new(&tok).expect("grammars");
        let weather = r#"<tool_call>{"name":"get_weather","arguments":{"city":"Paris","unit":"celsius"}}</tool_call>"#;
        let add = r#"<tool_call>{"name":"add","arguments":{"a":2,"b":3}}</tool_call>"#;
        let bad_enum = r#"<tool_call>{"name":"get_weather","arguments":{"city":"Paris","unit":"kelvin"}}</tool_call>"#;
        let bad_type = r#"<tool_call>{"name":"add","arguments":{"a":"2","b":3}}</tool_call>"#;
        let unknown = r#"<tool_call>{"name":"rm","arguments":{}}</tool_call>"#;
        let two = format!("{weather}\n{add}");
        let text = "It is sunny.";
        let auto = tools(json!("auto"), true);
        for (s, ok) in [
            (weather, true),
            (add, true),
            (two.as_str(), true),
            (text, true),
            (bad_enum, false),
            (bad_type, false),
            (unknown, false),
            ("<tool_call>not json", false),
        ] {
            assert_eq!(takes(&g, &tok, &auto, s), ok, "auto: {s}");
        }
        let required = tools(json!("required"), false);
        for (s, ok) in [
            (weather, true),
            (add, true),
            (two.as_str(), false),
            (text, false),
        ] {
            assert_eq!(takes(&g, &tok, &required, s), ok, "required: {s}");
        }
        let named = tools(
            json!({"type": "function", "function": {"name": "add"}}),
            true,
        );
        for (s, ok) in [(add, true), (weather, false), (text, false)] {
            assert_eq!(takes(&g, &tok, &named, s), ok, "named: {s}");
        }
        let none = tools(json!("none"), true);
        for (s, ok) in [(text, true), (weather, false)] {
            assert_eq!(takes(&g, &tok, &none, s), ok, "none: {s}");
        }
        assert_eq!(
            parse_calls(&two),
            Some(vec![
                Call {
                    name: "get_weather".into(),
                    arguments: r#"{"city":"Paris","unit":"celsius"}"#.into()
                },
                Call {
                    name: "add".into(),
                    arguments: r#"{"a":2,"b":3}"#.into()
                },
            ])
        );
        assert_eq!(parse_calls(text), None);
        let cut = format!("{weather}\n<tool_call>{{\"name\":\"ad");
        assert_eq!(parse_calls(&cut).map(|c| c.len()), Some(1));
    }

    #[test]
    fn deltas_hold_back_what_may_begin_a_call() {
        let mut d = DeltaStream::default();
        assert!(d.push("<tool", "r", 0).is_empty());
        assert_eq!(d.push(" x", "r", 0), vec![json!({"content": "<tool x"})]);
        assert_eq!(d.push("y", "r", 0), vec![json!({"content": "y"})]);
        assert_eq!(d.finish(), (vec![], false));
        let mut d = DeltaStream::default();
        assert!(d.push("<tool_call>{\"name\":\"add\",", "r", 0).is_empty());
        let out = d.push("\"arguments\":{\"a\":1}}</tool_call>", "r", 0);
        assert_eq!(out[0]["tool_calls"][0]["function"]["name"], "add");
        assert_eq!(
            out[1]["tool_calls"][0]["function"]["arguments"],
            "{\"a\":1}"
        );
        assert_eq!(d.finish(), (vec![], true));
        let mut d = DeltaStream::default();
        assert!(d.push("<", "r", 0).is_empty());
        assert_eq!(d.finish(), (vec![json!({"content": "<"})], false));
    }

    #[test]
    fn arguments_stream_piece_by_piece() {
        // Two calls, a string argument holding brackets and the closing
        // tag, fed a few bytes at a time.
        let text = "<tool_call>{\"name\":\"echo\",\"arguments\":{\"s\":\"}</tool_call>\\\"{\",\"n\":[1,{}]}}</tool_call>\n\
                    <tool_call>{\"name\":\"add\",\"arguments\":{\"a\":1}}</tool_call>";
        let want = parse_calls(text).expect("calls");
        assert_eq!(
            want,
            vec![
                Call {
                    name: "echo".into(),
                    arguments: "{\"s\":\"}</tool_call>\\\"{\",\"n\":[1,{}]}".into()
                },
                Call {
                    name: "add".into(),
                    arguments: "{\"a\":1}".into()
                },
            ]
        );
        let mut d = DeltaStream::default();
        let mut got: Vec<(String, String)> = Vec::new();
        let mut pieces = 0;
        let bytes: Vec<char> = text.chars().collect();
        for chunk in bytes.chunks(3) {
            let piece: String = chunk.iter().collect();
            for v in d.push(&piece, "r", 0) {
                let c = &v["tool_calls"][0];
                let i = c["index"].as_u64().expect("index") as usize;
                if let Some(n) = c["function"]["name"].as_str() {
                    assert_eq!(i, got.len());
                    assert_eq!(c["id"], call_id("r", 0, i));
                    got.push((n.to_string(), String::new()));
                }
                let a = c["function"]["arguments"].as_str().expect("arguments");
                if !a.is_empty() {
                    pieces += 1;
                    got[i].1.push_str(a);
                }
            }
        }
        assert_eq!(d.finish(), (vec![], true));
        let want: Vec<(String, String)> = want.into_iter().map(|c| (c.name, c.arguments)).collect();
        assert_eq!(got, want);
        assert!(pieces > 10, "{pieces} pieces: the arguments came whole");
    }
}
