// The watch page: its job as JSON, kept live by /ws. A finished job gets the player; a
// failed, rejected or cancelled one gets its reason, Retry, Delete and the log instead.
// The file name is only ever set with textContent.
"use strict";

const jobId = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

function detail(term, value) {
  if (!value) return;
  $("details").append(el("dt", { text: term }), el("dd", { text: value }));
}

function media(info) {
  if (!info) return "";
  const codecs = [info.video_codec, ...(info.audio_codecs || [])].filter(Boolean).join(" + ");
  return [clock(info.duration), info.width ? `${info.width}×${info.height}` : "", codecs, bytes(info.size)]
    .filter(Boolean).join(" · ");
}

const STATE = {
  admitting: "Checking that it is a video.",
  queued: "Waiting to be converted.",
  running: "Converting",
  failed: "The conversion failed.",
  cancelled: "The conversion was cancelled.",
  rejected: "This file isn't a video vidd can convert.",
};
const ENDED = ["failed", "rejected", "cancelled"];

let profiles = [];
let job = null;
let online = false;
let played = false; // the player got its source once; live updates leave it alone
let loggedFor = ""; // the status whose log is shown

function queueText(position) {
  if (position == null) return "";
  return position === 0 ? " Next in line." : ` ${position} ahead in the queue.`;
}

function render() {
  document.title = `${job.name} · vidd`;
  $("title").textContent = job.name;
  const done = job.status === "done" && job.output;
  const ended = ENDED.includes(job.status);

  // The state, said once: the error's own words when there is one.
  let state = "";
  if (job.status === "running") state = `${STATE.running} — ${Math.floor((job.progress || 0) * 100)}%`;
  else if (job.status === "queued") state = STATE.queued + queueText(job.queue_position);
  else if (!done && !job.error) state = STATE[job.status] || job.status;
  else if (ended && job.status === "cancelled" && !job.error) state = STATE.cancelled;
  $("state").textContent = state;
  const progress = $("progress");
  progress.hidden = job.status !== "running" && job.status !== "queued";
  if (job.status === "running") progress.value = job.progress || 0;
  else progress.removeAttribute("value");

  const error = $("error");
  error.replaceChildren();
  error.hidden = !job.error || done;
  if (job.error && !done) {
    error.append(el("p", { class: "error-message", text: sentence(job.error.message) }));
    if (job.error.detail && job.error.detail !== job.error.message) {
      error.append(el("details", { class: "error-detail" },
        el("summary", { text: "Technical detail" }), el("pre", { text: job.error.detail })));
    }
  }

  $("player-frame").hidden = !done;
  if (done && !played) {
    played = true;
    const player = $("player");
    if (job.output.poster_url) player.poster = job.output.poster_url;
    player.src = job.output.url;
  }

  $("details").replaceChildren();
  if (done) detail("Video", media(job.output));
  detail("Original", media(job.source));
  const known = profiles.find((p) => p.name === job.profile);
  const description = job.profile_description || (known && known.description) || "";
  detail("Profile", description ? `${job.profile} — ${description}` : job.profile);
  detail("Inbox folder", job.folder);
  if (job.repackaged) detail("Conversion", "Repackaged without re-encoding");
  detail("Published as", job.published_as);
  detail("Publishing", sentence(job.publish_note));
  detail("Moved to", job.rejected_as ? `rejected/${job.rejected_as}` : "");
  detail("Added", when(job.created_at));
  if (done) detail("Converted", when(job.finished_at));
  else if (ended) detail("Ended", when(job.finished_at));

  const download = $("download");
  download.hidden = !done;
  if (done) {
    download.href = `${job.output.url}?download=1`;
    download.setAttribute("aria-label", `Download MP4 of ${job.name}`);
  }
  const canRetry = job.status === "failed" || job.status === "cancelled";
  $("retry").hidden = !canRetry;
  $("retry").setAttribute("aria-label", `Retry ${job.name}`);
  const select = $("retry-profile");
  select.hidden = !canRetry || profiles.length < 2;
  if (canRetry && !select.options.length) {
    for (const p of profiles) select.append(el("option", { value: p.name, text: p.name, selected: p.name === job.profile }));
  }
  $("delete").hidden = job.status === "admitting";
  $("delete").setAttribute("aria-label", `Delete ${job.name}`);
  setServerActions();

  $("log-section").hidden = !ended;
  if (ended && loggedFor !== job.status) {
    loggedFor = job.status;
    fillLog();
  }
}

