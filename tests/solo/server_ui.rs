//! The chat page at `/` in a real browser: headless Chromium driven over
//! WebDriver (chromedriver's HTTP API, spoken with reqwest), against a
//! server with an API key. It loads the page, which asks for the key; sends
//! a message and sees the streamed reply (the same text the API gives for
//! the same request) with its tokens/s and cached tokens; streams a long
//! reply, sees it grow, stops it midway (the server frees the slot);
//! reloads and finds the conversation as it was. The user's text is HTML
//! that must show as text; a stored reply with Markdown, HTML, a
//! javascript: link and scripts is rendered as Markdown (headings, bold,
//! italics, code, links, lists, quotes, code blocks) with none of its HTML
//! made into elements and no script run. On failure a screenshot is saved (its path is
//! printed); MAMBA_GGUF_UI_SCREENSHOT=FILE.png saves one after the first
//! reply (docs/chat-page.png is one).
//!
//! Needs `chromium` and `chromedriver` (Debian: apt-get install chromium
//! chromium-driver; MAMBA_GGUF_CHROMIUM / MAMBA_GGUF_CHROMEDRIVER name
//! others): without them the test is reported as ignored, with the reason,
//! and fails under CI=true (.ci/run installs them).

use std::net::TcpListener;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::{Ran, Skip};
use crate::runtime_common::{llamacpp_gguf, tempdir};
use mamba_gguf::server::{self, ServerConfig};
use mamba_gguf::Model;
use serde_json::{json, Value};

const KEY: &str = "page-test-key";
/// WebDriver's key for an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn find_tool(env: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|d| names.iter().map(move |n| d.join(n)))
        .find(|p| p.is_file())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A chromedriver process and one browser session; dropping it ends both.
struct Browser {
    driver: Child,
    http: reqwest::blocking::Client,
    url: String,
}

