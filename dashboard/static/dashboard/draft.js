// Agent page: while the regression suite checks the draft, its card is fetched again every 2 s until the
// verdict is in (the page itself stays, so the playground's conversation is not lost).
"use strict";
(() => {
  const poll = async () => {
    const card = document.getElementById("draft");
    if (!card || card.dataset.state !== "running") return;
    try {
      const res = await fetch(card.dataset.statusUrl, { credentials: "same-origin" });
      if (res.ok) {
        const next = new DOMParser().parseFromString(await res.text(), "text/html").getElementById("draft");
        if (next) card.replaceWith(document.importNode(next, true));
      }
    } catch (_) { /* transient: the next tick retries */ }
    setTimeout(poll, 2000);
  };
  setTimeout(poll, 2000);
})();
