// Ferry's web console: the Send page's upload (tus-js-client, resumable across reloads) and
// the transfer's status as it changes (the event feed wakes the page, the overview says what
// changed). Everything the page shows goes through textContent: nothing is parsed as HTML.
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);
  const csrf = () => document.querySelector('meta[name="csrf-token"]')?.content || '';
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // A console endpoint: same origin, the session cookie and the page's CSRF token.
  async function post(path, body) {
    const response = await fetch(path, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': csrf() },
      body: JSON.stringify(body || {}),
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(data.message || `the server answered ${response.status}`);
    return data;
  }

  // The session's bearer token for the APIs, kept in memory only (fetched again after a 401).
  let token = null;
  async function bearer(fresh) {
    if (!token || fresh) token = (await post('/console/api/token')).token;
    return token;
  }
  async function api(path) {
    let response = null;
    for (const fresh of [false, true]) {
      response = await fetch(path, {
        headers: { Authorization: `Bearer ${await bearer(fresh)}`, Accept: 'application/json' },
      });
      if (response.status !== 401) break;
    }
    return response;
  }

  function size(n) {
    const units = ['KiB', 'MiB', 'GiB', 'TiB'];
    if (n < 1024) return `${n} B`;
    let value = n / 1024;
    let unit = 0;
    while (value >= 1024 && unit + 1 < units.length) { value /= 1024; unit += 1; }
    return `${value.toFixed(1)} ${units[unit]}`;
  }

  const RECIPIENT = {
    Initialized: 'Not downloaded',
    DownloadStarted: 'Downloading',
    DownloadConfirmed: 'Confirmed',
  };
  const SETTLED = ['AllConfirmedDownloaded', 'Failed', 'Cancelled', 'Purged'];

  function fail(message) {
    const box = $('send-error');
    box.textContent = message;
    box.hidden = false;
  }

  function render(overview) {
    $('status').textContent = overview.fileTransferStatus;
    $('status-text').textContent = overview.fileTransferStatusText || '';
    const list = $('recipient-statuses');
    list.replaceChildren(...(overview.recipients || []).map((r) => {
      const item = document.createElement('li');
      const code = r.currentRecipientFileTransferStatusCode;
      item.textContent = `${r.recipient}: ${RECIPIENT[code] || code}`;
      item.dataset.status = code;
      return item;
    }));
  }

  // Follows the transfer until nothing more can happen to it: the event feed (long-polled)
  // says when something changed, the overview what.
  async function follow(id, resource) {
    let cursor = '0';
    const feed = (after) => '/events/api/v1/events?resource=' +
      encodeURIComponent(`urn:altinn:resource:${resource}`) +
      `&after=${encodeURIComponent(after)}&wait=10`;
    for (;;) {
      const response = await api(`/broker/api/v1/filetransfer/${id}`);
      if (response.ok) {
        const overview = await response.json();
        render(overview);
        if (SETTLED.includes(overview.fileTransferStatus)) return;
      }
      const events = await api(feed(cursor));
      if (events.ok) {
        cursor = events.headers.get('next') || cursor;
      } else {
        cursor = '0';
        await sleep(2000);
      }
    }
  }

  function setupSend(form) {
    let upload = null;
    // Whether bytes are meant to be moving (not paused, finished or failed), and whether the
    // upload waits for the network to come back.
    let active = false;
    let offline = false;
    const waitForNetwork = () => {
      offline = true;
      $('progress-text').textContent = 'Offline: the upload continues when the network is back';
    };
    // A dropped network may leave a request hanging rather than failing: stop it, and start
    // again once the browser is back online (tus-js-client then asks the server for its
    // committed offset with a HEAD and continues from there).
    window.addEventListener('offline', () => {
      if (!upload || !active) return;
      upload.abort();
      waitForNetwork();
    });
    window.addEventListener('online', () => {
      if (!upload || !offline) return;
      offline = false;
      upload.start();
    });
    const show = (id, file) => {
      $('upload').hidden = false;
      $('upload-name').textContent = file.name;
      const link = $('transfer-link');
      link.textContent = id;
      link.href = `/console/transfers/${id}`;
    };
    const progress = (done, total) => {
      const percent = total ? Math.floor((done / total) * 100) : 100;
      $('progress').value = percent;
      $('progress-text').textContent = `${percent} % · ${size(done)} of ${size(total)}`;
    };

    async function start(id, file, key, resource) {
      await bearer(true);
      upload = new tus.Upload(file, {
        endpoint: `/broker/api/v1/filetransfer/upload/tus/${id}`,
        chunkSize: 4 * 1024 * 1024,
        retryDelays: [0, 1000, 3000, 5000, 10000, 20000],
        metadata: { filename: file.name },
        removeFingerprintOnSuccess: true,
        onBeforeRequest: (request) => request.setHeader('Authorization', `Bearer ${token}`),
        onAfterResponse: (request, response) => {
          // A resumed upload starts where the server's committed offset says.
          if (request.getMethod() === 'HEAD') {
            const offset = Number(response.getHeader('Upload-Offset') || 0);
            $('progress-text').textContent = `Resuming at ${size(offset)} of ${size(file.size)}`;
            $('upload').dataset.resumedAt = String(offset);
          }
          if (response.getStatus() === 401) return bearer(true);
          return undefined;
        },
        // tus-js-client's own rule (server errors, 409, 423, no answer), plus 401: the session
        // token expired mid-upload and onAfterResponse fetched a fresh one. Offline, retrying
        // would only use up the delays: onError waits for the network instead.
        onShouldRetry: (error) => {
          if (navigator.onLine === false) return false;
          const status = error.originalResponse ? error.originalResponse.getStatus() : 0;
          return !status || status >= 500 || [401, 409, 423].includes(status);
        },
        onProgress: (sent, total) => progress(sent, total),
        onSuccess: () => {
          active = false;
          localStorage.removeItem(key);
          progress(file.size, file.size);
          $('pause').hidden = true;
          $('resume').hidden = true;
          follow(id, resource).catch((e) => fail(e.message));
        },
        onError: (error) => {
          // The network dropped: the 'online' handler starts again.
          if (navigator.onLine === false) {
            waitForNetwork();
            return;
          }
          active = false;
          const body = error.originalResponse && error.originalResponse.getBody();
          let message = error.message;
          try { message = JSON.parse(body).detail || message; } catch (_) { /* not JSON */ }
          fail(`The upload stopped: ${message}`);
        },
      });
      const previous = await upload.findPreviousUploads();
      if (previous.length > 0) upload.resumeFromPreviousUpload(previous[0]);
      $('pause').hidden = false;
      $('resume').hidden = true;
      active = true;
      upload.start();
    }

    $('pause').addEventListener('click', () => {
      if (!upload) return;
      active = false;
      offline = false;
      upload.abort();
      $('pause').hidden = true;
      $('resume').hidden = false;
    });
    $('resume').addEventListener('click', () => {
      if (!upload) return;
      $('resume').hidden = true;
      $('pause').hidden = false;
      active = true;
      upload.start();
    });

    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      $('send-error').hidden = true;
      const file = $('file').files[0];
      if (!file) return;
      const resource = $('resource').value;
      // A bare organisation number is written in the API's party form.
      const recipients = $('recipients').value.split(/[\s,]+/).filter(Boolean)
        .map((p) => (/^\d{9}$/.test(p) ? `0192:${p}` : p));
      // The same file to the same recipients after a reload continues the same transfer.
      const key = 'ferry-send:' +
        [resource, recipients.join(','), file.name, file.size, file.lastModified].join(':');
      try {
        let id = localStorage.getItem(key);
        if (!id) {
          id = (await post('/console/api/initialize', {
            resourceId: resource, recipients, fileName: file.name,
          })).fileTransferId;
          localStorage.setItem(key, id);
        }
        show(id, file);
        $('send').disabled = true;
        await start(id, file, key, resource);
      } catch (error) {
        $('send').disabled = false;
        fail(error.message);
      }
    });
  }

  document.addEventListener('DOMContentLoaded', () => {
    const form = $('send-form');
    if (form) setupSend(form);
  });
}());
