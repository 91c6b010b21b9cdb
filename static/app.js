// vidd's main page: uploads with a progress bar each, and the live job list fed by /ws.
// Every name a user chose is rendered with textContent: nothing from the server is HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const jobsList = $("jobs");
const uploadsList = $("uploads");
const jobs = new Map(); // id -> job JSON
const cards = new Map(); // id -> <li>

// --- small helpers ------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== false && value != null) node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

function bytes(n) {
  if (n == null) return "";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return `${n >= 100 || i === 0 ? Math.round(n) : n.toFixed(1)} ${units[i]}`;
}

function clock(seconds) {
  if (seconds == null || !isFinite(seconds)) return "";
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  const mm = h ? String(m).padStart(2, "0") : String(m);
  return (h ? `${h}:` : "") + `${mm}:${String(r).padStart(2, "0")}`;
}

function eta(seconds) {
  if (seconds == null || seconds < 0) return "";
  if (seconds < 60) return `${Math.max(1, Math.round(seconds))} s left`;
  const m = Math.round(seconds / 60);
  return m < 60 ? `${m} min left` : `${Math.floor(m / 60)} h ${m % 60} min left`;
}

function ordinal(n) {
  return n === 0 ? "Next in line" : `${n} ahead in the queue`;
}

const STATUS_LABEL = {
  admitting: "Checking", queued: "Waiting", running: "Converting", done: "Ready",
  failed: "Failed", cancelled: "Cancelled", rejected: "Not a video",
};

// Plain words for why a job did not finish; the server's own message follows.
const REASON = {
  not_video: "This file isn't a video vidd can convert.",
  cancelled: "The conversion was cancelled.",
  stalled: "HandBrake stopped making progress, so vidd stopped it.",
  disk_full: "The server ran out of disk space.",
};

function reasonText(job) {
  if (!job.error) return "";
  const lead = REASON[job.error.code] ||
    (job.status === "failed" ? "The conversion failed." : "");
  // The server's words, without a prefix that repeats the lead.
  let detail = (job.error.message || "").replace(/^not a video:\s*/i, "").trim();
  if (detail) detail = detail[0].toUpperCase() + detail.slice(1).replace(/([^.!?])$/, "$1.");
  if (!lead) return detail;
  return detail && detail.toLowerCase() !== lead.toLowerCase() ? `${lead} ${detail}` : lead;
}

async function api(method, path) {
  const resp = await fetch(path, { method, headers: { Accept: "application/json" } });
  let body = null;
  try { body = await resp.json(); } catch { /* not JSON */ }
  if (!resp.ok) {
    const msg = body && body.error ? body.error.message : `${resp.status} ${resp.statusText}`;
    throw new Error(msg);
  }
  return body;
}

function notify(message) {
  const live = $("live");
  live.dataset.note = message;
  live.textContent = message;
  setTimeout(() => { if (live.dataset.note === message) setLive(liveState); }, 4000);
}

// --- the job cards ------------------------------------------------------------------------

function buildCard(job) {
  const li = el("li", { class: "card job", "data-id": job.id });
  const thumb = el("a", { class: "thumb", href: `/watch/${job.id}`, tabindex: "-1", "aria-hidden": "true" });
  const name = el("a", { class: "name", href: `/watch/${job.id}` });
  const pill = el("span", { class: "pill" });
  const bar = el("progress", { class: "bar", max: "1", value: "0" });
  const meta = el("p", { class: "meta" });
  const error = el("p", { class: "error-text" });
  const log = el("pre", { class: "log", tabindex: "0", hidden: true });
  const actions = el("div", { class: "actions" });
  const body = el("div", { class: "card-body" },
    el("div", { class: "title-row" }, name, pill), bar, meta, error, log, actions);
  li.append(thumb, body);
  li.parts = { thumb, name, pill, bar, meta, error, log, actions };
  return li;
}

