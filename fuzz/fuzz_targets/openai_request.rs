//! The OpenAI request parser on arbitrary bodies: every field parser the
//! server runs (both endpoints), then ChatML rendering of parsed messages.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mamba_gguf::chat_template::{ChatTemplate, CHATML};
use mamba_gguf::server::api::{self, Limits};

fuzz_target!(|data: &[u8]| {
    let Ok(m) = api::parse_object(data) else {
        return;
    };
    let limits = Limits {
        max_tokens: 4096,
        default_max_tokens: 128,
    };
    for chat in [false, true] {
        if let Ok(lp) = api::logprobs(&m, chat) {
            if let Ok(p) = api::gen_params(&m, &limits, lp) {
                assert!(p.max_tokens <= limits.max_tokens);
            }
        }
    }
    let _ = api::stream(&m);
    let _ = api::get_bool(&m, "return_tokens");
    let _ = api::prompt(&m);
    if let Ok(msgs) = api::messages(&m) {
        let t = ChatTemplate::new(CHATML, "", "").expect("ChatML compiles");
        let _ = t.render_with_boundaries(&msgs);
    }
});
