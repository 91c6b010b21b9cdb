// How the page sends one file to vidd. app.js owns the card; this file owns the transport.
//
//   const sending = viddSend(file, profile, {
//     progress(sent, total) {},   // bytes the server has, of the file's size
//     paused(on) {},              // true while the network is gone and the send waits to resume
//     done(status, body) {},      // HTTP status and parsed JSON body (null if none); 201 = a job
//   });
//   sending.cancel();             // stops; done() is not called after a cancel
//
// Today this is one multipart POST to /api/jobs.
"use strict";

function viddSend(file, profile, handlers) {
  const xhr = new XMLHttpRequest();
  const form = new FormData();
  if (profile) form.append("profile", profile);
  form.append("file", file, file.name);
  let cancelled = false;

  xhr.upload.addEventListener("progress", (ev) => {
    handlers.progress(ev.loaded, ev.lengthComputable ? ev.total : file.size);
  });
  xhr.addEventListener("load", () => {
    let body = null;
    try { body = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
    handlers.done(xhr.status, body);
  });
  xhr.addEventListener("error", () => {
    if (!cancelled) handlers.done(0, { error: { code: "network", message: "The connection was lost during the upload." } });
  });
  xhr.open("POST", "/api/jobs");
  xhr.setRequestHeader("Accept", "application/json");
  xhr.send(form);
  return { cancel() { cancelled = true; xhr.abort(); } };
}
