//! Chat prompts from a model's `tokenizer.chat_template` (a Hugging Face Jinja
//! template), rendered with minijinja the way `transformers` does: blocks
//! trimmed (`trim_blocks`, `lstrip_blocks`), Python string methods
//! (`.strip()`, `.startswith()`, ...), `raise_exception(msg)`, `tojson`,
//! `strftime_now`, and the variables `messages`, `add_generation_prompt`,
//! `bos_token`, `eos_token`.
//!
//! A file without a template gets ChatML (`<|im_start|>role\n...<|im_end|>\n`),
//! which is what llama.cpp falls back to.
//!
//! ```
//! use mamba_gguf::chat_template::{ChatTemplate, Message};
//! let t = ChatTemplate::new(
//!     "{% for m in messages %}[{{ m.role }}] {{ m.content | trim }}\n{% endfor %}\
//!      {% if add_generation_prompt %}[assistant] {% endif %}",
//!     "<s>",
//!     "</s>",
//! )?;
//! let text = t.render(&[Message::new("user", "  hi ")], true)?;
//! assert_eq!(text, "[user] hi\n[assistant] ");
//! # Ok::<(), mamba_gguf::chat_template::TemplateError>(())
//! ```

use serde::{Deserialize, Serialize};

use crate::tokenizer::Tokenizer;

/// ChatML, for models whose file carries no template.
pub const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// One chat message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Message {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// Why a template could not be compiled or rendered.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("chat template does not compile: {0:#}")]
    Compile(minijinja::Error),
    /// Includes the template's own `raise_exception` messages.
    #[error("chat template failed to render: {0:#}")]
    Render(minijinja::Error),
}

/// The most minijinja instructions one render may run. A template comes from
/// the model file, so a hostile one (nested loops over `range(100000)`)
/// would otherwise hang the server; this ends such a render with an error
/// well under a second. ChatML takes about a dozen instructions a message, so
/// real conversations stay far below it. Recursion (macros, nesting) is
/// bounded by minijinja's own limit of 500 levels.
pub const RENDER_FUEL: u64 = 5_000_000;

/// A compiled chat template with its special-token strings.
pub struct ChatTemplate {
    env: minijinja::Environment<'static>,
    bos: String,
    eos: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish()
    }
}

fn raise_exception(msg: String) -> Result<minijinja::Value, minijinja::Error> {
    Err(minijinja::Error::new(
        minijinja::ErrorKind::InvalidOperation,
        msg,
    ))
}

fn strftime_now(fmt: String) -> String {
    // No time-zone database here: a fixed UTC clock rendering of the common
    // fields only (templates use it for "Today's date").
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let month = MONTHS
        .get((m - 1).clamp(0, 11) as usize)
        .copied()
        .unwrap_or("January");
    fmt.replace("%Y", &y.to_string())
        .replace("%m", &format!("{m:02}"))
        .replace("%d", &format!("{d:02}"))
        .replace("%B", month)
        .replace("%b", month.get(..3).unwrap_or(month))
}

