// The small helpers both pages use (loaded before app.js and watch.js): elements built
// with textContent only, sizes and times in words, and the API with its errors as messages.
"use strict";

const $ = (id) => document.getElementById(id);

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
  return `${n >= 100 || i === 0 ? Math.round(n) : n.toFixed(1).replace(/\.0$/, "")} ${units[i]}`;
}

function clock(seconds) {
  if (seconds == null || !isFinite(seconds)) return "";
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  const mm = h ? String(m).padStart(2, "0") : String(m);
  return (h ? `${h}:` : "") + `${mm}:${String(r).padStart(2, "0")}`;
}

class ApiFailure extends Error {
  constructor(message, status) { super(message); this.status = status; }
}

async function api(method, path, json) {
  const init = { method, headers: { Accept: "application/json" } };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  }
  let resp;
  try { resp = await fetch(path, init); } catch { throw new ApiFailure("vidd can't be reached right now.", 0); }
  if (resp.status === 401) { location.href = "/login"; throw new ApiFailure("Please sign in again.", 401); }
  let body = null;
  try { body = await resp.json(); } catch { /* not JSON */ }
  if (!resp.ok) {
    const msg = body && body.error ? body.error.message : `The server answered ${resp.status}.`;
    throw new ApiFailure(msg, resp.status);
  }
  return body;
}

function sentence(text) {
  text = (text || "").trim();
  if (!text) return "";
  return text[0].toUpperCase() + text.slice(1).replace(/([^.!?])$/, "$1.");
}

// A job's HandBrake log in `box`: the lines that matter, then every line behind a click
// (open when there are no highlights).
function showLog(box, highlights, lines) {
  const parts = [];
  if (highlights.length) parts.push(el("pre", { class: "log highlights", tabindex: "0", text: highlights.join("\n") }));
  if (lines.length) {
    parts.push(el("details", { class: "log-all", open: !highlights.length },
      el("summary", { text: `All ${lines.length} lines of the log` }),
      el("pre", { class: "log", tabindex: "0", text: lines.join("\n") })));
  }
  if (!parts.length) parts.push(el("p", { class: "meta", text: "HandBrake wrote nothing for this job." }));
  box.replaceChildren(...parts);
}

// The server's pushes on /ws, each parsed and handed to onMessage; the page's own
// setLive(state) hears "live" and "offline". A lost connection is opened again, backing
// off with jitter so a restarting server isn't stampeded.
function liveSocket(onMessage) {
  let backoff = 500;
  const open = () => {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}/ws`);
    ws.addEventListener("open", () => { backoff = 500; setLive("live"); });
    ws.addEventListener("message", (ev) => onMessage(JSON.parse(ev.data)));
    ws.addEventListener("close", () => {
      setLive("offline");
      const wait = backoff + Math.random() * backoff * 0.3;
      backoff = Math.min(backoff * 2, 15000);
      setTimeout(open, wait);
    });
  };
  open();
}
