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
  zoom: null,     // null = fit to the stage; else screen px per file px (1 = 1:1)
  group: null,    // the group view on screen: {group, members, differs, sel}
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

// The picture at its real size (up to the server's 4096 px cap), so 1:1 shows every pixel.
const fullSrc = (d) => `/api/images/${d.id}?size=${Math.min(4096, Math.max(32, d.width || 0, d.height || 0))}`;

function fitScale(d) {
  const img = $("image");
  return d.width ? img.clientWidth / d.width : 1;
}

function setZoom(z, at) {
  const d = state.detail;
  if (!d) return;
  const frame = $("frame"), img = $("image");
  const before = state.zoom ?? fitScale(d);
  state.zoom = z;
  frame.classList.toggle("zoomed", z !== null);
  img.style.width = z === null ? "" : `${Math.round((d.width || img.naturalWidth) * z)}px`;
  if (z !== null && at) {
    // Keep the point under the mouse where it was.
    const k = z / before;
    frame.scrollLeft = at.x * k - at.ox;
    frame.scrollTop = at.y * k - at.oy;
  }
  showZoom();
}

function showZoom() {
  const d = state.detail;
  if (!d) return;
  const z = state.zoom;
  $("zoom-level").textContent = z === null
    ? `fit ${Math.round(100 * Math.min(1, fitScale(d)))}%` : `${Math.round(100 * z)}%${z === 1 ? " (1:1)" : ""}`;
}

function zoomBy(factor) {
  const d = state.detail;
  const z = (state.zoom ?? fitScale(d)) * factor;
  setZoom(Math.max(0.05, Math.min(16, z)));
}

