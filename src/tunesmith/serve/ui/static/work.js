// The pages that do things: start and follow a job, check a data file, and talk to two models at once.
// Jobs, files, models and chat go through the OpenAI-compatible API (/v1), exactly as any client would.
"use strict";

const ACTIVE = ["validating_files", "queued", "running", "paused"];  // as jobs.py: a paused job can be cancelled

async function modelIds() {
  return (await api("/v1/models")).data.map((m) => m.id);
}

const options = (values, selected) =>
  values.map((v) => el("option", { value: v, selected: v === selected }, v));

// Upload through the files API when a file was chosen; otherwise the picked, already-uploaded file.
async function chosenFile(input, picker) {
  if (input.files.length) {
    const form = new FormData();
    form.append("purpose", "fine-tune");
    form.append("file", input.files[0]);
    return (await api("/v1/files", { method: "POST", body: form })).id;
  }
  if (picker.value) return picker.value;
  throw new Error("choose a file to upload, or pick one uploaded before");
}

async function filePicker() {
  const files = (await api("/v1/files")).data;
  return el("select", { name: "file_id" }, el("option", { value: "" }, "— uploaded files —"),
    files.map((f) => el("option", { value: f.id }, `${f.filename} (${f.id.slice(0, 13)}…)`)));
}

// -- a job's panel on its run page -------------------------------------------------------------------
function jobPanel(box, id, onChange) {
  let last = null;
  const draw = async () => {
    const [job, events] = await Promise.all([api(`/v1/fine_tuning/jobs/${id}`),
      api(`/v1/fine_tuning/jobs/${id}/events?limit=30`)]);
    if (last !== job.status) { last = job.status; onChange(); }
    const hp = job.hyperparameters || {};
    const cancel = el("button", { class: "secondary", id: "cancel-job", onclick: async () => {
      cancel.disabled = true;
      await api(`/v1/fine_tuning/jobs/${id}/cancel`, { method: "POST" }).catch((e) => alert(e.message));
      draw();
    } }, "Cancel job");
    box.replaceChildren(el("div", { class: "grid" },
      el("section", { class: "card" }, el("h2", {}, "Job ", statusBadge(job.status)),
        kv([["base model", job.model], ["training file", job.training_file],
          ["epochs", hp.n_epochs], ["batch size", hp.batch_size], ["lr multiplier", hp.learning_rate_multiplier],
          ["fine-tuned model", job.fine_tuned_model], ["error", job.error && job.error.message]]),
        el("p", {}, ACTIVE.includes(job.status) ? cancel : null,
          job.fine_tuned_model ? el("a", { href: `#/playground/${encodeURIComponent(job.fine_tuned_model)}`, id: "open-model" },
            "Open the model in the playground") : null)),
      el("section", { class: "card" }, el("h2", {}, "Events"),
        el("table", { id: "events" }, el("tbody", {}, events.data.map((e) =>
          el("tr", {}, el("td", { class: "muted" }, fmtDate(e.created_at)), el("td", {}, e.message))))))));
    return job;
  };
  draw().catch((e) => box.replaceChildren(errorBox(e)));
  every(2000, () => { if (last === null || ACTIVE.includes(last)) draw().catch(() => {}); });
}

// -- new job -------------------------------------------------------------------------------------------
function numberOrAuto(v, parse) {
  return v.trim() === "" || v.trim() === "auto" ? "auto" : parse(v);
}

async function pageJobs(root) {
  const [models, picker] = await Promise.all([modelIds(), filePicker()]);
  const input = el("input", { type: "file", name: "file", accept: ".jsonl,.json,.csv,.parquet,.txt" });
  const f = (name, label, attrs) => el("label", {}, label, el("input", { name, ...attrs }));
  const msg = el("p", { class: "error", id: "job-error" });
  const form = el("form", { class: "card", id: "job-form" },
    el("h2", {}, "Training data"), el("div", { class: "row" }, el("label", {}, "upload a file", input), el("label", {}, "or pick one", picker)),
    el("h2", {}, "Model and method"),
    el("div", { class: "row" },
      el("label", {}, "base model", el("select", { name: "model" }, options(models.filter((m) => !m.startsWith("ft:")), null))),
      el("label", {}, "method", el("select", { name: "type" }, options(["supervised"], "supervised"))),
      el("label", {}, "weights", el("select", { name: "train" }, options(["lora", "full"], "lora"))),
      f("suffix", "suffix", { placeholder: "optional", pattern: "[A-Za-z0-9_\\-]*" })),
    el("h2", {}, "Hyperparameters"),
    el("div", { class: "row" },
      f("n_epochs", "epochs", { placeholder: "auto" }), f("batch_size", "batch size", { placeholder: "auto" }),
      f("lr", "learning-rate multiplier", { placeholder: "auto" }), f("max_steps", "max steps", { placeholder: "none" }),
      f("seed", "seed", { placeholder: "random" })),
    el("p", {}, el("button", { type: "submit", id: "create-job" }, "Create job")), msg);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const v = (n) => form.elements[n].value;
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    msg.textContent = "";
    try {
      const body = {
        model: v("model"), training_file: await chosenFile(input, picker),
        method: { type: v("type"), supervised: { hyperparameters: {
          n_epochs: numberOrAuto(v("n_epochs"), parseInt), batch_size: numberOrAuto(v("batch_size"), parseInt),
          learning_rate_multiplier: numberOrAuto(v("lr"), parseFloat) } },
        tunesmith: { method: v("train"), ...(v("max_steps") ? { max_steps: parseInt(v("max_steps")) } : {}) } },
      };
      if (v("suffix")) body.suffix = v("suffix");
      if (v("seed")) body.seed = parseInt(v("seed"));
      const job = await postJSON("/v1/fine_tuning/jobs", body);
      location.hash = `#/run/${encodeURIComponent("job:" + job.id)}`;
    } catch (e) {
      msg.textContent = e.message;
      button.disabled = false;
    }
  });
  root.replaceChildren(el("h1", {}, "New fine-tuning job"), form);
}

