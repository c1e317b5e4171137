//! Prompt log-probabilities on `/v1/completions` (`echo` with `logprobs`),
//! as lm-evaluation-harness's `local-completions` model asks for them: the
//! prompt's tokens come back with the log-probability of each given the
//! tokens before it (the first has none), followed by the generated ones,
//! for prompts given as text, token ids, or several of either. The values
//! are the `perplexity` command's: checked per token against the runtime's
//! all-position logits (`Session::feed_each`, what `perplexity` reads) and
//! in sum against the CLI's own output. scripts/lm_eval runs the harness
//! itself against `serve`.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::runtime_common::{llamacpp_gguf, tempdir};
use mamba_gguf::server::{self, ServerConfig, ServerHandle};
use mamba_gguf::tokenizer::Tokenizer;
use mamba_gguf::{Model, Session};
use serde_json::{json, Value};

const TEXT: &str = "The falcon flies over the valley at dawn, and the river below \
                    carries the light toward the sea. Every morning the same bird returns.";

fn start(model: Arc<Model>) -> ServerHandle {
    let cfg = ServerConfig {
        port: 0,
        timeout: Duration::from_secs(60),
        ..ServerConfig::default()
    };
    server::spawn(model, cfg).expect("server starts")
}

fn post(h: &ServerHandle, body: &Value) -> (u16, Value) {
    let r = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
        .post(format!("http://{}/v1/completions", h.addr))
        .json(body)
        .send()
        .expect("request");
    let status = r.status().as_u16();
    (status, r.json().expect("JSON answer"))
}

fn ok(h: &ServerHandle, body: &Value) -> Value {
    let (status, v) = post(h, body);
    assert_eq!(status, 200, "{body}: {v}");
    v
}

/// Each position's log-probability of the next token, as `perplexity`
/// computes it: one chunked forward with every position's logits, a
/// log-softmax in f64. Element i is token i+1's.
fn reference_logprobs(model: &Model, ids: &[u32]) -> Vec<f64> {
    let mut s = Session::new(model);
    let mut buf = Vec::new();
    let mut out = Vec::new();
    s.feed_each(ids, &mut buf, |p, row| {
        if let Some(&next) = ids.get(p + 1) {
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln() + m;
            out.push(row[next as usize] as f64 - lse);
        }
    })
    .expect("feeds");
    out
}

fn token_logprobs(choice: &Value) -> Vec<Option<f64>> {
    choice["logprobs"]["token_logprobs"]
        .as_array()
        .expect("token_logprobs")
        .iter()
        .map(Value::as_f64)
        .collect()
}

