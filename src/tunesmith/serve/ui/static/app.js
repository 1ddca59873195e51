// The dashboard: a hash router and the runs pages. Every value from the server or a model is put on the
// page as a text node (el() below), never parsed as HTML, so a data row or a reply cannot inject script.
"use strict";

const $main = () => document.getElementById("main");
let cleanups = []; // what the current page must stop (timers, event sources) when another is opened

function el(tag, props, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "class") e.className = v;
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    e.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

class ApiError extends Error {}

// fetch on this origin; the session cookie (or no key at all) authorizes it. Errors come in OpenAI's shape.
async function api(path, opts) {
  const r = await fetch(path, { credentials: "same-origin", ...(opts || {}) });
  if (r.status === 401) { location.href = "/ui/login"; throw new ApiError("sign in first"); }
  const body = await r.json().catch(() => null);
  if (!r.ok) throw new ApiError((body && body.error && body.error.message) || `HTTP ${r.status}`);
  return body;
}

const postJSON = (path, obj) =>
  api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(obj) });

function every(ms, fn) {
  const id = setInterval(fn, ms);
  cleanups.push(() => clearInterval(id));
}

const fmtLoss = (v) => (typeof v === "number" ? v.toFixed(4) : "–");
function fmtDate(t) {
  if (!t) return "–";
  const d = new Date(t * 1000);
  return d.toLocaleDateString(undefined, { month: "short", day: "numeric" }) + " " +
    d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
}
const statusBadge = (s) => el("span", { class: `status ${s}` }, s);
const errorBox = (e) => el("p", { class: "error" }, String(e.message || e));

