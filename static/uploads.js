// How the page sends one file to vidd. app.js owns the card; this file owns the transport.
//
//   const sending = viddSend(file, profile, {
//     progress(sent, total) {},   // bytes the server has, of the file's size
//     paused(on) {},              // true while the network is gone and the send waits to resume
//     done(status, body) {},      // HTTP status and parsed JSON body (null if none); 201 = a job
//   });
//   sending.cancel();             // stops; done() is not called after a cancel
//
// The transport is tus 1.0 (tus-js-client, static/tus.min.js) to /api/uploads: 50 MiB
// PATCHes (under a proxy's 100 MB body limit), retried with backoff while the network is
// gone, and resumed after a reload when the same file is picked again (the client keeps a
// fingerprint of the file in localStorage). The last PATCH's answer names the job in
// `Vidd-Job-Id`; done() then gets the job's JSON: 201, or 422 with the job for a file
// that is not a video (the multipart path's answers).
"use strict";

const VIDD_CHUNK = 50 * 1024 * 1024;
// About half an hour of retries before the upload gives up; "online" resumes it at once.
const VIDD_RETRY_DELAYS = [0, 1000, 2000, 4000, 8000, 15000].concat(Array(60).fill(30000));

function viddSend(file, profile, handlers) {
  let cancelled = false;
  let pausedNow = false;
  let jobId = null;

  const setPaused = (on) => {
    if (on !== pausedNow && !cancelled) {
      pausedNow = on;
      handlers.paused(on);
    }
  };
  const finish = (status, body) => {
    window.removeEventListener("online", wake);
    window.removeEventListener("offline", sleep);
    if (!cancelled) handlers.done(status, body);
  };

  const metadata = { filename: file.name, filetype: file.type || "application/octet-stream" };
  if (profile) metadata.profile = profile;

  const upload = new tus.Upload(file, {
    endpoint: "/api/uploads",
    chunkSize: VIDD_CHUNK,
    retryDelays: VIDD_RETRY_DELAYS,
    metadata,
    storeFingerprintForResuming: true,
    removeFingerprintOnSuccess: true,
    onProgress(sent, total) {
      if (sent > 0) setPaused(false);
      handlers.progress(sent, total);
    },
    onAfterResponse(req, res) {
      const id = res.getHeader("Vidd-Job-Id");
      if (id) jobId = id;
      if (res.getStatus() < 300) setPaused(false);
    },
    onShouldRetry(err) {
      // A network failure (status 0) or a server that will be back: wait and resume,
      // online or not. A refusal (400, 401, 413, ...) is final.
      const status = err.originalResponse ? err.originalResponse.getStatus() : 0;
      const retry = status === 0 || status >= 500 || [408, 409, 423, 429, 460].includes(status);
      if (retry) setPaused(true);
      return retry;
    },
    onSuccess() {
      settle().catch(() => finish(0, networkError()));
    },
    onError(err) {
      const res = err.originalResponse;
      if (!res) return finish(0, networkError());
      let body = null;
      try { body = JSON.parse(res.getBody()); } catch { /* not JSON */ }
      finish(res.getStatus(), body);
    },
  });

  // Back online: resume now rather than at the end of the current retry delay.
  function wake() {
    if (!pausedNow || cancelled) return;
    upload.abort().then(() => { if (!cancelled) upload.start(); });
  }
  function sleep() { setPaused(true); }
  window.addEventListener("online", wake);
  window.addEventListener("offline", sleep);

  // The complete upload's job, as JSON. If the last answer was lost (or the upload was
  // complete already when it was resumed), the server's record names it; if it has none
  // yet, an empty PATCH at the end asks vidd to take the file again.
  async function settle() {
    if (!jobId && upload.url) {
      const state = await fetchJson(upload.url);
      if (state.body && state.body.job_id) jobId = state.body.job_id;
    }
    if (!jobId && upload.url) {
      const res = await fetch(upload.url, {
        method: "PATCH",
        headers: {
          "Tus-Resumable": "1.0.0",
          "Content-Type": "application/offset+octet-stream",
          "Upload-Offset": String(file.size),
        },
      });
      jobId = res.headers.get("Vidd-Job-Id");
      if (!jobId) {
        let body = null;
        try { body = await res.json(); } catch { /* not JSON */ }
        return finish(res.status, body);
      }
    }
    const job = await fetchJson(`/api/jobs/${encodeURIComponent(jobId)}`);
    if (job.status !== 200 || !job.body) return finish(job.status, job.body);
    if (job.body.status === "rejected") {
      const error = job.body.error || { code: "not_video", message: "HandBrake can't read this file." };
      return finish(422, { error: { code: error.code, message: error.message }, job: job.body });
    }
    finish(201, job.body);
  }

  upload.findPreviousUploads().then((previous) => {
    if (cancelled) return;
    if (previous.length) upload.resumeFromPreviousUpload(previous[0]);
    upload.start();
  });

  return {
    cancel() {
      cancelled = true;
      window.removeEventListener("online", wake);
      window.removeEventListener("offline", sleep);
      // Terminate: the partial file goes from the server and the fingerprint from here.
      upload.abort(true).catch(() => {});
    },
  };
}

async function fetchJson(url) {
  const res = await fetch(url, { headers: { Accept: "application/json" } });
  let body = null;
  try { body = await res.json(); } catch { /* not JSON */ }
  return { status: res.status, body };
}

function networkError() {
  return { error: { code: "network", message: "The connection was lost during the upload." } };
}