#[test]
fn echoed_prompt_logprobs_are_perplexitys() {
    let path = llamacpp_gguf("falcon-mamba-tiny-f32.gguf");
    let model = Arc::new(Model::load(&path).expect("fixture model loads"));
    let tok = Tokenizer::from_model_file(model.gguf()).expect("tokenizer");
    let bos: Vec<u32> = if tok.add_bos() {
        tok.bos_id().into_iter().collect()
    } else {
        Vec::new()
    };
    let body: Vec<u32> = tok.encode(TEXT, false).expect("encodes");
    let ids: Vec<u32> = bos.iter().chain(&body).copied().collect();
    assert!(
        ids.len() > 20,
        "a prompt of several chunks' worth of positions"
    );
    let h = start(model.clone());

    // Text prompt, nothing generated: the prompt's tokens alone.
    let v = ok(
        &h,
        &json!({"prompt": TEXT, "echo": true, "logprobs": 3, "max_tokens": 0}),
    );
    let c = &v["choices"][0];
    assert_eq!(c["text"], TEXT, "echo gives the prompt back");
    assert_eq!(c["finish_reason"], "length");
    assert_eq!(v["usage"]["prompt_tokens"], ids.len());
    assert_eq!(v["usage"]["completion_tokens"], 0);
    let lps = token_logprobs(c);
    assert_eq!(lps.len(), ids.len(), "{c}");
    assert_eq!(lps[0], None, "the first token has no logprob");
    let pieces: Vec<String> = ids.iter().map(|&i| tok.token_piece(i)).collect();
    assert_eq!(c["logprobs"]["tokens"], json!(pieces));
    let top = c["logprobs"]["top_logprobs"]
        .as_array()
        .expect("top_logprobs");
    assert_eq!(top.len(), ids.len());
    assert!(top[0].is_null(), "the first token's top_logprobs are null");
    let reference = reference_logprobs(&model, &ids);
    for (i, (lp, r)) in lps[1..].iter().zip(&reference).enumerate() {
        let lp = lp.unwrap_or_else(|| panic!("token {}: no logprob", i + 1));
        assert!((lp - r).abs() < 1e-4, "token {}: {lp} vs {r}", i + 1);
        // Its top 3, best first; the token itself is in it exactly when
        // it is at least as likely as the third.
        let t = top[i + 1].as_object().expect("a dict");
        let mut vals: Vec<f64> = t.values().filter_map(Value::as_f64).collect();
        vals.sort_by(|a, b| b.total_cmp(a));
        assert!(!vals.is_empty() && vals.len() <= 3, "{t:?}");
        assert!(lp <= vals[0] + 1e-6, "token {}: above the best", i + 1);
    }

    // The same prompt as token ids: the same numbers.
    let v2 = ok(
        &h,
        &json!({"prompt": ids, "echo": true, "logprobs": 3, "max_tokens": 0}),
    );
    assert_eq!(token_logprobs(&v2["choices"][0]), lps);
    assert_eq!(v2["choices"][0]["text"], TEXT);

    // The CLI's perplexity over the same text (one chunk: the text is
    // shorter than --ctx; positions from ctx/2 on are scored) is the
    // exponent of these logprobs' mean over the same positions.
    let dir = tempdir();
    let file = dir.path().join("text.txt");
    std::fs::write(&file, TEXT).expect("writes");
    let out = Command::new(env!("CARGO_BIN_EXE_mamba-gguf"))
        .args(["perplexity", "-m"])
        .arg(&path)
        .arg("-f")
        .arg(&file)
        .args(["--ctx", "4096", "--json", "-t", "1"])
        .output()
        .expect("perplexity runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let ctx = cli["ctx"].as_u64().expect("ctx") as usize;
    assert_eq!(ctx, ids.len(), "{cli}");
    let first = ctx / 2;
    let scored: Vec<f64> = lps[first + 1..ctx].iter().flatten().copied().collect();
    assert_eq!(scored.len() as u64, cli["scored"].as_u64().expect("scored"));
    let ppl = (-scored.iter().sum::<f64>() / scored.len() as f64).exp();
    let cli_ppl = cli["ppl"].as_f64().expect("ppl");
    assert!(
        ((ppl - cli_ppl) / cli_ppl).abs() < 1e-5,
        "server {ppl} vs perplexity {cli_ppl}"
    );
}

/// What lm-evaluation-harness sends for a batch of loglikelihood requests:
/// token-id lists, echo, logprobs 1, one greedy token. Each choice (in
/// `index` order) is that prompt's alone; the generated token follows the
/// prompt's with its own logprob.
#[test]
fn several_prompts_as_lm_eval_sends_them() {
    let model = Arc::new(
        Model::load(llamacpp_gguf("falcon-mamba-tiny-f32.gguf")).expect("fixture model loads"),
    );
    let tok = Tokenizer::from_model_file(model.gguf()).expect("tokenizer");
    let h = start(model.clone());
    let a = tok
        .encode("Question: is the sky blue? Answer: yes", false)
        .expect("encodes");
    let b = tok
        .encode("Question: is grass red? Answer: no", false)
        .expect("encodes");
    let one = |ids: &[u32]| {
        ok(
            &h,
            &json!({"prompt": ids, "echo": true, "logprobs": 1, "max_tokens": 1, "temperature": 0}),
        )["choices"][0]
            .clone()
    };
    let (ca, cb) = (one(&a), one(&b));
    let v = ok(
        &h,
        &json!({"model": "m", "prompt": [a, b], "echo": true, "logprobs": 1, "max_tokens": 1,
                "temperature": 0, "seed": 1234}),
    );
    let choices = v["choices"].as_array().expect("choices");
    assert_eq!(choices.len(), 2);
    for (i, (c, alone)) in choices.iter().zip([&ca, &cb]).enumerate() {
        assert_eq!(c["index"], i);
        assert_eq!(c["text"], alone["text"]);
        assert_eq!(c["logprobs"], alone["logprobs"]);
    }
    assert_eq!(v["usage"]["prompt_tokens"], a.len() + b.len());
    assert_eq!(v["usage"]["completion_tokens"], 2);
    // The generated token: one past the prompt, greedy, so its logprob is
    // the best of its top-1 dict (lm-eval's is_greedy test).
    let lps = token_logprobs(&ca);
    assert_eq!(lps.len(), a.len() + 1);
    let last = ca["logprobs"]["top_logprobs"][a.len()]
        .as_object()
        .expect("dict");
    let best = last
        .values()
        .filter_map(Value::as_f64)
        .fold(f64::MIN, f64::max);
    assert!((lps[a.len()].expect("generated logprob") - best).abs() < 1e-6);
    let reference = reference_logprobs(&model, &a);
    for (lp, r) in lps[1..a.len()].iter().zip(&reference) {
        assert!((lp.expect("logprob") - r).abs() < 1e-4);
    }

    // Several text prompts with n = 2: prompt k's choices are 2k and 2k+1;
    // streaming gives each choice its prompt, then its reply.
    let body = json!({"prompt": ["One two", "Red green"], "n": 2, "echo": true,
                      "max_tokens": 3, "temperature": 0});
    let v = ok(&h, &body);
    let texts: Vec<&str> = v["choices"]
        .as_array()
        .expect("choices")
        .iter()
        .enumerate()
        .map(|(i, c)| {
            assert_eq!(c["index"], i);
            c["text"].as_str().expect("text")
        })
        .collect();
    assert_eq!(texts.len(), 4);
    assert!(texts[0].starts_with("One two") && texts[1] == texts[0]);
    assert!(texts[2].starts_with("Red green") && texts[3] == texts[2]);
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let r = reqwest::blocking::Client::new()
        .post(format!("http://{}/v1/completions", h.addr))
        .json(&streamed)
        .send()
        .expect("request");
    let mut got = [String::new(), String::new(), String::new(), String::new()];
    for line in r.text().expect("body").lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            break;
        }
        let c: Value = serde_json::from_str(data).expect("chunk");
        for ch in c["choices"].as_array().into_iter().flatten() {
            let i = ch["index"].as_u64().expect("index") as usize;
            got[i].push_str(ch["text"].as_str().unwrap_or(""));
        }
    }
    assert_eq!(got.iter().map(String::as_str).collect::<Vec<_>>(), texts);

    // vLLM's tokenizer endpoints, lm-eval's remote tokenizer: the ids it
    // builds its prompts from are the server's own.
    let http = reqwest::blocking::Client::new();
    let info: Value = http
        .get(format!("http://{}/tokenizer_info", h.addr))
        .send()
        .and_then(|r| r.json())
        .expect("tokenizer_info");
    let eos = info["eos_token"].as_str().expect("eos_token");
    let call = |path: &str, body: Value| -> Value {
        http.post(format!("http://{}{path}", h.addr))
            .json(&body)
            .send()
            .and_then(|r| r.json())
            .expect("answer")
    };
    let t = call(
        "/tokenize",
        json!({"prompt": "Question: is grass red? Answer: no", "add_special_tokens": false}),
    );
    assert_eq!(t["tokens"], json!(b));
    assert_eq!(t["count"], b.len());
    let t = call(
        "/tokenize",
        json!({"prompt": eos, "add_special_tokens": false}),
    );
    assert_eq!(t["tokens"], json!(&tok.eos_ids()[..1]));
    let d = call("/detokenize", json!({"tokens": b}));
    assert_eq!(d["prompt"], "Question: is grass red? Answer: no");

    // Refused, naming the field.
    for (body, param) in [
        (json!({"prompt": []}), "prompt"),
        (json!({"prompt": [[]]}), "prompt[0]"),
        (json!({"prompt": [a.clone(), []]}), "prompt[1]"),
        (json!({"prompt": [99_999_999]}), "prompt"),
        (json!({"prompt": ["x", 5]}), "prompt[1]"),
        (json!({"prompt": "x", "echo": "yes"}), "echo"),
        (
            json!({"prompt": "x", "echo": true, "logprobs": 6}),
            "logprobs",
        ),
    ] {
        let (status, v) = post(&h, &body);
        assert_eq!(status, 400, "{body}: {v}");
        assert_eq!(v["error"]["param"], param, "{body}: {v}");
    }
}
