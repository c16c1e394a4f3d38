// thresher review: one suspect at a time, keyboard first. Every decision is POSTed at once;
// the server commits it before answering. Undo restores the previous decision of that file.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  items: [],      // [{id, decision, decided_label}] in queue order, after the filters
  pos: 0,
  detail: null,   // the item on screen
  cache: new Map(),
  undo: [],       // [{id, previous}] most recent last
  total: 0,
  decided: 0,
  busy: false,
};

async function api(method, url, body) {
  const opts = { method, headers: {} };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(url, opts);
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(data.error || `${r.status} ${r.statusText}`);
  return data;
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c) e.append(c);
  return e;
}

function toast(text, error = false) {
  const t = $("toast");
  t.textContent = text;
  t.className = "saved show" + (error ? " error" : "");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (t.className = "saved" + (error ? " error" : "")), error ? 6000 : 1400);
}

function describe(decision, label) {
  if (!decision) return "";
  return decision === "relabel" ? `relabel → ${label}` : decision;
}

function showProgress() {
  const pct = state.total ? (100 * state.decided) / state.total : 0;
  $("progress-fill").style.width = `${pct}%`;
  $("progress-text").textContent =
    `${state.decided} / ${state.total} decided (${pct.toFixed(0)}%)`;
}

function fillSelect(select, counts, keep) {
  const current = keep ?? select.value;
  select.replaceChildren(el("option", { value: "", text: "all" }));
  for (const [name, n] of Object.entries(counts)) {
    if (!name) continue;
    select.append(el("option", { value: name, text: `${name} (${n})` }));
  }
  select.value = current;
}

async function loadQueue(startAt) {
  const params = new URLSearchParams();
  if ($("filter-issue").value) params.set("issue", $("filter-issue").value);
  if ($("filter-label").value) params.set("label", $("filter-label").value);
  const q = await api("GET", `/api/queue?${params}`);
  state.items = q.items;
  state.total = q.total;
  state.decided = q.decided;
  fillSelect($("filter-issue"), q.issues);
  fillSelect($("filter-label"), q.labels);
  $("classes").replaceChildren(...q.classes.map((c) => el("option", { value: c })));
  showProgress();
  let pos = startAt !== undefined ? state.items.findIndex((x) => x.id === startAt) : -1;
  if (pos < 0) pos = nextUndecided(-1);
  await show(pos < 0 ? 0 : pos, pos < 0);
}

function nextUndecided(from) {
  const n = state.items.length;
  for (let k = 1; k <= n; k++) {
    const i = (from + k) % n;
    if (i < 0) continue;
    if (!state.items[i].decision) return i;
  }
  return -1;
}

async function detail(id) {
  if (!state.cache.has(id)) state.cache.set(id, api("GET", `/api/items/${id}`));
  try {
    return await state.cache.get(id);
  } catch (e) {
    state.cache.delete(id);
    throw e;
  }
}

function prefetch(pos) {
  for (const p of [pos + 1, pos + 2]) {
    const it = state.items[p];
    if (!it) continue;
    detail(it.id).catch(() => {});
    new Image().src = `/api/images/${it.id}`;
  }
}

async function show(pos, done = false) {
  $("done").hidden = !done;
  if (state.items.length === 0) {
    $("main").hidden = true;
    $("done").hidden = false;
    $("done-text").textContent = state.total
      ? "No file in the queue matches these filters."
      : "The review queue is empty: clean found nothing a person needs to settle.";
    return;
  }
  $("main").hidden = false;
  if (done) {
    $("done-text").textContent = `All ${state.items.length} files here have a decision.`;
  }
  state.pos = Math.max(0, Math.min(pos, state.items.length - 1));
  const it = state.items[state.pos];
  const d = await detail(it.id);
  d.decision = it.decision;
  d.decided_label = it.decided_label;
  state.detail = d;
  render(d);
  prefetch(state.pos);
}

function render(d) {
  const img = $("image");
  img.src = `/api/images/${d.id}`;
  img.alt = d.name;
  $("name").textContent = d.path;
  const kb = d.size_bytes ? `${(d.size_bytes / 1024).toFixed(0)} KB` : "";
  $("dims").textContent = [d.width && `${d.width}×${d.height}`, d.format, kb]
    .filter(Boolean).join(" · ");
  $("position").textContent = `${state.pos + 1} of ${state.items.length}`;
  $("label").textContent = d.label ?? "(no label)";
  renderDecision(d);

  $("issues").replaceChildren(...d.issues.map((x) => {
    const bar = el("div", { class: "conf" }, el("div"));
    bar.firstChild.style.width = `${Math.round(100 * x.confidence)}%`;
    const head = el("div", { class: "issue-head" },
      el("span", { text: x.issue.replaceAll("_", " ") }),
      el("span", { class: "muted", text: x.confidence.toFixed(2) }));
    const reason = [x.reason, x.suggested_label && `suggested: ${x.suggested_label}`]
      .filter(Boolean).join(" · ");
    return el("li", { "data-issue": x.issue }, head, bar, el("div", { class: "reason", text: reason }));
  }));

  const suggested = new Set(d.issues.map((x) => x.suggested_label).filter(Boolean));
  $("choices").replaceChildren(...d.choices.map((c, i) => {
    const li = el("li", { class: suggested.has(c) ? "suggested" : "" },
      el("kbd", { text: String(i + 1) }), el("span", { text: c }));
    li.addEventListener("click", () => decide("relabel", c));
    return li;
  }));

  $("evidence-title").textContent = d.evidence.title;
  $("evidence").replaceChildren(...d.evidence.items.map((n) => {
    const same = n.label === d.label;
    const sub = n.keep ? "kept copy" : n.similarity !== undefined
      ? `similarity ${n.similarity.toFixed(2)}` : "copy";
    const img = el("img", { src: `/api/images/${n.id}?size=240`, alt: n.label ?? "", loading: "lazy" });
    return el("div", { class: "thumb" + (n.keep ? " kept" : ""), title: n.name ?? "" }, img,
      el("div", { class: "lbl" + (same ? " same" : ""), text: n.label ?? "(no label)" }),
      el("div", { class: "muted", text: sub }));
  }));
}