impl Browser {
    fn start(chromium: &Path, chromedriver: &Path, profile: &Path) -> Browser {
        let port = free_port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        let base = format!("http://127.0.0.1:{port}");
        let t0 = Instant::now();
        while !http
            .get(format!("{base}/status"))
            .send()
            .ok()
            .and_then(|r| r.json::<Value>().ok())
            .is_some_and(|v| v["value"]["ready"] == true)
        {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "chromedriver never got ready"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut b = Browser {
            driver,
            http,
            url: String::new(),
        };
        // Without network, Chromium stalls on its background services
        // unless told to leave them alone.
        let caps = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                     "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", "--window-size=1100,760",
                     format!("--user-data-dir={}", profile.display())],
        }}}});
        let r: Value = b
            .http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .and_then(|r| r.json())
            .expect("new session");
        let id = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {r}"));
        b.url = format!("{base}/session/{id}");
        b
    }

    fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let v: Value = req
            .send()
            .and_then(|r| r.json())
            .expect("webdriver answers");
        if v["value"].get("error").is_some() {
            panic!("webdriver {path}: {}", v["value"]);
        }
        v["value"].clone()
    }

    fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })));
    }

    fn refresh(&self) {
        self.call(reqwest::Method::POST, "/refresh", Some(json!({})));
    }

    fn element(&self, css: &str) -> String {
        let v = self.call(
            reqwest::Method::POST,
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        v[ELEMENT].as_str().expect("element id").to_string()
    }

    fn click(&self, css: &str) {
        let e = self.element(css);
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/click"),
            Some(json!({})),
        );
    }

    /// Types into a field as a user does (clearing it first).
    fn fill(&self, css: &str, text: &str) {
        let e = self.element(css);
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/clear"),
            Some(json!({})),
        );
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        );
    }

    fn js(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    /// Polls `script` until `done` holds for its value (20 s at most).
    fn wait(&self, what: &str, script: &str, done: impl Fn(&Value) -> bool) -> Value {
        let t0 = Instant::now();
        loop {
            let v = self.js(script);
            if done(&v) {
                return v;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "waited 20 s for {what}; last: {v}"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn screenshot(&self, to: &Path) {
        let v = self.call(reqwest::Method::GET, "/screenshot", None);
        let png = base64_decode(v.as_str().unwrap_or(""));
        std::fs::write(to, png).expect("writes the screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.url.is_empty() {
            let _ = self.http.delete(&self.url).send();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let (mut out, mut acc, mut bits) = (Vec::new(), 0u32, 0);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// The last assistant message: its state, text (the model's, which the
/// page shows rendered as Markdown) and statistics line.
const LAST_REPLY: &str =
    "const m = [...document.querySelectorAll('#messages .msg.assistant')].pop();
    return m ? {state: m.dataset.state, text: m.dataset.raw,
                stats: m.querySelector('.stats').textContent} : null;";

pub fn chat_page_in_chromium() -> Ran {
    let (Some(chromium), Some(chromedriver)) = (
        find_tool("MAMBA_GGUF_CHROMIUM", &["chromium", "chromium-browser"]),
        find_tool("MAMBA_GGUF_CHROMEDRIVER", &["chromedriver"]),
    ) else {
        return Err(Skip::needs(
            "chromium or chromedriver is not installed (Debian: apt-get install chromium \
             chromium-driver)",
        ));
    };
    let model = Arc::new(
        Model::load(llamacpp_gguf("falcon-mamba-tiny-f32.gguf")).expect("fixture model loads"),
    );
    let h = server::spawn(
        model,
        ServerConfig {
            port: 0,
            timeout: Duration::from_secs(120),
            max_tokens: 1_000_000,
            api_key: Some(KEY.into()),
            model_name: "tiny-falcon".into(),
            ..ServerConfig::default()
        },
    )
    .expect("server starts");
    let base = format!("http://{}", h.addr);
    let profile = tempdir();
    let b = Browser::start(&chromium, &chromedriver, profile.path());
    let run = std::panic::catch_unwind(AssertUnwindSafe(|| drive(&b, &base)));
    if let Err(e) = run {
        let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("server_ui-failure.png");
        b.screenshot(&shot);
        eprintln!("screenshot of the page when it failed: {}", shot.display());
        std::panic::resume_unwind(e);
    }
    Ok(())
}

fn drive(b: &Browser, base: &str) {
    let http = reqwest::blocking::Client::new();
    // The page loads without the key, learns the API wants one, asks.
    b.goto(&format!("{base}/"));
    b.wait(
        "the API key field",
        "return !document.getElementById('key-row').hidden",
        |v| v == true,
    );
    b.fill("#api-key", KEY);
    b.fill("#max_tokens", "8");
    b.fill("#temperature", "0");
    b.fill("#system", "You are terse.");
    b.click("#toggle-settings"); // closes the panel; the fields' change events fired
    b.wait(
        "the model's name",
        "return document.getElementById('model').textContent",
        |v| v == "tiny-falcon",
    );

    // A first message: the reply streams in, ends, and is the API's own
    // answer to the same request; its statistics line is filled in.
    let hello = "Hello <b>there</b> & <img src=x onerror=alert(1)>";
    b.fill("#input", hello);
    b.click("#send");
    let first = b.wait("the first reply", LAST_REPLY, |v| v["state"] == "done");
    let api: Value = http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(
            &json!({"messages": [{"role": "system", "content": "You are terse."},
                                   {"role": "user", "content": hello}],
                      "temperature": 0, "top_p": 0.95, "top_k": 40, "min_p": 0.05,
                      "max_tokens": 8}),
        )
        .send()
        .and_then(|r| r.json())
        .expect("API answer");
    assert_eq!(
        first["text"], api["choices"][0]["message"]["content"],
        "{first} vs {api}"
    );
    let stats = first["stats"].as_str().expect("stats");
    assert!(
        stats.contains("tokens/s") && stats.contains("cached prompt tokens"),
        "{stats}"
    );
    // The user's HTML is text on the page, not markup.
    let shown = b.js(
        "return {html: document.querySelectorAll('#messages b, #messages img').length,
                 text: document.querySelector('#messages .msg.user .content').textContent}",
    );
    assert_eq!(shown, json!({"html": 0, "text": hello}));
    if let Some(to) = std::env::var_os("MAMBA_GGUF_UI_SCREENSHOT") {
        b.screenshot(Path::new(&to));
    }

    // A long reply: it grows while streaming, then Stop ends it midway.
    b.click("#toggle-settings");
    b.fill("#max_tokens", "1000000");
    b.click("#toggle-settings");
    b.fill("#input", "Tell me a very long story.");
    b.click("#send");
    let started = b.wait("the long reply to start", LAST_REPLY, |v| {
        v["state"] == "streaming" && v["text"].as_str().is_some_and(|t| !t.is_empty())
    });
    let n0 = started["text"].as_str().map_or(0, str::len);
    b.wait("the long reply to grow", LAST_REPLY, |v| {
        assert_eq!(
            v["state"], "streaming",
            "the long reply ended by itself: {v}"
        );
        v["text"].as_str().map_or(0, str::len) > n0
    });
    b.click("#stop");
    let stopped = b.wait("the reply to stop", LAST_REPLY, |v| v["state"] == "stopped");
    assert!(
        stopped["stats"]
            .as_str()
            .is_some_and(|s| s.contains("stopped")),
        "{stopped}"
    );
    // The server let the request go.
    let t0 = Instant::now();
    loop {
        let health: Value = http
            .get(format!("{base}/health"))
            .send()
            .and_then(|r| r.json())
            .expect("health");
        if health["running"] == 0 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{health}");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    let after = b.js(LAST_REPLY);
    assert_eq!(after["text"], stopped["text"], "nothing more after Stop");
    assert!(b.js("return document.getElementById('stop').hidden") == true);

    // Reload: the conversation is still there, as it was.
    b.refresh();
    let page = b.wait(
        "the conversation after a reload",
        "return {chats: [...document.querySelectorAll('#chats .title')].map(e => e.textContent),
                 msgs: [...document.querySelectorAll('#messages .msg')].map(m =>
                   [m.classList.contains('user') ? 'user' : 'assistant', m.dataset.state,
                    m.dataset.raw])}",
        |v| v["msgs"].as_array().is_some_and(|m| m.len() == 4),
    );
    assert_eq!(
        page["chats"],
        json!([hello.chars().take(40).collect::<String>()])
    );
    assert_eq!(
        page["msgs"],
        json!([
            ["user", "done", hello],
            ["assistant", "done", first["text"]],
            ["user", "done", "Tell me a very long story."],
            ["assistant", "stopped", stopped["text"]],
        ])
    );

    // Markdown in the model's text is rendered, HTML in it never: a
    // conversation stored as the page stores them, read back after a
    // reload (the model with random weights writes no Markdown).
    let md = "# Title\n\nSome **bold**, *it*, `x<y` and [a link](https://example.com/a).\n\
              [bad](javascript:alert(1)) ![pic](https://example.com/p.png)\n\n\
              - one\n- two with <b>tag</b>\n\n3. three\n4. four\n\n> quoted\n\n\
              ```rust\nlet a = 1;\n<script>window.pwned = 1</script>\n```\n\
              <img src=x onerror=\"window.pwned = 2\"><script>window.pwned = 3</script>";
    let stored = json!([{"id": "md", "title": "markdown", "messages": [
        {"role": "user", "content": "**not markdown** <i>x</i>"},
        {"role": "assistant", "content": md, "state": "done", "stats": {"tokens": 1}},
    ]}]);
    b.js(&format!(
        "localStorage.setItem('mamba-gguf.chats', {}); return null;",
        serde_json::to_string(&stored.to_string()).expect("JSON string")
    ));
    b.refresh();
    let r = b.wait(
        "the Markdown conversation",
        "const a = document.querySelector('#messages .msg.assistant .content');
         const u = document.querySelector('#messages .msg.user .content');
         if (!a) return null;
         const t = (q) => [...a.querySelectorAll(q)].map(e => e.textContent);
         return {h: t('h3'), strong: t('strong'), em: t('em'), code: t(':not(pre) > code'),
                 links: [...a.querySelectorAll('a')].map(e => [e.textContent, e.getAttribute('href'), e.rel]),
                 ul: t('ul > li'), ol: t('ol > li'), olStart: a.querySelector('ol') && a.querySelector('ol').start,
                 quote: t('blockquote'), pre: t('pre > code'), lang: a.querySelector('pre > code').dataset.lang,
                 markup: document.querySelectorAll('#messages img, #messages script, #messages b, #messages i, [onerror]').length,
                 pwned: window.pwned === undefined ? null : window.pwned,
                 raw: document.querySelector('#messages .msg.assistant').dataset.raw,
                 text: a.textContent,
                 user: [u.textContent, u.children.length]};",
        |v| !v.is_null(),
    );
    assert_eq!(r["h"], json!(["Title"]), "{r}");
    assert_eq!(r["strong"], json!(["bold"]), "{r}");
    assert_eq!(r["em"], json!(["it"]), "{r}");
    assert_eq!(r["code"], json!(["x<y"]), "{r}");
    assert_eq!(
        r["links"],
        json!([
            [
                "a link",
                "https://example.com/a",
                "noopener noreferrer nofollow"
            ],
            [
                "pic",
                "https://example.com/p.png",
                "noopener noreferrer nofollow"
            ]
        ]),
        "only http(s) links, images as links: {r}"
    );
    assert!(
        r["text"]
            .as_str()
            .is_some_and(|t| t.contains("[bad](javascript:alert(1))")
                && t.contains("<img src=x onerror=")
                && t.contains("<script>window.pwned = 3</script>")),
        "the javascript: link and the HTML show as text: {r}"
    );
    assert_eq!(r["ul"], json!(["one", "two with <b>tag</b>"]), "{r}");
    assert_eq!(r["ol"], json!(["three", "four"]), "{r}");
    assert_eq!(r["olStart"], 3, "{r}");
    assert_eq!(r["quote"], json!(["quoted"]), "{r}");
    assert_eq!(
        r["pre"],
        json!(["let a = 1;\n<script>window.pwned = 1</script>"]),
        "{r}"
    );
    assert_eq!(r["lang"], "rust");
    assert_eq!(r["markup"], 0, "no element made from the text's HTML: {r}");
    assert!(r["pwned"].is_null(), "a script in the text ran: {r}");
    assert_eq!(r["raw"], md);
    assert_eq!(
        r["user"],
        json!(["**not markdown** <i>x</i>", 0]),
        "the user's text is shown as typed"
    );
}