function updateCard(li, job) {
  const p = li.parts;
  const done = job.status === "done";
  li.className = `card job status-${job.status}`;

  p.name.textContent = job.name;
  p.name.title = job.name;
  p.name.setAttribute("aria-label", done ? `Watch ${job.name}` : job.name);
  p.pill.textContent = STATUS_LABEL[job.status] || job.status;

  const poster = done && job.output && job.output.poster_url;
  if (poster && p.thumb.dataset.poster !== poster) {
    p.thumb.dataset.poster = poster;
    p.thumb.replaceChildren(el("img", { src: poster, alt: "", loading: "lazy", decoding: "async" }),
      el("span", { class: "play", "aria-hidden": "true" }));
  } else if (!poster && p.thumb.dataset.poster !== "") {
    p.thumb.dataset.poster = "";
    p.thumb.replaceChildren(el("span", { class: "thumb-icon", "aria-hidden": "true" }));
  }
  const icon = p.thumb.querySelector(".thumb-icon");
  if (icon) icon.classList.toggle("bad", job.status === "failed" || job.status === "rejected");

  const active = job.status === "running" || job.status === "queued";
  // A conversion watched to its end shows a full bar for a moment before it goes.
  const justDone = done && li.dataset.status === "running";
  p.bar.hidden = !active && !justDone;
  p.bar.value = done ? 1 : job.progress || 0;
  if (justDone) setTimeout(() => { if (li.dataset.status === "done") p.bar.hidden = true; }, 2000);
  p.bar.setAttribute("aria-label", `Conversion of ${job.name}`);
  if (job.status === "queued") p.bar.removeAttribute("value"); // indeterminate while waiting

  p.meta.textContent = metaText(job);
  const reason = reasonText(job);
  p.error.hidden = !reason || done;
  p.error.textContent = reason;

  if (li.dataset.status !== job.status) {
    li.dataset.status = job.status;
    p.log.hidden = true;
    p.actions.replaceChildren(...actionsFor(job, li));
  }
}

function metaText(job) {
  const parts = [];
  if (job.status === "running") {
    parts.push(`${Math.floor((job.progress || 0) * 100)}%`);
    if (job.fps) parts.push(`${Math.round(job.fps)} fps`);
    const left = eta(job.eta_s);
    if (left) parts.push(left);
  } else if (job.status === "queued") {
    parts.push(job.queue_position == null ? "Waiting" : ordinal(job.queue_position));
  } else if (job.status === "admitting") {
    parts.push("Checking that it is a video");
  } else if (job.status === "done" && job.output) {
    const o = job.output;
    parts.push(clock(o.duration));
    if (o.width) parts.push(`${o.width}×${o.height}`);
    parts.push(bytes(o.size));
  }
  if (job.source && job.status !== "done") {
    if (job.source.duration) parts.push(clock(job.source.duration));
    parts.push(bytes(job.source.size));
  }
  return parts.filter(Boolean).join(" · ");
}

function button(label, cls, onclick, aria) {
  return el("button", { type: "button", class: `button ${cls}`, onclick, "aria-label": aria }, label);
}

