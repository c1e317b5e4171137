//! Hostile chat templates: the input up to the first NUL is the template,
//! the rest are messages, one per line, `role<TAB>content`. Rendering must
//! end (fuel, recursion limit) with text or an error, never hang or panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mamba_gguf::chat_template::{ChatTemplate, Message};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (src, rest) = text.split_once('\0').unwrap_or((&text, "user\thello"));
    let msgs: Vec<Message> = rest
        .lines()
        .take(64)
        .map(|l| {
            let (r, c) = l.split_once('\t').unwrap_or(("user", l));
            Message::new(r, c)
        })
        .collect();
    if let Ok(t) = ChatTemplate::new(src, "<s>", "</s>") {
        let _ = t.render_with_boundaries(&msgs);
    }
});
