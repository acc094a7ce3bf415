// Catalog page: drag-and-drop upload and the live import progress bar.
// Progress arrives over the admin websocket (/ws/app/<slug>/imports/<id>/) pushed from the import's
// Channels group; if the socket cannot open, the status endpoint is polled every 500 ms instead.
"use strict";
(() => {
  const fmtSeconds = (s) => (s == null ? "–" : s < 60 ? `${Math.ceil(s)} s` : `${Math.floor(s / 60)} min ${Math.ceil(s % 60)} s`);

  function render(box, st) {
    const set = (name, text) => { const el = box.querySelector(`[data-field="${name}"]`); if (el) el.textContent = text; };
    const percent = st.finished ? 100 : (st.percent ?? 0);
    box.querySelector(".bar").style.width = `${percent}%`;
    const bar = box.querySelector(".progress");
    bar.setAttribute("aria-valuenow", String(percent));
    bar.classList.toggle("done", st.state === "succeeded");
    bar.classList.toggle("failed", st.state === "failed");
    set("filename", st.filename ?? "");
    set("phase", st.phase_label ?? st.phase ?? "");
    set("percent", `${percent}%`);
    set("rows", `${st.rows_done ?? 0} / ${st.rows_total ?? 0}`);
    set("rate", st.rate == null ? "–" : String(st.rate));
    set("eta", st.finished ? "0 s" : fmtSeconds(st.eta_seconds));
    if (st.finished) {
      set("summary", `Created ${st.created}, updated ${st.updated}, unchanged ${st.unchanged}, retired ${st.retired}, failed rows ${st.failed}`);
    }
    set("error", st.error_message || "");
    const link = box.querySelector('[data-field="errors-link"]');
    if (link && st.errors_url) { link.href = st.errors_url; link.hidden = false; }
  }

  function follow(box, statusUrl, wsPath, onDone) {
    let finished = false;
    let timer = null;
    const fetchStatus = async () => {
      try {
        const res = await fetch(statusUrl, { headers: { Accept: "application/json" }, credentials: "same-origin" });
        if (res.ok) handle(await res.json());
      } catch (_) { /* transient: the next tick retries */ }
    };
    const handle = (st) => {
      render(box, st);
      if (st.finished && !finished) {
        finished = true;
        if (timer) clearInterval(timer);
        if (slow) clearInterval(slow);
        if (socket) socket.close();
        onDone?.(st);
      }
    };
    const poll = () => { if (!timer && !finished) timer = setInterval(fetchStatus, 500); };
    let socket = null;
    let slow = null;
    try {
      const proto = location.protocol === "https:" ? "wss:" : "ws:";
      socket = new WebSocket(`${proto}//${location.host}${wsPath}`);
      socket.onmessage = (e) => {
        const data = JSON.parse(e.data);
        if (data.type === "import.status") handle(data.status);
      };
      // The final state is also pushed, but a slow poll covers an event lost while reconnecting.
      socket.onopen = () => { slow = setInterval(fetchStatus, 2000); };
      socket.onerror = poll;
      socket.onclose = () => { if (!finished) poll(); };
    } catch (_) { poll(); }
    fetchStatus(); // the state right now, whatever the socket does
  }

  // When an upload finishes, the counts and the history on this page are brought up to date in place.
  async function refreshSummary() {
    try {
      const res = await fetch(location.href, { credentials: "same-origin" });
      const doc = new DOMParser().parseFromString(await res.text(), "text/html");
      for (const selector of [".tiles", "#import-history"]) {
        const fresh = doc.querySelector(selector);
        const current = document.querySelector(selector);
        if (fresh && current) current.replaceWith(fresh);
      }
    } catch (_) { /* the numbers refresh on the next visit */ }
  }

  // The import detail page follows its import.
  const detail = document.getElementById("import-detail");
  if (detail && detail.dataset.finished !== "1") {
    follow(detail, detail.dataset.statusUrl, detail.dataset.wsUrl);
  }

  // The upload form: drag and drop, upload with fetch, then follow the new import in place.
  const form = document.getElementById("upload-form");
  if (form) {
    const zone = document.getElementById("dropzone");
    const input = form.querySelector('input[type="file"]');
    const name = document.getElementById("dropzone-file");
    const showName = () => { name.textContent = input.files.length ? ` Selected: ${input.files[0].name}` : ""; };
    input.addEventListener("change", showName);
    ["dragenter", "dragover"].forEach((t) => zone.addEventListener(t, (e) => { e.preventDefault(); zone.classList.add("over"); }));
    ["dragleave", "drop"].forEach((t) => zone.addEventListener(t, (e) => { e.preventDefault(); zone.classList.remove("over"); }));
    zone.addEventListener("drop", (e) => {
      if (e.dataTransfer.files.length) { input.files = e.dataTransfer.files; showName(); form.requestSubmit(); }
    });
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      if (!input.files.length) { name.textContent = " Choose a file first."; return; }
      const box = document.getElementById("upload-progress");
      box.hidden = false;
      render(box, { filename: input.files[0].name, phase_label: "Uploading", percent: 0 });
      const res = await fetch(form.action, { method: "POST", body: new FormData(form), headers: { Accept: "application/json" }, credentials: "same-origin" });
      const data = await res.json();
      if (!res.ok) {
        const errors = Object.values(data.errors || {}).flat().map((x) => x.message).join(" ");
        render(box, { filename: input.files[0].name, phase_label: "Rejected", state: "failed", percent: 0, error_message: errors });
        return;
      }
      const statusUrl = form.dataset.statusUrl.replace(/\/0\/status\/$/, `/${data.id}/status/`);
      const wsUrl = form.dataset.wsUrl.replace(/\/0\/$/, `/${data.id}/`);
      follow(box, statusUrl, wsUrl, refreshSummary);
    });
  }

  // "What would the agent find?": results in place.
  const search = document.getElementById("search-preview");
  if (search) {
    search.addEventListener("submit", async (e) => {
      e.preventDefault();
      const url = new URL(search.action, location.href);
      url.searchParams.set("q", search.querySelector('[name="q"]').value);
      url.searchParams.set("partial", "1");
      const res = await fetch(url, { credentials: "same-origin" });
      document.getElementById("search-results").innerHTML = await res.text(); // our own escaped template
    });
  }
})();
