// vidd's main page: the job list (paged, filtered, searched on the server, kept live by /ws),
// the summary of every state, and one card per upload from its first byte to its job.
// Every name a user chose is rendered with textContent: nothing from the server is HTML.
"use strict";

const jobsList = $("jobs");
const jobs = new Map(); // id -> job JSON, for the cards on the page
const cards = new Map(); // id -> <li>

const PAGE_SIZE = 50;
const SEARCH_DELAY_MS = 300;
const SUMMARY_DELAY_MS = 1000;

// The chips: which states each one lists (null: every state).
const FILTERS = {
  all: null,
  active: ["admitting", "queued", "running"],
  ready: ["done"],
  failed: ["failed", "rejected"],
  cancelled: ["cancelled"],
};

const view = { filter: "all", q: "", next: null, total: null, loading: false, generation: 0, loaded: false };
let profiles = []; // [{name, description, default}]
let maxUploadBytes = null;
let online = false;

// --- small helpers ------------------------------------------------------------------------

// Live regions are read out when their text is set, even to the same words.
function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function count(n) {
  return Number(n || 0).toLocaleString("en");
}

function eta(seconds) {
  if (seconds == null || seconds < 0) return "";
  if (seconds < 60) return `${Math.max(1, Math.round(seconds))} s left`;
  const m = Math.round(seconds / 60);
  return m < 60 ? `${m} min left` : `${Math.floor(m / 60)} h ${m % 60} min left`;
}

const STATUS_LABEL = {
  admitting: "Checking", queued: "Waiting", running: "Converting", done: "Ready",
  failed: "Failed", cancelled: "Cancelled", rejected: "Not a video",
};

function profileInfo(job) {
  const known = profiles.find((p) => p.name === job.profile);
  const description = job.profile_description || (known && known.description) || "";
  return description ? `${job.profile} — ${description}` : job.profile;
}

// --- the job cards ------------------------------------------------------------------------

// A card has the same parts whether it shows an upload or the job the upload became.
function buildCard(name) {
  const li = el("li", { class: "card" });
  const thumb = el("a", { class: "thumb", tabindex: "-1", "aria-hidden": "true" });
  const title = el("a", { class: "name" });
  const pill = el("span", { class: "pill" });
  const bar = el("progress", { class: "bar", max: "1", value: "0" });
  const meta = el("p", { class: "meta" });
  const profile = el("p", { class: "profile-line", hidden: true });
  const inbox = el("p", { class: "inbox-line", hidden: true });
  const error = el("div", { class: "error-text", hidden: true });
  const log = el("div", { class: "log-box", hidden: true });
  const actions = el("div", { class: "actions" });
  const problem = el("div", { class: "action-error", role: "alert", hidden: true });
  title.textContent = name;
  const body = el("div", { class: "card-body" },
    el("div", { class: "title-row" }, title, pill), bar, meta, profile, inbox, error, log, actions, problem);
  li.append(thumb, body);
  li.parts = { thumb, name: title, pill, bar, meta, profile, inbox, error, log, actions, problem };
  return li;
}

function updateCard(li, job) {
  const p = li.parts;
  const done = job.status === "done";
  li.className = `card job status-${job.status}`;
  li.dataset.id = job.id;

  p.name.textContent = job.name;
  p.name.href = `/watch/${job.id}`;
  // A finished card's Watch button is its one tab stop to the watch page.
  if (done) p.name.setAttribute("tabindex", "-1"); else p.name.removeAttribute("tabindex");
  p.thumb.href = `/watch/${job.id}`;
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
  p.bar.max = 1;
  p.bar.value = done ? 1 : job.progress || 0;
  if (justDone) setTimeout(() => { if (li.dataset.status === "done") p.bar.hidden = true; }, 2000);
  p.bar.setAttribute("aria-label", `Conversion of ${job.name}`);
  if (job.status === "queued") p.bar.removeAttribute("value"); // indeterminate while waiting

  p.meta.textContent = metaText(job);
  p.profile.hidden = !job.profile;
  p.profile.textContent = job.profile ? `Profile: ${profileInfo(job)}` : "";
  const inbox = inboxText(job);
  p.inbox.hidden = !inbox;
  p.inbox.textContent = inbox;
  showError(p.error, done ? null : job.error);

  if (li.dataset.status !== job.status) {
    li.dataset.status = job.status;
    p.log.hidden = true;
    p.actions.replaceChildren(...actionsFor(job, li));
    setServerActions(p.actions);
  }
}

