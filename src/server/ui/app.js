// The chat page of `mamba-gguf serve` (served from the binary, no network
// beyond this server). Replies stream from /v1/chat/completions (server-sent
// events) and can be stopped; conversations and settings stay in this
// browser's localStorage. The model's text is untrusted: it only ever goes
// into the page as textContent, never as HTML. Assistant messages are
// rendered as Markdown by markdown() below, which builds elements itself
// (createElement + textContent, never innerHTML): HTML in the text stays
// text, and links are made only for http(s) and mailto URLs.
"use strict";

const STORE = "mamba-gguf.chats";
const SETTINGS = "mamba-gguf.settings";
const KEY = "mamba-gguf.api-key";
const FIELDS = ["system", "temperature", "top_p", "top_k", "min_p", "max_tokens", "seed"];

const $ = (id) => document.getElementById(id);
let chats = load(STORE, []);
let current = chats.length ? chats[0].id : null;
let controller = null;

function load(key, fallback) {
  try {
    const v = JSON.parse(localStorage.getItem(key));
    return v === null ? fallback : v;
  } catch (e) {
    return fallback;
  }
}

function save() {
  localStorage.setItem(STORE, JSON.stringify(chats));
}

function chat() {
  return chats.find((c) => c.id === current) || null;
}

function newChat() {
  const c = { id: Date.now().toString(36) + Math.random().toString(36).slice(2, 6), title: "New chat", messages: [] };
  chats.unshift(c);
  current = c.id;
  save();
  render();
  $("input").focus();
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function statsText(m) {
  if (m.error) return "error: " + m.error;
  const s = m.stats;
  if (!s) return "";
  const parts = [s.tokens + " tokens"];
  if (s.tps !== undefined) parts.push(s.tps.toFixed(1) + " tokens/s");
  if (s.cached !== undefined) parts.push(s.cached + " cached prompt tokens");
  if (m.state === "stopped") parts.push("stopped");
  return parts.join(" · ");
}

// Markdown, safely: fenced code blocks, headings, block quotes, lists,
// rules and paragraphs; inline code, bold, italics, strike-through and
// links. Every piece of text goes in as a text node, so nothing in it is
// ever markup; a link's URL must be http(s) or mailto (anything else, e.g.
// javascript:, stays text), and images are shown as links, not loaded.
const INLINE = new RegExp(
  [
    "(`+)([^`]|[^`][\\s\\S]*?[^`])\\1(?!`)", // 1, 2: code
    "\\*\\*(?=\\S)([\\s\\S]*?\\S)\\*\\*", // 3: bold
    "(?<![\\w])__(?=\\S)([\\s\\S]*?\\S)__(?![\\w])", // 4: bold
    "~~(?=\\S)([\\s\\S]*?\\S)~~", // 5: strike-through
    "\\*(?=[^\\s*])([\\s\\S]*?[^\\s*])\\*", // 6: italics
    "(?<![\\w])_(?=[^\\s_])([\\s\\S]*?[^\\s_])_(?![\\w])", // 7: italics
    "!?\\[([^\\]\\n]*)\\]\\(\\s*([^\\s()]+)\\s*\\)", // 8, 9: link or image
  ].join("|"),
  "g",
);

function safeUrl(u) {
  return /^(https?:\/\/|mailto:)/i.test(u) ? u : null;
}

function inline(text, parent) {
  let last = 0;
  INLINE.lastIndex = 0;
  const matches = [...text.matchAll(INLINE)];
  for (const m of matches) {
    if (m.index > last) parent.appendChild(document.createTextNode(text.slice(last, m.index)));
    last = m.index + m[0].length;
    let node;
    if (m[2] !== undefined) {
      node = el("code", "", m[2]);
    } else if (m[3] !== undefined || m[4] !== undefined) {
      node = el("strong");
      inline(m[3] !== undefined ? m[3] : m[4], node);
    } else if (m[5] !== undefined) {
      node = el("del");
      inline(m[5], node);
    } else if (m[6] !== undefined || m[7] !== undefined) {
      node = el("em");
      inline(m[6] !== undefined ? m[6] : m[7], node);
    } else {
      const url = safeUrl(m[9]);
      if (url === null) {
        node = document.createTextNode(m[0]);
      } else {
        node = el("a");
        node.href = url;
        node.rel = "noopener noreferrer nofollow";
        node.target = "_blank";
        inline(m[8] || url, node);
      }
    }
    parent.appendChild(node);
  }
  if (last < text.length) parent.appendChild(document.createTextNode(text.slice(last)));
}

const LIST_ITEM = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;

function markdown(text, parent) {
  const lines = text.replace(/\r\n?/g, "\n").split("\n");
  let i = 0;
  let para = [];
  const flush = () => {
    if (para.length) {
      const p = el("p");
      inline(para.join("\n"), p);
      parent.appendChild(p);
      para = [];
    }
  };
  while (i < lines.length) {
    const line = lines[i];
    const fence = line.match(/^\s*(```+|~~~+)\s*([\w+-]*)\s*$/);
    if (fence) {
      flush();
      const body = [];
      i += 1;
      // An unclosed fence (a reply still streaming) runs to the end.
      while (i < lines.length && !lines[i].trim().startsWith(fence[1])) body.push(lines[i++]);
      i += 1;
      const pre = el("pre");
      const code = el("code", "", body.join("\n"));
      if (fence[2]) code.dataset.lang = fence[2];
      pre.appendChild(code);
      parent.appendChild(pre);
      continue;
    }
    const heading = line.match(/^(#{1,6})\s+(.*?)\s*#*\s*$/);
    if (heading) {
      flush();
      const h = el("h" + Math.min(6, heading[1].length + 2));
      inline(heading[2], h);
      parent.appendChild(h);
      i += 1;
      continue;
    }
    if (/^\s*([-*_])(\s*\1){2,}\s*$/.test(line)) {
      flush();
      parent.appendChild(el("hr"));
      i += 1;
      continue;
    }
    if (/^\s*>/.test(line)) {
      flush();
      const body = [];
      while (i < lines.length && /^\s*>/.test(lines[i])) body.push(lines[i++].replace(/^\s*> ?/, ""));
      const q = el("blockquote");
      markdown(body.join("\n"), q);
      parent.appendChild(q);
      continue;
    }
    const item = line.match(LIST_ITEM);
    if (item) {
      flush();
      const ordered = /\d/.test(item[2]);
      const list = el(ordered ? "ol" : "ul");
      if (ordered && parseInt(item[2], 10) !== 1) list.start = parseInt(item[2], 10);
      while (i < lines.length) {
        const it = lines[i].match(LIST_ITEM);
        if (!it || /\d/.test(it[2]) !== ordered) break;
        const li = el("li");
        inline(it[3], li);
        list.appendChild(li);
        i += 1;
      }
      parent.appendChild(list);
      continue;
    }
    if (!line.trim()) {
      flush();
    } else {
      para.push(line);
    }
    i += 1;
  }
  flush();
}

// The text of a message into its node: the user's as typed, the model's as
// Markdown (also while it streams).
function fill(node, m) {
  node.dataset.raw = m.content;
  const body = node.querySelector(".content");
  if (m.role === "assistant") {
    body.replaceChildren();
    markdown(m.content, body);
  } else {
    body.textContent = m.content;
  }
}

function messageNode(m) {
  const d = el("div", "msg " + m.role);
  d.dataset.state = m.state || "done";
  const body = el("div", "content" + (m.role === "assistant" ? " md" : ""));
  d.appendChild(body);
  fill(d, m);
  if (m.role === "assistant") d.appendChild(el("span", "stats", statsText(m)));
  return d;
}

function render() {
  const list = $("chats");
  list.replaceChildren();
  for (const c of chats) {
    const li = el("li", c.id === current ? "active" : "");
    const t = el("button", "title", c.title);
    t.type = "button";
    t.addEventListener("click", () => {
      if (controller) return;
      current = c.id;
      render();
    });
    const del = el("button", "delete", "×");
    del.type = "button";
    del.title = "Delete this conversation";
    del.addEventListener("click", () => {
      if (controller && c.id === current) return;
      chats = chats.filter((x) => x.id !== c.id);
      if (current === c.id) current = chats.length ? chats[0].id : null;
      save();
      render();
    });
    li.append(t, del);
    list.appendChild(li);
  }
  const box = $("messages");
  box.replaceChildren();
  const c = chat();
  if (c) for (const m of c.messages) box.appendChild(messageNode(m));
  box.scrollTop = box.scrollHeight;
}

function settings() {
  const s = {};
  for (const f of FIELDS) s[f] = $(f).value;
  return s;
}

function num(v) {
  return v === "" || v === null || v === undefined ? undefined : Number(v);
}

function notice(text) {
  const n = $("notice");
  n.textContent = text || "";
  n.hidden = !text;
}

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value;
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

function needKey(message) {
  $("key-row").hidden = false;
  $("settings").hidden = false;
  $("toggle-settings").setAttribute("aria-expanded", "true");
  notice(message || "This server needs an API key: enter it under Settings.");
}

function busy(on) {
  $("send").hidden = on;
  $("stop").hidden = !on;
}

async function send(text) {
  if (controller || !text.trim()) return;
  if (!chat()) newChat();
  const c = chat();
  c.messages.push({ role: "user", content: text });
  if (c.title === "New chat") c.title = text.slice(0, 40);
  const reply = { role: "assistant", content: "", state: "streaming" };
  c.messages.push(reply);
  save();
  render();
  notice("");
  const node = $("messages").lastElementChild;
  const stats = node.querySelector(".stats");

  const s = settings();
  const messages = [];
  if (s.system.trim()) messages.push({ role: "system", content: s.system });
  for (const m of c.messages.slice(0, -1)) messages.push({ role: m.role, content: m.content });
  const req = {
    model: $("model").textContent || "mamba-gguf",
    messages,
    stream: true,
    stream_options: { include_usage: true },
    temperature: num(s.temperature),
    top_p: num(s.top_p),
    top_k: num(s.top_k),
    min_p: num(s.min_p),
    max_tokens: num(s.max_tokens),
    seed: num(s.seed),
  };
  controller = new AbortController();
  busy(true);
  const t0 = performance.now();
  let first = null;
  let pieces = 0;
  let usage = null;
  let timings = null;
  const show = () => {
    fill(node, reply);
    stats.textContent = statsText(reply);
    const box = $("messages");
    box.scrollTop = box.scrollHeight;
  };
  const finish = (state) => {
    reply.state = state;
    const secs = first === null ? 0 : (performance.now() - first) / 1000;
    const tokens = usage ? usage.completion_tokens : pieces;
    reply.stats = { tokens };
    if (timings && timings.predicted_per_second) reply.stats.tps = timings.predicted_per_second;
    else if (secs > 0) reply.stats.tps = tokens / secs;
    if (usage && usage.prompt_tokens_details) reply.stats.cached = usage.prompt_tokens_details.cached_tokens;
    node.dataset.state = state;
    show();
    save();
  };
  try {
    const res = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: headers(),
      body: JSON.stringify(req),
      signal: controller.signal,
    });
    if (!res.ok) {
      let msg = "HTTP " + res.status;
      try {
        const j = await res.json();
        if (j && j.error && j.error.message) msg = j.error.message;
      } catch (e) { /* not JSON */ }
      if (res.status === 401) needKey(msg);
      throw new Error(msg);
    }
    const reader = res.body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    const handle = (data) => {
      if (data === "[DONE]") return;
      const j = JSON.parse(data);
      if (j.error) throw new Error(j.error.message || "server error");
      for (const ch of j.choices || []) {
        const piece = ch.delta && ch.delta.content;
        if (piece) {
          if (first === null) first = performance.now();
          pieces += 1;
          reply.content += piece;
        }
      }
      if (j.usage) usage = j.usage;
      if (j.timings) timings = j.timings;
      show();
    };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true }).replace(/\r\n/g, "\n");
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const event = buf.slice(0, i);
        buf = buf.slice(i + 2);
        for (const line of event.split("\n")) {
          if (line.startsWith("data:")) handle(line.slice(5).trim());
        }
      }
    }
    finish("done");
  } catch (e) {
    if (controller && controller.signal.aborted) {
      finish("stopped");
    } else {
      reply.error = e.message || String(e);
      finish("error");
    }
  } finally {
    controller = null;
    busy(false);
    render();
    $("input").focus();
  }
}

function init() {
  const saved = load(SETTINGS, {});
  for (const f of FIELDS) {
    if (saved[f] !== undefined) $(f).value = saved[f];
    $(f).addEventListener("change", () => localStorage.setItem(SETTINGS, JSON.stringify(settings())));
  }
  const key = localStorage.getItem(KEY) || "";
  $("api-key").value = key;
  if (key) $("key-row").hidden = false;
  $("api-key").addEventListener("change", () => {
    localStorage.setItem(KEY, $("api-key").value);
    checkServer();
  });
  $("toggle-settings").addEventListener("click", () => {
    const open = $("settings").hidden;
    $("settings").hidden = !open;
    $("toggle-settings").setAttribute("aria-expanded", String(open));
  });
  $("new-chat").addEventListener("click", () => {
    if (!controller) newChat();
  });
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("input").value;
    if (!text.trim() || controller) return;
    $("input").value = "";
    send(text);
  });
  $("input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("stop").addEventListener("click", () => {
    if (controller) controller.abort();
  });
  // A reply that was streaming when the page went away ends as stopped.
  for (const c of chats) {
    for (const m of c.messages) if (m.state === "streaming") m.state = "stopped";
  }
  render();
  checkServer();
}

// The model's name, and whether the server wants an API key.
async function checkServer() {
  try {
    const res = await fetch("/v1/models", { headers: headers() });
    if (res.status === 401) {
      needKey();
      return;
    }
    const j = await res.json();
    if (j.data && j.data[0] && j.data[0].id) $("model").textContent = j.data[0].id;
    notice("");
  } catch (e) {
    notice("Cannot reach the server: " + (e.message || e));
  }
}

init();
