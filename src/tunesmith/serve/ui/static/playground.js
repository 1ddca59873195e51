// The playground: one conversation, two models side by side, each reply streamed through
// /v1/chat/completions with its prompt and reply tokens and its latency. Replies are shown as text.
"use strict";

// One streamed chat completion; onText gets the reply so far. Resolves with the text, usage and timings.
async function streamChat(model, messages, maxTokens, onText) {
  const t0 = performance.now();
  const r = await fetch("/v1/chat/completions", {
    method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ model, messages, max_tokens: maxTokens, stream: true, stream_options: { include_usage: true } }),
  });
  if (!r.ok) {
    const b = await r.json().catch(() => null);
    throw new Error((b && b.error && b.error.message) || `HTTP ${r.status}`);
  }
  const reader = r.body.getReader();
  const decoder = new TextDecoder();
  let buf = "", text = "", usage = null, first = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const event = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
        const obj = JSON.parse(line.slice(6));
        if (obj.error) throw new Error(obj.error.message);
        if (obj.usage) usage = obj.usage;
        const delta = obj.choices && obj.choices[0] && obj.choices[0].delta && obj.choices[0].delta.content;
        if (delta) {
          if (first === null) first = performance.now() - t0;
          text += delta;
          onText(text);
        }
      }
    }
  }
  return { text, usage, first, total: performance.now() - t0 };
}

function statsLine(res) {
  const u = res.usage || {};
  const first = res.first === null ? "–" : `${Math.round(res.first)} ms`;
  return `prompt ${u.prompt_tokens ?? "?"} tok · reply ${u.completion_tokens ?? "?"} tok · ` +
    `first token ${first} · total ${Math.round(res.total)} ms`;
}

function turn(role, text) {
  const bubble = el("div", { class: "bubble" }, text);
  const stats = el("div", { class: "stats" });
  return { node: el("div", { class: `turn ${role}` }, bubble, stats), bubble, stats };
}

async function servablePicker(models, onServed) {
  const { runs } = await api("/ui/api/runs");
  const finished = runs.filter((r) => r.status === "succeeded" && !models.includes(r.name));
  if (!finished.length) return null;
  const pick = el("select", {}, finished.map((r) => el("option", { value: r.src }, r.name)));
  const go = el("button", { class: "secondary", onclick: async () => {
    go.disabled = true;
    try { await api(`/ui/api/serve?src=${encodeURIComponent(pick.value)}`, { method: "POST" }); onServed(); }
    catch (e) { alert(e.message); go.disabled = false; }
  } }, "Serve this run");
  return el("div", { class: "row" }, el("label", {}, "a run from the runs folder", pick), go);
}

async function pagePlayground(root, wanted) {
  const models = await modelIds();
  const base = models.find((m) => !m.startsWith("ft:")) || models[0];
  const tuned = models.includes(wanted) ? wanted : models.find((m) => m !== base) || base;
  const sides = [base, tuned].map((m, i) => {
    const select = el("select", { id: `model-${"ab"[i]}` }, options(models, m));
    const log = el("div", { class: "log", id: `log-${"ab"[i]}` });
    return { select, log, history: [], card: el("section", { class: "card" }, el("label", {}, `model ${"AB"[i]}`, select), log) };
  });
  const prompt = el("textarea", { id: "prompt", placeholder: "Say something to both models…" });
  const maxTokens = el("input", { type: "number", id: "max-tokens", value: 64, min: 1, max: 4096 });
  const send = el("button", { id: "send", type: "submit" }, "Send to both");
  const clear = el("button", { class: "secondary", type: "button", onclick: () => {
    for (const s of sides) { s.history = []; s.log.replaceChildren(); }
  } }, "New conversation");
  const form = el("form", { class: "card" }, prompt, el("div", { class: "row" }, el("label", {}, "max tokens", maxTokens), send, clear));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const text = prompt.value.trim();
    if (!text) return;
    prompt.value = "";
    send.disabled = true;
    await Promise.all(sides.map(async (s) => {
      s.history.push({ role: "user", content: text });
      s.log.appendChild(turn("user", text).node);
      const t = turn("assistant", "");
      t.node.classList.add("pending");
      s.log.appendChild(t.node);
      try {
        const res = await streamChat(s.select.value, s.history, parseInt(maxTokens.value) || 64, (so) => { t.bubble.textContent = so; });
        t.bubble.textContent = res.text;
        t.stats.textContent = statsLine(res);
        s.history.push({ role: "assistant", content: res.text });
      } catch (e) {
        t.bubble.replaceChildren(errorBox(e));
        s.history.pop();
      }
      t.node.classList.remove("pending");
      t.node.classList.add("done");
    }));
    send.disabled = false;
  });
  const extra = await servablePicker(models, () => pagePlayground(root, wanted));
  root.replaceChildren(el("h1", {}, "Playground"),
    el("p", { class: "muted" }, "One conversation, two models: each keeps its own replies in its history."),
    extra ? el("section", { class: "card" }, extra) : "", el("div", { class: "chat" }, sides.map((s) => s.card)), form);
}

window.pagePlayground = pagePlayground;