// -- data check ----------------------------------------------------------------------------------------
function maskedRow(ex) {
  return el("div", { class: "example" },
    el("div", { class: "muted" }, `${ex.source} · ${ex.tokens} tokens, ${ex.trained} trained` +
      (ex.stop_trained ? "" : " · stop token not trained") + (ex.note ? ` · ${ex.note}` : "")),
    el("div", { class: "masked" }, ex.segments.map((s) =>
      el("span", { class: `${s.trained ? "trained" : "untrained"}${s.past_max_len ? " past" : ""}` }, s.text))));
}

function checkResult(r) {
  const files = r.files.map((x) => el("tr", {}, el("td", {}, x.role), el("td", {}, x.path), el("td", {}, x.format || "?"),
    el("td", { class: "num" }, `${x.valid_rows} / ${x.rows}`), el("td", { class: "num" }, x.tokens.tokens),
    el("td", { class: "num" }, `${(x.tokens.trained_share * 100).toFixed(1)}%`),
    el("td", { class: "num" }, `${x.tokens.length_p50} / ${x.tokens.length_p95} / ${x.tokens.length_max}`)));
  return [
    el("section", { class: "card", id: "check-summary" },
      el("h2", {}, r.errors || r.warnings ? `${r.errors} error(s), ${r.warnings} warning(s)` : "Clean: nothing found that would spoil a fine-tune"),
      el("table", {}, el("thead", {}, el("tr", {}, ["file", "name", "format", "valid rows", "tokens", "trained", "length p50 / p95 / max"].map((h) => el("th", {}, h)))),
        el("tbody", {}, files)),
      r.findings.length ? el("ul", { class: "plain" }, r.findings.slice(0, 50).map((x) =>
        el("li", { class: `finding ${x.severity}` }, `${x.file}:${x.line}: [${x.code}] ${x.message}`))) : null),
    el("section", { class: "card", id: "masked-rows" }, el("h2", {}, "Rows as training sees them ",
      el("span", { class: "muted" }, "(highlighted: the tokens the loss trains on)")), r.examples.map(maskedRow)),
  ];
}

async function pageData(root) {
  const [models, picker] = await Promise.all([modelIds(), filePicker()]);
  const input = el("input", { type: "file", accept: ".jsonl,.json,.csv,.parquet,.txt" });
  const model = el("select", {}, options(models.filter((m) => !m.startsWith("ft:")), null));
  const out = el("div", { id: "check-out" });
  const run = el("button", { id: "run-check", onclick: async () => {
    run.disabled = true;
    out.replaceChildren(el("p", { class: "muted" }, "Checking…"));
    try {
      const id = await chosenFile(input, picker);
      out.replaceChildren(...checkResult(await postJSON("/ui/api/check", { file_id: id, model: model.value })));
    } catch (e) { out.replaceChildren(errorBox(e)); }
    run.disabled = false;
  } }, "Check");
  root.replaceChildren(el("h1", {}, "Data"), el("section", { class: "card" },
    el("p", { class: "muted" }, "What `tunesmith check` finds, with the tokenizer and chat template of the model. " +
      "A file is uploaded through the files API, with its checks."),
    el("div", { class: "row" }, el("label", {}, "upload a file", input), el("label", {}, "or pick one", picker),
      el("label", {}, "model", model), run)), out);
}

window.jobPanel = jobPanel;
window.pageJobs = pageJobs;
window.pageData = pageData;