function actionsFor(job, li) {
  const id = job.id;
  const act = (method, path, label) => async (ev) => {
    const btn = ev.currentTarget;
    btn.disabled = true;
    try { await api(method, path); } catch (e) { notify(`${label} failed: ${e.message}`); }
    finally { btn.disabled = false; }
  };
  const out = [];
  if (job.status === "done") {
    out.push(el("a", { class: "button primary", href: `/watch/${id}`, "aria-label": `Watch ${job.name}` }, "Watch"));
    out.push(el("a", { class: "button", href: `${job.output.url}?download=1`, "aria-label": `Download ${job.name}` }, "Download"));
  }
  if (job.status === "queued" || job.status === "running") {
    out.push(button("Cancel", "", act("POST", `/api/jobs/${id}/cancel`, "Cancel"), `Cancel ${job.name}`));
  }
  if (job.status === "failed" || job.status === "cancelled") {
    out.push(button("Retry", "primary", act("POST", `/api/jobs/${id}/retry`, "Retry"), `Retry ${job.name}`));
  }
  if (job.status === "failed" || job.status === "rejected") {
    const toggle = button("Show log", "", async () => {
      const log = li.parts.log;
      if (!log.hidden) { log.hidden = true; toggle.textContent = "Show log"; return; }
      try {
        const full = await api("GET", `/api/jobs/${id}`);
        log.textContent = full.log_tail || "HandBrake wrote nothing for this job.";
      } catch (e) { log.textContent = `Could not load the log: ${e.message}`; }
      log.hidden = false;
      toggle.textContent = "Hide log";
      toggle.setAttribute("aria-expanded", "true");
    }, `Show the log of ${job.name}`);
    toggle.setAttribute("aria-expanded", "false");
    out.push(toggle);
  }
  out.push(button("Delete", "danger", async (ev) => {
    if (!confirm(`Delete “${job.name}” and its files?`)) return;
    await act("DELETE", `/api/jobs/${id}`, "Delete")(ev);
  }, `Delete ${job.name}`));
  return out;
}

// A job that leaves the queue moves everyone behind it up one place; the server only
// sends the job that changed, so the page moves the others itself.
function leftQueue(old) {
  if (!old || old.status !== "queued" || old.queue_position == null) return;
  for (const j of jobs.values()) {
    if (j.status === "queued" && j.queue_position != null && j.queue_position > old.queue_position) {
      j.queue_position -= 1;
      const li = cards.get(j.id);
      if (li) updateCard(li, j);
    }
  }
}

function upsert(job) {
  const old = jobs.get(job.id);
  if (old && job.status !== "queued") leftQueue(old);
  jobs.set(job.id, job);
  let li = cards.get(job.id);
  if (!li) {
    li = buildCard(job);
    cards.set(job.id, li);
    placeCard(li, job);
  }
  updateCard(li, job);
}

function placeCard(li, job) {
  // Newest first, by creation time.
  for (const other of jobsList.children) {
    const o = jobs.get(other.dataset.id);
    if (o && o.created_at < job.created_at) { jobsList.insertBefore(li, other); return; }
  }
  jobsList.append(li);
}

function remove(id) {
  leftQueue(jobs.get(id));
  jobs.delete(id);
  const li = cards.get(id);
  if (li) li.remove();
  cards.delete(id);
}

function refreshSummary() {
  const counts = {};
  for (const j of jobs.values()) counts[j.status] = (counts[j.status] || 0) + 1;
  const bits = [];
  if (counts.running) bits.push(`${counts.running} converting`);
  if (counts.queued) bits.push(`${counts.queued} waiting`);
  if (counts.done) bits.push(`${counts.done} ready`);
  $("summary").textContent = bits.join(" · ");
  $("empty").hidden = jobs.size > 0 || uploadsList.children.length > 0;
}

// --- live updates -------------------------------------------------------------------------

let liveState = "connecting";
function setLive(state) {
  liveState = state;
  const live = $("live");
  live.dataset.state = state;
  delete live.dataset.note;
  live.textContent = { live: "Live", connecting: "Connecting…", offline: "Reconnecting…" }[state];
}

let backoff = 500;
function connect() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${scheme}//${location.host}/ws`);
  ws.addEventListener("open", () => { backoff = 500; setLive("live"); });
  ws.addEventListener("message", (ev) => {
    const msg = JSON.parse(ev.data);
    if (msg.type === "snapshot") {
      const ids = new Set(msg.jobs.map((j) => j.id));
      for (const id of [...jobs.keys()]) if (!ids.has(id)) remove(id);
      for (const job of msg.jobs.slice().reverse()) upsert(job);
    } else if (msg.type === "job") {
      upsert(msg.job);
    } else if (msg.type === "deleted") {
      remove(msg.id);
    }
    refreshSummary();
  });
  ws.addEventListener("close", () => {
    setLive("offline");
    // Back off, with jitter, so a restarting server isn't stampeded.
    const wait = backoff + Math.random() * backoff * 0.3;
    backoff = Math.min(backoff * 2, 15000);
    setTimeout(connect, wait);
  });
}