// The error in plain words; the technical text one click away.
function showError(box, error) {
  box.replaceChildren();
  box.hidden = !error;
  if (!error) return;
  box.append(el("p", { class: "error-message", text: sentence(error.message) || "Something went wrong." }));
  if (error.detail && error.detail !== error.message) {
    box.append(el("details", { class: "error-detail" },
      el("summary", { text: "Technical detail" }),
      el("pre", { text: error.detail })));
  }
}

function inboxText(job) {
  const bits = [];
  if (job.folder) bits.push(`From the inbox folder ${job.folder}`);
  if (job.repackaged) bits.push("Repackaged without re-encoding");
  if (job.published_as) bits.push(`Published as ${job.published_as}`);
  if (job.publish_note) bits.push(sentence(job.publish_note).replace(/\.$/, ""));
  if (job.rejected_as) bits.push(`Moved to rejected/${job.rejected_as}`);
  return bits.length ? `${bits.join(". ")}.` : "";
}

function queueText(job) {
  if (job.queue_position == null) return "Waiting";
  if (job.queue_position === 0 && nextInLine() === job.id) return "Next in line";
  const ahead = Math.max(1, job.queue_position);
  return `${ahead} ahead in the queue`;
}

// Only one job is next in line, even if two cards briefly think they are.
function nextInLine() {
  let best = null;
  for (const j of jobs.values()) {
    if (j.status !== "queued" || j.queue_position !== 0) continue;
    if (!best || j.created_at < best.created_at) best = j;
  }
  return best && best.id;
}

