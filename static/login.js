"use strict";
// Say why the server sent us back here: a wrong token, or too many of them.
const query = new URLSearchParams(location.search);
if (query.has("failed")) {
  document.getElementById("failed").hidden = false;
}
const wait = Number.parseInt(query.get("wait") || "", 10);
if (wait > 0) {
  document.getElementById("wait-s").textContent = String(wait);
  document.getElementById("wait").hidden = false;
}
