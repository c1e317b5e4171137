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
        vocab: 65024,
        max_n: 4,
    };
    for chat in [false, true] {
        let _ = api::check_fields(&m, chat);
        if let Ok(lp) = api::logprobs(&m, chat) {
            if let Ok(p) = api::gen_params(&m, &limits, lp) {
                assert!(p.max_tokens <= limits.max_tokens);
                assert!((1..=limits.max_n).contains(&p.n));
                assert!(p.sampler.logit_bias.iter().all(|&(id, _)| (id as usize) < limits.vocab));
            }
        }
    }
    let _ = api::stream(&m);
    let _ = api::output_spec(&m);
    let _ = api::get_bool(&m, "return_tokens");
    let _ = api::prompt(&m);
    if let Ok(msgs) = api::messages(&m) {
        let t = ChatTemplate::new(CHATML, "", "").expect("ChatML compiles");
        let _ = t.render_with_boundaries(&msgs);
    }
});