function metaText(job) {
  const parts = [];
  if (job.status === "running") {
    parts.push(`${Math.floor((job.progress || 0) * 100)}%`);
    if (job.fps) parts.push(`${Math.round(job.fps)} fps`);
    const left = eta(job.eta_s);
    if (left) parts.push(left);
  } else if (job.status === "queued") {
    parts.push(queueText(job));
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
  // A remote worker's name (set by the worker itself): shown as text, like every name.
  if (job.worker && (job.status === "running" || job.status === "done")) parts.push(`on ${job.worker}`);
  return parts.filter(Boolean).join(" · ");
}

function button(label, cls, onclick, aria) {
  return el("button", { type: "button", class: `button ${cls}`, onclick, "aria-label": aria }, label);
}

// An action's failure stays next to its buttons until the person dismisses it.
function showProblem(li, message) {
  const box = li.parts.problem;
  box.replaceChildren(el("span", { text: message }),
    button("Dismiss", "small", () => { box.hidden = true; box.replaceChildren(); }, `Dismiss: ${message}`));
  box.hidden = false;
}

function clearProblem(li) {
  li.parts.problem.hidden = true;
  li.parts.problem.replaceChildren();
}

function profileSelect(job, label) {
  const select = el("select", { class: "retry-profile server-action", "aria-label": label });
  for (const p of profiles) {
    select.append(el("option", { value: p.name, text: p.name, selected: p.name === job.profile }));
  }
  return select;
}

function actionsFor(job, li) {
  const id = job.id;
  const act = (method, path, label, body) => async (ev) => {
    const btn = ev.currentTarget;
    btn.disabled = true;
    clearProblem(li);
    try { await api(method, path, body && body()); } catch (e) { showProblem(li, `${label} didn't work: ${e.message}`); }
    finally { btn.disabled = !online; }
  };
  const out = [];
  if (job.status === "done") {
    out.push(el("a", { class: "button primary", href: `/watch/${id}`, "aria-label": `Watch ${job.name}` }, "Watch"));
    out.push(el("a", { class: "button", href: `${job.output.url}?download=1`, "aria-label": `Download ${job.name}` }, "Download"));
  }
  if (job.status === "queued" || job.status === "running") {
    out.push(serverButton("Cancel", "", act("POST", `/api/jobs/${id}/cancel`, "Cancel"), `Cancel ${job.name}`));
  }
  if (job.status === "failed" || job.status === "cancelled") {
    const select = profiles.length > 1 ? profileSelect(job, `Profile to retry ${job.name} with`) : null;
    const body = select ? () => ({ profile: select.value }) : undefined;
    out.push(serverButton("Retry", "primary", act("POST", `/api/jobs/${id}/retry`, "Retry", body), `Retry ${job.name}`));
    if (select) out.push(select);
  }
  if (job.status === "failed" || job.status === "rejected") {
    const toggle = button("Show log", "", async () => {
      const box = li.parts.log;
      if (!box.hidden) {
        box.hidden = true;
        toggle.textContent = "Show log";
        toggle.setAttribute("aria-label", `Show log of ${job.name}`);
        toggle.setAttribute("aria-expanded", "false");
        return;
      }
      await fillLog(box, id);
      box.hidden = false;
      toggle.textContent = "Hide log";
      toggle.setAttribute("aria-label", `Hide log of ${job.name}`);
      toggle.setAttribute("aria-expanded", "true");
    }, `Show log of ${job.name}`);
    toggle.setAttribute("aria-expanded", "false");
    out.push(toggle);
  }
  out.push(serverButton("Delete", "danger", async (ev) => {
    if (!confirm(`Delete “${job.name}” and its files?`)) return;
    await act("DELETE", `/api/jobs/${id}`, "Delete")(ev);
  }, `Delete ${job.name}`));
  return out;
}

function serverButton(label, cls, onclick, aria) {
  const b = button(label, `${cls} server-action`, onclick, aria);
  b.disabled = !online;
  return b;
}

// HandBrake's lines that matter first, then every line behind a <details>.
async function fillLog(box, id) {
  box.replaceChildren(el("p", { class: "meta", text: "Loading the log…" }));
  let highlights = [], lines = [];
  try {
    const log = await api("GET", `/api/jobs/${id}/log`);
    highlights = log.highlights || [];
    lines = log.lines || [];
  } catch (e) {
    try {
      const full = await api("GET", `/api/jobs/${id}`);
      lines = (full.log_tail || "").split("\n").filter(Boolean);
    } catch (e2) {
      box.replaceChildren(el("p", { class: "error-text", text: `Could not load the log: ${e2.message}` }));
      return;
    }
  }
  showLog(box, highlights, lines);
}

// A job that leaves the queue moves everyone behind it up one place; the server only
// sends the job that changed, so the page moves the others itself.
function leftQueue(old) {
  if (!old || old.status !== "queued" || old.queue_position == null) return;
  for (const j of jobs.values()) {
    if (j.status === "queued" && j.queue_position != null && j.queue_position > old.queue_position) {
      j.queue_position -= 1;
    }
  }
}

function refreshQueued() {
  for (const j of jobs.values()) {
    const li = cards.get(j.id);
    if (li && j.status === "queued") li.parts.meta.textContent = metaText(j);
  }
}

function upsert(job, li) {
  const old = jobs.get(job.id);
  if (old && job.status !== "queued") leftQueue(old);
  jobs.set(job.id, job);
  let card = cards.get(job.id);
  if (!card) {
    card = li || buildCard(job.name);
    cards.set(job.id, card);
    placeCard(card, job);
  }
  updateCard(card, job);
  if (job.status === "queued" || (old && old.status === "queued")) refreshQueued();
  $("empty").hidden = true;
}

function placeCard(li, job) {
  // Newest first, by creation time; upload cards stay on top. A page loaded at the end
  // is older than every card: straight to the end, without walking the list.
  const last = jobsList.lastElementChild && jobs.get(jobsList.lastElementChild.dataset.id);
  if (last && last.created_at >= job.created_at && jobsList.lastElementChild !== li) {
    jobsList.append(li);
    return;
  }
  for (const other of jobsList.children) {
    if (other === li) continue;
    const o = jobs.get(other.dataset.id);
    if (o && o.created_at < job.created_at) { jobsList.insertBefore(li, other); return; }
  }
  jobsList.append(li);
}

function remove(id) {
  const old = jobs.get(id);
  leftQueue(old);
  jobs.delete(id);
  const li = cards.get(id);
  if (li) li.remove();
  cards.delete(id);
  if (old && old.status === "queued") refreshQueued();
}

function clearJobs() {
  for (const li of cards.values()) li.remove();
  cards.clear();
  jobs.clear();
}

// --- the list: pages, filter, search --------------------------------------------------------

function matches(job) {
  const states = FILTERS[view.filter];
  if (states && !states.includes(job.status)) return false;
  return !view.q || job.name.toLowerCase().includes(view.q.toLowerCase());
}

function oldestShown() {
  let oldest = null;
  for (const j of jobs.values()) if (!oldest || j.created_at < oldest.created_at) oldest = j;
  return oldest;
}

async function loadPage(reset) {
  if (!reset && (view.loading || !moreToLoad())) return;
  const generation = reset ? ++view.generation : view.generation;
  view.loading = true;
  renderFooter();
  const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
  const states = FILTERS[view.filter];
  if (states) params.set("status", states.join(","));
  if (view.q) params.set("q", view.q);
  if (!reset) params.set("before", view.next);
  let body;
  try {
    body = await api("GET", `/api/jobs?${params}`);
  } catch (e) {
    if (generation !== view.generation) return;
    view.loading = false;
    renderFooter(`The list could not be loaded: ${e.message}`);
    return;
  }
  if (generation !== view.generation) return; // a newer filter or search took over
  if (reset) clearJobs();
  for (const job of body.jobs) upsert(job);
  view.next = body.next_before || null;
  view.total = typeof body.total === "number" ? body.total : null;
  view.loading = false;
  view.loaded = true;
  renderFooter();
  // A tall screen may show the end of a short page at once: keep filling it.
  if (moreToLoad() && endVisible()) loadPage(false);
}

// A full last page still names a next one; the total says there is nothing behind it.
function moreToLoad() {
  return view.next != null && (view.total == null || jobs.size < view.total);
}

function endVisible() {
  const rect = $("jobs-end").getBoundingClientRect();
  return rect.top < window.innerHeight + 400;
}

function renderFooter(problem) {
  const shown = jobs.size;
  const status = $("list-status");
  const more = $("load-more");
  let text = "";
  if (problem) text = problem;
  else if (view.loading && view.loaded) text = "Loading more…";
  else if (view.loaded && view.total != null && shown) text = `Showing ${count(shown)} of ${count(Math.max(view.total, shown))}`;
  else if (view.loaded && shown && !moreToLoad()) text = `All ${count(shown)} shown`;
  else if (view.loaded && shown) text = `Showing the newest ${count(shown)}`;
  setText(status, text);
  jobsList.setAttribute("aria-busy", String(view.loading)); // tells a screen reader, and a test, the list is loading
  more.hidden = !moreToLoad() || view.loading;
  const empty = $("empty");
  const uploading = jobsList.querySelector(".card.upload");
  empty.hidden = !view.loaded || shown > 0 || !!uploading || !!problem;
  if (!empty.hidden) {
    empty.textContent = view.filter === "all" && !view.q
      ? "Nothing here yet. Add a video above and it shows up here while it converts."
      : "No videos match.";
  }
}

function setFilter(name) {
  if (!(name in FILTERS)) return;
  view.filter = name;
  for (const chip of document.querySelectorAll(".chip[data-filter]")) {
    chip.setAttribute("aria-pressed", String(chip.dataset.filter === name));
  }
  view.next = null;
  loadPage(true);
}

for (const chip of document.querySelectorAll(".chip[data-filter]")) {
  chip.addEventListener("click", () => setFilter(chip.dataset.filter));
}
$("failed-alert").addEventListener("click", () => {
  setFilter("failed");
  $("jobs-title").scrollIntoView({ block: "start" });
});

let searchTimer = 0;
$("search").addEventListener("input", () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => {
    const text = $("search").value.trim().slice(0, 100);
    const q = text.length >= 2 ? text : ""; // one letter matches nearly everything
    $("search-hint").hidden = text.length !== 1;
    if (q === view.q) return;
    view.q = q;
    loadPage(true);
  }, SEARCH_DELAY_MS);
});
$("search-form").addEventListener("submit", (ev) => ev.preventDefault());