// -- runs list ------------------------------------------------------------------------------------------
function runsTable(rows, kind) {
  const head = ["name", "status", "model", "method", "data", "best val loss", "created", "updated"];
  return el("table", { class: `list ${kind}` },
    el("thead", {}, el("tr", {}, head.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows.map((r) => el("tr", { "data-src": r.src },
      el("td", {}, el("a", { href: `#/run/${encodeURIComponent(r.src)}` }, r.name)),
      el("td", {}, statusBadge(r.status)),
      el("td", {}, r.model || "–"), el("td", {}, r.method || "–"), el("td", {}, r.data || "–"),
      el("td", { class: "num" }, fmtLoss(r.best_val_loss)),
      el("td", {}, fmtDate(r.created)), el("td", {}, fmtDate(r.updated))))));
}

async function pageRuns(root) {
  const draw = async () => {
    const d = await api("/ui/api/runs");
    root.replaceChildren(
      el("h1", {}, "Runs"),
      el("section", { class: "card" }, el("h2", {}, `Runs in ${d.runs_dir}`),
        d.runs.length ? runsTable(d.runs, "runs") : el("p", { class: "muted" }, "No runs yet: `tunesmith train` writes them here.")),
      el("section", { class: "card" }, el("h2", {}, "Jobs"),
        d.jobs.length ? runsTable(d.jobs, "jobs") : el("p", { class: "muted" }, "No jobs yet. ", el("a", { href: "#/jobs" }, "Start one."))));
  };
  await draw();
  every(4000, () => draw().catch(() => {}));
}

// -- one run (or job) ------------------------------------------------------------------------------------
function curves(src, box) {
  const data = { loss: [], val: [], lr: [] };
  const lossSvg = svgEl("svg", { class: "chart", id: "chart-loss" });
  const lrSvg = svgEl("svg", { class: "chart", id: "chart-lr" });
  const count = el("span", { class: "muted", id: "n-points" }, "0");
  box.replaceChildren(el("div", { class: "grid" },
    el("section", { class: "card" }, el("h2", {}, "Loss ", el("span", { class: "muted" }, "(steps: "), count, el("span", { class: "muted" }, ")")),
      lossSvg, el("div", { class: "legend" }, el("span", {}, el("span", { class: "swatch train" }), "train loss"),
        el("span", {}, el("span", { class: "swatch val" }), "validation loss"))),
    el("section", { class: "card" }, el("h2", {}, "Learning rate"), lrSvg,
      el("div", { class: "legend" }, el("span", {}, el("span", { class: "swatch lr" }), "lr")))));
  let queued = false;
  const redraw = () => {
    queued = false;
    count.textContent = String(data.loss.length);
    drawChart(lossSvg, [{ cls: "train", points: data.loss }, { cls: "val", points: data.val, dots: true }], {});
    drawChart(lrSvg, [{ cls: "lr", points: data.lr }], {});
  };
  redraw();
  const es = new EventSource(`/ui/api/metrics?src=${encodeURIComponent(src)}`);
  es.onmessage = (ev) => {
    for (const p of JSON.parse(ev.data).points) {
      if (typeof p.loss === "number") data.loss.push([p.step, p.loss]);
      if (typeof p.lr === "number") data.lr.push([p.step, p.lr]);
      if (typeof p.val_loss === "number") data.val.push([p.step, p.val_loss]);
    }
    if (!queued) { queued = true; requestAnimationFrame(redraw); }
  };
  es.addEventListener("reset", () => { data.loss = []; data.val = []; data.lr = []; redraw(); });
  es.addEventListener("end", () => es.close());
  cleanups.push(() => es.close());
}

function kv(pairs) {
  return el("dl", { class: "kv" }, pairs.filter(([, v]) => v !== undefined && v !== null && v !== "")
    .map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

function yamlish(obj, indent) {
  // The resolved config as YAML-like text (built as a string; shown as a text node).
  const pad = "  ".repeat(indent || 0);
  return Object.entries(obj || {}).map(([k, v]) => (v && typeof v === "object" && !Array.isArray(v))
    ? `${pad}${k}:\n${yamlish(v, (indent || 0) + 1)}` : `${pad}${k}: ${JSON.stringify(v)}`).join("\n");
}

function runDetails(d) {
  const s = d.summary || {};
  return [
    el("div", { class: "grid" },
      el("section", { class: "card" }, el("h2", {}, "Automatic choices"),
        d.choices.length ? el("ul", { class: "plain", id: "choices" }, d.choices.map((c) => el("li", {}, c)))
          : el("p", { class: "muted" }, "Listed with their reasons once the run finishes.")),
      el("section", { class: "card" }, el("h2", {}, "Checkpoints"),
        d.checkpoints.length ? el("table", {}, el("tbody", {}, d.checkpoints.map((c) =>
          el("tr", {}, el("td", { class: "mono" }, c.name), el("td", {}, fmtDate(c.time))))))
          : el("p", { class: "muted" }, "none"),
        s.steps !== undefined ? kv([["steps", `${s.steps} / ${s.total_steps}`], ["train time", `${s.train_time_s} s`],
          ["tokens/s", s.tokens_per_s], ["trainable params", s.trainable_params]]) : null)),
    el("section", { class: "card" }, el("h2", {}, "Resolved config"), el("pre", { id: "config" }, yamlish(d.config))),
    d.reports.map((kind) => el("section", { class: "card" },
      el("h2", {}, kind === "eval" ? "Eval report" : "Bakeoff"),
      el("iframe", { class: "report", sandbox: "allow-scripts", title: `${kind} report`,
        src: `/ui/api/report?src=${encodeURIComponent(d.src)}&kind=${kind}` }))),
  ];
}

async function pageRun(root, src) {
  const head = el("div"), job = el("div"), box = el("div"), details = el("div");
  root.replaceChildren(head, job, box, details);
  curves(src, box);
  const draw = async () => {
    const d = await api(`/ui/api/run?src=${encodeURIComponent(src)}`);
    head.replaceChildren(el("h1", {}, d.name, " ", statusBadge(d.status)),
      el("section", { class: "card" }, kv([["model", d.model], ["method", d.method], ["data", d.data],
        ["best val loss", fmtLoss(d.best_val_loss)], ["started", fmtDate(d.created)], ["updated", fmtDate(d.updated)]])));
    details.replaceChildren(...runDetails(d).flat());
    return d;
  };
  if (src.startsWith("job:")) window.jobPanel(job, src.slice(4), () => draw().catch(() => {}));
  const first = await draw().catch((e) => { head.replaceChildren(errorBox(e)); return null; });
  if (first && first.status === "running") every(5000, () => draw().catch(() => {}));
}

// -- router ----------------------------------------------------------------------------------------------
async function route() {
  for (const stop of cleanups) stop();
  cleanups = [];
  const hash = location.hash.replace(/^#\/?/, "");
  const [page, ...rest] = hash.split("/");
  const arg = decodeURIComponent(rest.join("/"));
  const root = el("div");
  $main().replaceChildren(root);
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active",
    a.dataset.page === (page === "run" || !page ? "runs" : page)));
  const pages = { run: () => pageRun(root, arg), jobs: () => window.pageJobs(root),
    data: () => window.pageData(root), playground: () => window.pagePlayground(root, arg) };
  try {
    await (pages[page] || (() => pageRuns(root)))();
  } catch (e) {
    root.replaceChildren(errorBox(e));
  }
}

Object.assign(window, { el, api, postJSON, every, fmtDate, fmtLoss, statusBadge, errorBox, kv });
window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", route);
