// Inbox: the list and the open thread refresh themselves (short polling: one small request every 2 s).
"use strict";
(() => {
  const list = document.getElementById("conversation-list");
  const thread = document.getElementById("thread");
  const every = 2000;
  if (list) {
    setInterval(async () => {
      try {
        const res = await fetch(list.dataset.url, { credentials: "same-origin" });
        if (res.ok) list.innerHTML = await res.text(); // our own escaped template
      } catch (_) { /* next tick */ }
    }, every);
  }
  if (thread) {
    const stateBadge = document.getElementById("conversation-state");
    let initialState = null;
    const tick = async () => {
      const url = new URL(thread.dataset.url, location.href);
      // Re-ask for the oldest message that is still streaming, so that it grows in place.
      const streaming = thread.querySelector('[data-status="streaming"]');
      url.searchParams.set("after", streaming ? String(Number(streaming.dataset.message) - 1) : thread.dataset.last);
      try {
        const res = await fetch(url, { credentials: "same-origin" });
        if (!res.ok) return;
        const data = await res.json();
        if (initialState === null) initialState = data.state;
        if (data.state !== initialState) { location.reload(); return; } // take over / hand back elsewhere
        if (stateBadge) stateBadge.textContent = data.state_label;
        for (const m of data.messages) {
          const tpl = document.createElement("template");
          tpl.innerHTML = m.html.trim();
          const node = tpl.content.firstElementChild;
          const existing = thread.querySelector(`[data-message="${m.id}"]`);
          if (existing) existing.replaceWith(node); else thread.append(node);
          if (m.id > Number(thread.dataset.last)) thread.dataset.last = String(m.id);
          thread.scrollTop = thread.scrollHeight;
        }
      } catch (_) { /* next tick */ }
    };
    thread.scrollTop = thread.scrollHeight;
    setInterval(tick, every);
  }
})();