$("load-more").addEventListener("click", () => loadPage(false));
new IntersectionObserver((entries) => {
  if (entries.some((e) => e.isIntersecting)) loadPage(false);
}, { rootMargin: "400px" }).observe($("jobs-end"));

// --- the summary: every state, from /api/status ---------------------------------------------

let summaryTimer = 0;
function scheduleSummary() {
  if (summaryTimer) return;
  summaryTimer = setTimeout(() => { summaryTimer = 0; loadStatus(); }, SUMMARY_DELAY_MS);
}

function renderSummary(counts) {
  const n = (...states) => states.reduce((sum, s) => sum + (counts[s] || 0), 0);
  const totals = {
    all: Object.values(counts).reduce((a, b) => a + b, 0),
    active: n("admitting", "queued", "running"),
    ready: n("done"),
    failed: n("failed", "rejected"),
    cancelled: n("cancelled"),
  };
  for (const [name, total] of Object.entries(totals)) {
    const badge = document.querySelector(`.chip[data-filter="${name}"] .chip-count`);
    if (badge) badge.textContent = count(total);
  }
  const bits = [];
  if (counts.running) bits.push(`${count(counts.running)} converting`);
  if (n("admitting", "queued")) bits.push(`${count(n("admitting", "queued"))} waiting`);
  if (counts.done) bits.push(`${count(counts.done)} ready`);
  if (counts.failed) bits.push(`${count(counts.failed)} failed`);
  if (counts.rejected) bits.push(`${count(counts.rejected)} not videos`);
  if (counts.cancelled) bits.push(`${count(counts.cancelled)} cancelled`);
  setText($("summary"), bits.join(" · "));
  const alert = $("failed-alert");
  alert.hidden = totals.failed === 0;
  alert.textContent = `${count(totals.failed)} failed`;
  alert.setAttribute("aria-label", `${count(totals.failed)} failed: show them`);
  document.querySelector('.chip[data-filter="failed"]').classList.toggle("alert", totals.failed > 0);
}