function render(d) {
  const img = $("image");
  state.zoom = null;
  $("frame").classList.remove("zoomed");
  img.style.width = "";
  img.onload = showZoom;
  img.src = fullSrc(d);
  img.alt = d.name;
  $("name").textContent = d.path;
  const kb = d.size_bytes ? `${(d.size_bytes / 1024).toFixed(0)} KB` : "";
  $("dims").textContent = [d.width && `${d.width}×${d.height}`, d.format, kb]
    .filter(Boolean).join(" · ");
  $("position").textContent = `${state.pos + 1} of ${state.items.length}`;
  $("label").textContent = d.label ?? "(no label)";
  $("fate").textContent = `if you do nothing: ${d.fate}`;
  $("btn-group").hidden = d.group === null || d.group === undefined;
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
      ? `similarity ${n.similarity.toFixed(2)}` : n.same_pixels_as ? "exact copy" : "copy";
    const img = el("img", { src: `/api/images/${n.id}?size=240`, alt: n.label ?? "", loading: "lazy" });
    const t = el("div", { class: "thumb" + (n.keep ? " kept" : ""), title: n.name ?? "" }, img,
      el("div", { class: "lbl" + (same ? " same" : ""), text: n.label ?? "(no label)" }),
      el("div", { class: "muted", text: sub }));
    t.addEventListener("click", () => openLightbox(n.id, `${n.name ?? ""} · ${n.label ?? ""}`));
    return t;
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
    let r;
    if (last.group !== undefined) {
      r = await api("POST", `/api/groups/${last.group}`, { action: "restore", previous: last.previous });
      for (const p of last.previous) {
        const it = state.items.find((x) => x.id === p.image_id);
        if (it) { it.decision = p.decision; it.decided_label = p.label; }
      }
    } else {
      r = last.previous
        ? await api("POST", "/api/decisions", { image_id: last.id, ...last.previous })
        : await api("DELETE", `/api/decisions/${last.id}`);
      const it = state.items.find((x) => x.id === last.id);
      if (it) {
        it.decision = last.previous ? last.previous.decision : null;
        it.decided_label = last.previous ? last.previous.label : null;
      }
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

// -- large views: the lightbox and the duplicate group ---------------------------------------------

function openLightbox(id, caption) {
  $("lightbox-image").src = `/api/images/${id}?size=1600`;
  $("lightbox-caption").textContent = caption;
  $("lightbox").hidden = false;
}

function closeOverlays() {
  if (!$("lightbox").hidden) { $("lightbox").hidden = true; return true; }
  if (!$("group").hidden) { $("group").hidden = true; state.group = null; return true; }
  return false;
}

const GROUP_FIELDS = [
  ["size", (m) => m.width ? `${m.width}×${m.height}` : "?", ["width", "height"]],
  ["real detail", (m) => m.effective_short_side ? `${m.effective_short_side} px short side` : "?", ["effective_short_side"]],
  ["bytes", (m) => m.size_bytes ? `${(m.size_bytes / 1024).toFixed(1)} KB` : "?", ["size_bytes"]],
  ["format", (m) => m.format ?? "?", ["format"]],
  ["label", (m) => m.label ?? "(no label)", ["label"]],
];

async function openGroup() {
  const d = state.detail;
  if (!d || d.group === null || d.group === undefined) return toast("not in a duplicate group");
  const g = await api("GET", `/api/groups/${d.group}`);
  const sel = Math.max(0, g.members.findIndex((m) => m.id === d.id));
  state.group = { ...g, sel };
  $("group-title").textContent = `duplicate group: ${g.members.length} files, kept copy first`;
  $("group-members").replaceChildren(...g.members.map((m, i) => {
    const dl = el("dl");
    for (const [name, fmt, keys] of GROUP_FIELDS) {
      const differs = keys.some((k) => g.differs.includes(k));
      dl.append(el("dt", { text: name }), el("dd", { class: differs ? "differs" : "", text: fmt(m) }));
    }
    const fate = m.decision ? `decided: ${describe(m.decision, m.decided_label)}` : `if you do nothing: ${m.fate}`;
    dl.append(el("dt", { text: "fate" }), el("dd", { text: fate }));
    // Every card has the same rows, so every picture gets the same box.
    dl.append(el("dt", { text: "pixels" }), el("dd", { text: m.same_pixels_as ? `same as ${m.same_pixels_as}` : "its own" }));
    const pic = el("div", { class: "pic" }, el("img", { src: `/api/images/${m.id}?size=800`, alt: m.name }));
    pic.addEventListener("click", () => openLightbox(m.id, m.name));
    const card = el("div", { class: "member", "data-id": String(m.id) },
      el("div", { class: "name" }, el("kbd", { text: String(i + 1) }), ` ${m.name}${m.keep ? " · kept copy" : ""}`),
      pic, dl);
    card.addEventListener("click", () => selectMember(i));
    return card;
  }));
  $("group").hidden = false;
  selectMember(sel);
}

function selectMember(i) {
  const g = state.group;
  if (!g) return;
  g.sel = Math.max(0, Math.min(i, g.members.length - 1));
  [...$("group-members").children].forEach((c, j) => c.classList.toggle("selected", j === g.sel));
}

async function decideGroup(action) {
  const g = state.group;
  if (!g || state.busy) return;
  state.busy = true;
  try {
    const body = { action };
    if (action === "keep_one") body.image_id = g.members[g.sel].id;
    const r = await api("POST", `/api/groups/${g.group}`, body);
    state.undo.push({ group: g.group, previous: r.previous });
    closeOverlays();
    toast(action === "keep_one" ? `saved: kept ${g.members[g.sel].name}, dropped the rest`
      : action === "not_copies" ? "saved: not copies, all kept" : "saved: dropped all");
    for (const m of g.members) state.cache.delete(m.id);
    await loadQueue(state.detail.id);
  } catch (e) {
    toast(`not saved: ${e.message}`, true);
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
  if (ev.key === "Escape") { closeOverlays(); return; }
  if (!$("lightbox").hidden) { $("lightbox").hidden = true; return; }
  if (state.group) {
    const g = state.group;
    if (ev.key === "k") decideGroup("keep_one");
    else if (ev.key === "n") decideGroup("not_copies");
    else if (ev.key === "D") decideGroup("drop_all");
    else if (ev.key === "g") closeOverlays();
    else if (ev.key === "ArrowRight") selectMember(g.sel + 1);
    else if (ev.key === "ArrowLeft") selectMember(g.sel - 1);
    else if (/^[1-9]$/.test(ev.key)) selectMember(Number(ev.key) - 1);
    else if (ev.key === " ") openLightbox(g.members[g.sel].id, g.members[g.sel].name);
    else return;
    ev.preventDefault();
    return;
  }
  const d = state.detail;
  if (ev.key === "g") openGroup().catch((e) => toast(e.message, true));
  else if (ev.key === "z") setZoom(state.zoom === null ? 1 : null);
  else if (ev.key === "0") setZoom(null);
  else if (ev.key === "+" || ev.key === "=") zoomBy(1.5);
  else if (ev.key === "-") zoomBy(1 / 1.5);
  else if (ev.key === "k") decide("keep");
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
$("btn-group").addEventListener("click", () => openGroup().catch((e) => toast(e.message, true)));
$("group-keep").addEventListener("click", () => decideGroup("keep_one"));
$("group-not").addEventListener("click", () => decideGroup("not_copies"));
$("group-drop-all").addEventListener("click", () => decideGroup("drop_all"));
$("group-close").addEventListener("click", closeOverlays);
$("lightbox").addEventListener("click", closeOverlays);

// The mouse on the picture: a click toggles 1:1 at that point, the wheel zooms, a drag pans.
const drag = { on: false, moved: 0, x: 0, y: 0 };
$("frame").addEventListener("mousedown", (ev) => {
  Object.assign(drag, { on: true, moved: 0, x: ev.clientX, y: ev.clientY });
  ev.preventDefault();
});
window.addEventListener("mousemove", (ev) => {
  if (!drag.on) return;
  const frame = $("frame");
  drag.moved += Math.abs(ev.clientX - drag.x) + Math.abs(ev.clientY - drag.y);
  frame.scrollLeft -= ev.clientX - drag.x;
  frame.scrollTop -= ev.clientY - drag.y;
  frame.classList.toggle("dragging", drag.moved > 4);
  drag.x = ev.clientX; drag.y = ev.clientY;
});
window.addEventListener("mouseup", () => { drag.on = false; $("frame").classList.remove("dragging"); });
function pointAt(ev) {
  const frame = $("frame"), r = $("image").getBoundingClientRect(), f = frame.getBoundingClientRect();
  return { x: ev.clientX - r.left, y: ev.clientY - r.top, ox: ev.clientX - f.left, oy: ev.clientY - f.top };
}
$("frame").addEventListener("click", (ev) => {
  if (drag.moved > 4) return;
  setZoom(state.zoom === null ? 1 : null, pointAt(ev));
});
$("frame").addEventListener("wheel", (ev) => {
  ev.preventDefault();
  const d = state.detail;
  if (!d) return;
  const z = (state.zoom ?? fitScale(d)) * (ev.deltaY < 0 ? 1.25 : 0.8);
  setZoom(Math.max(0.05, Math.min(16, z)), pointAt(ev));
}, { passive: false });
window.addEventListener("resize", showZoom);
for (const id of ["filter-issue", "filter-label"]) {
  $(id).addEventListener("change", () => { $(id).blur(); loadQueue(); });
}
// Another tab may have decided files meanwhile: refresh the queue when this one comes back.
document.addEventListener("visibilitychange", () => {
  if (!document.hidden && state.detail) loadQueue(state.detail.id);
});

loadQueue().catch((e) => toast(`cannot load the queue: ${e.message}`, true));