impl ChatTemplate {
    /// Compiles `source` with `bos_token` / `eos_token` as the template sees them.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, TemplateError> {
        let mut env = minijinja::Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_fuel(Some(RENDER_FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned("chat", source.to_string())
            .map_err(TemplateError::Compile)?;
        Ok(ChatTemplate {
            env,
            bos: bos_token.to_string(),
            eos: eos_token.to_string(),
        })
    }

    /// The tokenizer's template (ChatML if it has none), its BOS and first EOS
    /// token texts as `bos_token` / `eos_token`.
    pub fn from_tokenizer(tok: &Tokenizer) -> Result<Self, TemplateError> {
        let text = |id: Option<u32>| {
            id.map(|i| String::from_utf8_lossy(&tok.token_bytes(i)).into_owned())
                .unwrap_or_default()
        };
        ChatTemplate::new(
            tok.chat_template().unwrap_or(CHATML),
            &text(tok.bos_id()),
            &text(tok.eos_ids().first().copied()),
        )
    }

    /// Renders a conversation; with `add_generation_prompt` the text ends where
    /// the assistant's reply begins.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, TemplateError> {
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(TemplateError::Render)?;
        tmpl.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos,
            eos_token => &self.eos,
        })
        .map_err(TemplateError::Render)
    }

    /// The rendering of the whole conversation (with the generation prompt)
    /// and, in increasing order, the byte offsets in it where each message
    /// ends: the rendering of `messages[..=i]` without the generation prompt,
    /// kept only when it is a prefix of the whole. Prompt caches snapshot the
    /// model state at these offsets.
    pub fn render_with_boundaries(
        &self,
        messages: &[Message],
    ) -> Result<(String, Vec<usize>), TemplateError> {
        let full = self.render(messages, true)?;
        let mut bounds = Vec::with_capacity(messages.len());
        for i in 1..=messages.len() {
            let part = self.render(&messages[..i], false)?;
            let last = bounds.last().copied().unwrap_or(0);
            if full.starts_with(&part) && part.len() > last && part.len() < full.len() {
                bounds.push(part.len());
            }
        }
        Ok((full, bounds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_and_boundaries() {
        let t = ChatTemplate::new(CHATML, "", "").expect("compiles");
        let msgs = [Message::new("system", "S"), Message::new("user", "U")];
        let (full, b) = t.render_with_boundaries(&msgs).expect("renders");
        assert_eq!(
            full,
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(b, [31, 60]);
        assert!(full[..b[1]].ends_with("U<|im_end|>\n"));
    }

    #[test]
    fn hf_helpers() {
        let src =
            "{{ bos_token }}{% for m in messages %}{% if m.role not in ['user', 'assistant'] %}\
                   {{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}\
                   {% if m.content.startswith('x') %}X{% endif %}{{ m.content.strip() | tojson }}\
                   {% endfor %}{{ eos_token }}";
        let t = ChatTemplate::new(src, "<s>", "</s>").expect("compiles");
        let ok = t
            .render(&[Message::new("user", "xy ")], false)
            .expect("renders");
        assert_eq!(ok, "<s>X\"xy\"</s>");
        let err = t
            .render(&[Message::new("system", "a")], false)
            .expect_err("refused");
        assert!(err.to_string().contains("Only user and assistant"), "{err}");
        assert!(ChatTemplate::new("{% if %}", "", "").is_err());
    }

    /// Hostile templates end with an error, soon: a loop of 10^10 steps runs
    /// out of fuel, unbounded recursion hits the recursion limit.
    #[test]
    fn hostile_templates_are_bounded() {
        let msgs = [Message::new("user", "hi")];
        let t0 = std::time::Instant::now();
        let loops = ChatTemplate::new(
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            "",
            "",
        )
        .expect("compiles");
        let err = loops.render(&msgs, true).expect_err("runs out of fuel");
        assert!(err.to_string().contains("fuel"), "{err}");
        let rec = ChatTemplate::new(
            "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
            "",
            "",
        )
        .expect("compiles");
        let err = rec.render(&msgs, true).expect_err("recursion is bounded");
        assert!(err.to_string().contains("recursion"), "{err}");
        assert!(t0.elapsed().as_secs() < 20, "took {:?}", t0.elapsed());
    }

    /// The fuel still renders long real conversations.
    #[test]
    fn fuel_is_enough_for_long_conversations() {
        let t = ChatTemplate::new(CHATML, "", "").expect("compiles");
        let msgs: Vec<Message> = (0..20_000)
            .map(|i| Message::new(if i % 2 == 0 { "user" } else { "assistant" }, "text"))
            .collect();
        let text = t.render(&msgs, true).expect("renders within the fuel");
        assert_eq!(text.matches("<|im_start|>").count(), 20_001);
    }
}