async function loadStatus() {
  try {
    const status = await api("GET", "/api/status");
    renderSummary(status.jobs || {});
    if (typeof status.max_upload_bytes === "number") maxUploadBytes = status.max_upload_bytes;
    $("logout").hidden = !status.login;
    return status;
  } catch { return null; }
}

// --- live updates -------------------------------------------------------------------------

function setServerActions(root) {
  for (const node of root.querySelectorAll(".server-action")) node.disabled = !online;
}

function setLive(state) {
  const live = $("live");
  live.dataset.state = state;
  live.textContent = { live: "Live", connecting: "Connecting…", offline: "Reconnecting… actions are paused" }[state];
  online = state === "live";
  document.body.classList.toggle("offline", !online);
  setServerActions(document);
}

// A job the server pushed: kept, moved or dropped so the list keeps matching its filter.
function liveJob(job) {
  if (pendingUploadFor(job)) return;
  if (!matches(job)) {
    if (cards.has(job.id)) {
      remove(job.id);
      if (view.total != null) view.total -= 1;
    }
    renderFooter();
    return;
  }
  if (!cards.has(job.id)) {
    const oldest = oldestShown();
    // Older than every loaded card: it belongs to a page not loaded yet.
    if (moreToLoad() && oldest && job.created_at < oldest.created_at) return;
    if (view.total != null) view.total += 1;
  }
  upsert(job);
  renderFooter();
}