// HandBrake's lines that matter first, then every line behind a <details>.
async function fillLog() {
  const box = $("log");
  box.replaceChildren(el("p", { class: "meta", text: "Loading the log…" }));
  let highlights = [], lines = [];
  try {
    const log = await api("GET", `/api/jobs/${encodeURIComponent(jobId)}/log`);
    highlights = log.highlights || [];
    lines = log.lines || [];
  } catch {
    lines = (job.log_tail || "").split("\n").filter(Boolean);
  }
  showLog(box, highlights, lines);
}

function showProblem(message) {
  const box = $("problem");
  box.replaceChildren(el("span", { text: message }),
    el("button", { type: "button", class: "button small", "aria-label": `Dismiss: ${message}`,
      onclick: () => { box.hidden = true; box.replaceChildren(); } }, "Dismiss"));
  box.hidden = false;
}

function setServerActions() {
  for (const node of document.querySelectorAll(".server-action")) node.disabled = !online;
}

async function act(button, label, method, path, body) {
  button.disabled = true;
  $("problem").hidden = true;
  try {
    const answer = await api(method, path, body);
    return answer;
  } catch (e) {
    showProblem(`${label} didn't work: ${e.message}`);
    return null;
  } finally {
    button.disabled = !online;
  }
}

$("retry").addEventListener("click", async (ev) => {
  const select = $("retry-profile");
  const body = select.hidden ? undefined : { profile: select.value };
  const answer = await act(ev.currentTarget, "Retry", "POST", `/api/jobs/${encodeURIComponent(jobId)}/retry`, body);
  if (answer && answer.id) { job = answer; loggedFor = ""; $("retry-profile").replaceChildren(); render(); }
});

$("delete").addEventListener("click", async (ev) => {
  if (!confirm(`Delete “${job.name}” and its files?`)) return;
  const answer = await act(ev.currentTarget, "Delete", "DELETE", `/api/jobs/${encodeURIComponent(jobId)}`);
  if (answer) location.href = "/";
});

function gone() {
  $("title").textContent = "Video not found";
  $("state").textContent = "It may have been deleted.";
  for (const id of ["player-frame", "progress", "error", "download", "retry", "retry-profile", "delete", "log-section"]) $(id).hidden = true;
  $("details").replaceChildren();
}

async function load() {
  try {
    job = await api("GET", `/api/jobs/${encodeURIComponent(jobId)}`);
  } catch (e) {
    if (e.status) { gone(); return false; }
    $("state").textContent = "vidd can't be reached right now; retrying…";
    setTimeout(load, 3000);
    return false;
  }
  render();
  return true;
}

function setLive(state) {
  const live = $("live");
  live.dataset.state = state;
  live.textContent = { live: "Live", connecting: "Connecting…", offline: "Reconnecting… actions are paused" }[state];
  online = state === "live";
  setServerActions();
}

let requeryTimer = 0;
function onPush(msg) {
  if (msg.type === "snapshot") {
    if (job) load(); // anything may have changed while we were away
  } else if (msg.type === "job" && msg.job.id === jobId) {
    const logTail = job && job.log_tail;
    job = { ...msg.job, log_tail: msg.job.log_tail || logTail };
    render();
  } else if (msg.type === "deleted" && msg.id === jobId) {
    gone();
  } else if (job && job.status === "queued") {
    // Another job moved: this one's place in the queue may have too.
    clearTimeout(requeryTimer);
    requeryTimer = setTimeout(load, 500);
  }
}

async function loadProfiles() {
  try {
    profiles = (await api("GET", "/api/profiles")).profiles || [];
  } catch {
    try {
      const status = await api("GET", "/api/status");
      profiles = (status.profiles || []).map((name) => ({ name, description: "" }));
    } catch { profiles = []; }
  }
}

setLive("connecting");
loadProfiles().then(load).then((found) => { if (found) liveSocket(onPush); });