// --- uploads ------------------------------------------------------------------------------

function startUpload(file) {
  $("uploads-section").hidden = false;
  const name = el("span", { class: "name", text: file.name, title: file.name });
  const bar = el("progress", { class: "bar", max: String(file.size || 1), value: "0", "aria-label": `Upload of ${file.name}` });
  const meta = el("p", { class: "meta", text: `Starting · ${bytes(file.size)}` });
  const error = el("p", { class: "error-text", hidden: true, role: "alert" });
  const actions = el("div", { class: "actions" });
  const li = el("li", { class: "card upload" },
    el("div", { class: "thumb" }, el("span", { class: "thumb-icon up", "aria-hidden": "true" })),
    el("div", { class: "card-body" },
      el("div", { class: "title-row" }, name, el("span", { class: "pill", text: "Uploading" })),
      bar, meta, error, actions));
  uploadsList.prepend(li);
  refreshSummary();

  const finish = () => {
    li.remove();
    if (!uploadsList.children.length) $("uploads-section").hidden = true;
    refreshSummary();
  };
  const fail = (message) => {
    li.classList.add("status-failed");
    li.querySelector(".pill").textContent = "Not uploaded";
    bar.hidden = true;
    error.hidden = false;
    error.textContent = message;
    actions.replaceChildren(button("Dismiss", "", finish, `Dismiss ${file.name}`));
  };

  const sending = viddSend(file, $("profile").value, {
    progress(sent, total) {
      bar.max = total || 1;
      bar.value = sent;
      meta.textContent = sent >= total
        ? `${bytes(total)} sent · checking the file…`
        : `${bytes(sent)} of ${bytes(total)} · ${Math.floor((sent / (total || 1)) * 100)}%`;
    },
    paused(on) {
      li.querySelector(".pill").textContent = on ? "Paused — resuming" : "Uploading";
    },
    done(status, body) {
      if (status === 201 && body) {
        finish();
        upsert(body);
        refreshSummary();
      } else if (status === 401) {
        location.href = "/login";
      } else {
        fail(body && body.error ? body.error.message : `The server answered ${status}.`);
      }
    },
  });
  actions.append(button("Cancel", "", () => { sending.cancel(); finish(); }, `Cancel the upload of ${file.name}`));
}

function startUploads(files) {
  for (const file of files) startUpload(file);
}

const input = $("file-input");
input.addEventListener("change", () => {
  startUploads([...input.files]);
  input.value = "";
});

const drop = $("drop");
let dragDepth = 0;
drop.addEventListener("dragenter", (ev) => { ev.preventDefault(); dragDepth++; drop.classList.add("over"); });
drop.addEventListener("dragover", (ev) => { ev.preventDefault(); ev.dataTransfer.dropEffect = "copy"; });
drop.addEventListener("dragleave", () => { if (--dragDepth <= 0) { dragDepth = 0; drop.classList.remove("over"); } });
drop.addEventListener("drop", (ev) => {
  ev.preventDefault();
  dragDepth = 0;
  drop.classList.remove("over");
  startUploads([...ev.dataTransfer.files]);
});
// A file dropped anywhere else would navigate away from the page.
window.addEventListener("dragover", (ev) => ev.preventDefault());
window.addEventListener("drop", (ev) => ev.preventDefault());

async function loadProfiles() {
  try {
    const status = await api("GET", "/api/status");
    const select = $("profile");
    for (const name of status.profiles || []) {
      select.append(el("option", { value: name, text: name, selected: name === status.default_profile }));
    }
    $("profile-row").hidden = (status.profiles || []).length < 2;
    $("logout").hidden = !status.login;
  } catch { /* the default profile applies */ }
}

setLive("connecting");
refreshSummary();
loadProfiles();
connect();