let connectedBefore = false;
const lastStatus = new Map(); // id -> the state last pushed for it
function onPush(msg) {
  if (msg.type === "snapshot") {
    // After a reconnect, the list may have missed deletions: load it again.
    if (connectedBefore) loadPage(true);
    else if (view.loaded) for (const job of msg.jobs) liveJob(job);
    connectedBefore = true;
    scheduleSummary();
  } else if (msg.type === "job") {
    liveJob(msg.job);
    // Progress alone leaves the counts as they are: ask for them on a change of state.
    if (lastStatus.get(msg.job.id) !== msg.job.status) {
      lastStatus.set(msg.job.id, msg.job.status);
      scheduleSummary();
    }
  } else if (msg.type === "deleted") {
    if (cards.has(msg.id) && view.total != null) view.total -= 1;
    remove(msg.id);
    lastStatus.delete(msg.id);
    renderFooter();
    scheduleSummary();
  }
}

// --- uploads: one card from the first byte to the job ----------------------------------------

const pendingUploads = new Set(); // file names being sent; their jobs wait for done()
const heldJobs = new Map(); // name -> [job JSON pushed before the upload's answer]

function pendingUploadFor(job) {
  if (cards.has(job.id) || job.origin !== "upload" || !pendingUploads.has(job.name)) return false;
  if (!heldJobs.has(job.name)) heldJobs.set(job.name, new Map());
  heldJobs.get(job.name).set(job.id, job);
  return true;
}

// The rejected job a 422 without its job JSON was about, as the server pushed it.
function heldRejection(name) {
  const held = heldJobs.get(name);
  if (!held) return null;
  const rejected = [...held.values()].filter((j) => j.status === "rejected");
  return rejected.length ? rejected[rejected.length - 1] : null;
}

function releaseHeld(name, exceptId) {
  const held = heldJobs.get(name);
  if (!held) return;
  heldJobs.delete(name);
  for (const [id, job] of held) if (id !== exceptId && !cards.has(id)) liveJob(job);
}

function speedOf(samples) {
  if (samples.length < 2) return null;
  const first = samples[0], last = samples[samples.length - 1];
  const seconds = (last.t - first.t) / 1000;
  return seconds > 0.2 ? (last.sent - first.sent) / seconds : null;
}