function renderDecision(d) {
  const text = describe(d.decision, d.decided_label);
  $("decision").textContent = text ? `decided: ${text}` : "undecided";
  $("decision").className = "decision " + (d.decision || "muted");
  const stamp = $("decision-stamp");
  stamp.hidden = !d.decision;
  stamp.textContent = text;
  stamp.className = "stamp " + (d.decision || "");
}

async function decide(decision, label) {
  if (state.busy || !state.detail) return;
  state.busy = true;
  const it = state.items[state.pos];
  try {
    const body = { image_id: it.id, decision };
    if (decision === "relabel") body.label = label;
    const r = await api("POST", "/api/decisions", body);
    state.undo.push({ id: it.id, previous: r.previous });
    it.decision = r.decision;
    it.decided_label = r.label;
    state.total = r.total;
    state.decided = r.decided;
    showProgress();
    toast(`saved: ${describe(r.decision, r.label)}`);
    const next = nextUndecided(state.pos);
    if (next < 0) await show(state.pos, true);
    else await show(next);
  } catch (e) {
    toast(`not saved: ${e.message}`, true);
  } finally {
    state.busy = false;
  }
}

async function undo() {
  if (state.busy) return;
  const last = state.undo.pop();
  if (!last) return toast("nothing to undo");
  state.busy = true;
  try {
    const r = last.previous
      ? await api("POST", "/api/decisions", { image_id: last.id, ...last.previous })
      : await api("DELETE", `/api/decisions/${last.id}`);
    const it = state.items.find((x) => x.id === last.id);
    if (it) {
      it.decision = last.previous ? last.previous.decision : null;
      it.decided_label = last.previous ? last.previous.label : null;
    }
    state.total = r.total;
    state.decided = r.decided;
    showProgress();
    toast("undone");
    const pos = state.items.findIndex((x) => x.id === last.id);
    await show(pos < 0 ? state.pos : pos);
  } catch (e) {
    state.undo.push(last);
    toast(`undo failed: ${e.message}`, true);
  } finally {
    state.busy = false;
  }
}

function openRelabel() {
  const form = $("relabel-form");
  form.hidden = false;
  $("relabel-input").value = "";
  $("relabel-input").focus();
}

function closeRelabel() {
  $("relabel-form").hidden = true;
  $("relabel-input").blur();
}

document.addEventListener("keydown", (ev) => {
  if (ev.target.tagName === "INPUT" || ev.target.tagName === "SELECT") {
    if (ev.key === "Escape") closeRelabel();
    return;
  }
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const d = state.detail;
  if (ev.key === "k") decide("keep");
  else if (ev.key === "d") decide("drop");
  else if (ev.key === "u") undo();
  else if (ev.key === "/") { ev.preventDefault(); openRelabel(); }
  else if (ev.key === "ArrowRight") { ev.preventDefault(); show(state.pos + 1); }
  else if (ev.key === "ArrowLeft") { ev.preventDefault(); show(state.pos - 1); }
  else if (/^[1-9]$/.test(ev.key) && d) {
    const c = d.choices[Number(ev.key) - 1];
    if (c) decide("relabel", c);
  } else return;
});

$("relabel-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const v = $("relabel-input").value.trim();
  closeRelabel();
  if (v) decide("relabel", v);
});
$("btn-keep").addEventListener("click", () => decide("keep"));
$("btn-drop").addEventListener("click", () => decide("drop"));
$("btn-other").addEventListener("click", openRelabel);
$("btn-undo").addEventListener("click", undo);
for (const id of ["filter-issue", "filter-label"]) {
  $(id).addEventListener("change", () => { $(id).blur(); loadQueue(); });
}
// Another tab may have decided files meanwhile: refresh the queue when this one comes back.
document.addEventListener("visibilitychange", () => {
  if (!document.hidden && state.detail) loadQueue(state.detail.id);
});

loadQueue().catch((e) => toast(`cannot load the queue: ${e.message}`, true));
