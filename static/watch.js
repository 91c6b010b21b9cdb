// The watch page: fetches its job as JSON and fills the player and the details.
// The file name is only ever set with textContent.
"use strict";

const $ = (id) => document.getElementById(id);
const jobId = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");

function bytes(n) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return `${n >= 100 || i === 0 ? Math.round(n) : n.toFixed(1)} ${units[i]}`;
}

function clock(seconds) {
  const s = Math.max(0, Math.round(seconds || 0));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return (h ? `${h}:${String(m).padStart(2, "0")}` : String(m)) + `:${String(r).padStart(2, "0")}`;
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

function detail(term, value) {
  if (!value) return;
  const dt = document.createElement("dt");
  dt.textContent = term;
  const dd = document.createElement("dd");
  dd.textContent = value;
  $("details").append(dt, dd);
}

function media(info) {
  if (!info) return "";
  const codecs = [info.video_codec, ...(info.audio_codecs || [])].filter(Boolean).join(" + ");
  return [clock(info.duration), info.width ? `${info.width}×${info.height}` : "", codecs, bytes(info.size)]
    .filter(Boolean).join(" · ");
}

const STATE = {
  queued: "Waiting to be converted.",
  running: "Converting",
  failed: "The conversion failed.",
  cancelled: "The conversion was cancelled.",
  rejected: "This file isn't a video vidd can convert.",
};

let shown = false;
async function load() {
  let job;
  try {
    const resp = await fetch(`/api/jobs/${encodeURIComponent(jobId)}`, { headers: { Accept: "application/json" } });
    if (resp.status === 401) { location.href = "/login"; return; }
    if (!resp.ok) {
      $("title").textContent = "Video not found";
      $("state").textContent = "It may have been deleted.";
      return;
    }
    job = await resp.json();
  } catch {
    $("state").textContent = "vidd can't be reached right now; retrying…";
    setTimeout(load, 3000);
    return;
  }
  document.title = `${job.name} · vidd`;
  $("title").textContent = job.name;
  if (job.status !== "done") {
    const pct = job.status === "running" ? ` — ${Math.floor(job.progress * 100)}%` : "";
    const why = job.error ? ` ${job.error.message}` : "";
    $("state").textContent = (STATE[job.status] || job.status) + pct + why;
    if (job.status === "queued" || job.status === "running") setTimeout(load, 2000);
    return;
  }
  if (shown) return;
  shown = true;
  const out = job.output;
  const player = $("player");
  if (out.poster_url) player.poster = out.poster_url;
  player.src = out.url;
  $("state").textContent = "";
  $("details").replaceChildren();
  detail("Video", media(out));
  detail("Original", media(job.source));
  detail("Profile", job.profile);
  detail("Added", when(job.created_at));
  detail("Converted", when(job.finished_at));
  const download = $("download");
  download.href = `${out.url}?download=1`;
  download.hidden = false;
  download.setAttribute("aria-label", `Download ${job.name} as MP4`);
}

load();