function startUpload(file) {
  const li = buildCard(file.name);
  const p = li.parts;
  li.className = "card upload";
  p.name.removeAttribute("href");
  p.thumb.replaceChildren(el("span", { class: "thumb-icon up", "aria-hidden": "true" }));
  p.pill.textContent = "Uploading";
  p.bar.max = file.size || 1;
  p.bar.value = 0;
  p.bar.setAttribute("aria-label", `Upload of ${file.name}`);
  p.meta.textContent = `Starting · ${bytes(file.size)}`;
  jobsList.prepend(li);
  renderFooter();

  const dismiss = () => {
    li.remove();
    renderFooter();
  };
  const fail = (message) => {
    li.classList.add("status-failed");
    p.pill.textContent = "Not uploaded";
    p.bar.hidden = true;
    showError(p.error, { message });
    p.actions.replaceChildren(button("Dismiss", "", dismiss, `Dismiss ${file.name}`));
  };

  if (maxUploadBytes != null && file.size > maxUploadBytes) {
    fail(`This file is ${bytes(file.size)}; vidd takes files up to ${bytes(maxUploadBytes)}.`);
    return;
  }

  const samples = [];
  pendingUploads.add(file.name);
  const become = (answer) => {
    pendingUploads.delete(file.name);
    // A push about this job may have overtaken the answer: the push is newer.
    const held = heldJobs.get(file.name);
    const job = (held && held.get(answer.id)) || answer;
    li.classList.remove("upload");
    if (matches(job)) {
      if (cards.has(job.id)) cards.get(job.id).remove(); // pushed before the answer, after all
      cards.delete(job.id);
      upsert(job, li);
      if (view.total != null) view.total += 1;
    } else {
      li.remove();
    }
    releaseHeld(file.name, job.id);
    renderFooter();
    scheduleSummary();
  };
  const sending = viddSend(file, $("profile").value, {
    progress(sent, total) {
      const now = performance.now();
      samples.push({ t: now, sent });
      while (samples.length > 2 && now - samples[0].t > 3000) samples.shift();
      p.bar.max = total || 1;
      p.bar.value = sent;
      const speed = speedOf(samples);
      p.meta.textContent = sent >= total
        ? `${bytes(total)} sent · checking the file…`
        : [`${bytes(sent)} of ${bytes(total)}`, `${Math.floor((sent / (total || 1)) * 100)}%`,
          speed ? `${bytes(speed)}/s` : ""].filter(Boolean).join(" · ");
    },
    paused(on) {
      p.pill.textContent = on ? "Paused — resuming" : "Uploading";
      li.classList.toggle("paused", on);
    },
    done(status, body) {
      if (status === 201 && body && body.id) {
        become(body);
      } else if (status === 422 && body && (body.job || heldRejection(file.name))) {
        become(body.job || heldRejection(file.name)); // uploaded, then turned down: the card says why
      } else if (status === 401) {
        location.href = "/login";
      } else {
        pendingUploads.delete(file.name);
        releaseHeld(file.name, null);
        fail(body && body.error ? body.error.message : `The server answered ${status}.`);
      }
    },
  });
  p.actions.replaceChildren(button("Cancel", "", () => {
    sending.cancel();
    pendingUploads.delete(file.name);
    releaseHeld(file.name, null);
    dismiss();
  }, `Cancel the upload of ${file.name}`));
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

// On a phone there is nothing to drop: say what a tap does.
if (window.matchMedia("(pointer: coarse)").matches) {
  $("drop-title").textContent = "Choose videos";
  $("drop-sub").textContent = "They become MP4s that play in any browser";
}

// --- profiles -------------------------------------------------------------------------------

function renderProfiles(defaultName) {
  const select = $("profile");
  select.replaceChildren();
  for (const p of profiles) {
    select.append(el("option", { value: p.name, text: p.description ? `${p.name} — ${p.description}` : p.name,
      selected: p.default || p.name === defaultName }));
  }
  $("profile-row").hidden = profiles.length < 2;
  const describe = () => {
    const chosen = profiles.find((p) => p.name === select.value);
    $("profile-description").textContent = chosen && chosen.description ? chosen.description : "";
  };
  select.addEventListener("change", describe);
  describe();
  for (const [id, job] of jobs) {
    const li = cards.get(id);
    if (li) { li.dataset.status = ""; updateCard(li, job); }
  }
}

async function loadProfiles(status) {
  try {
    const body = await api("GET", "/api/profiles");
    profiles = body.profiles || [];
  } catch {
    // Before /api/profiles: names only, from /api/status.
    profiles = ((status && status.profiles) || []).map((name) => ({
      name, description: "", default: status && name === status.default_profile,
    }));
  }
  renderProfiles(status && status.default_profile);
}

setLive("connecting");
loadPage(true);
loadStatus().then(loadProfiles);
liveSocket(onPush);
