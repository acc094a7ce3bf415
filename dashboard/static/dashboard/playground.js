// The playground's "Write the right answer": the widget tells the page of each finished message
// (BizAgent.on("message")); the link under it opens the curated answer form filled from the last agent reply.
(function () {
  "use strict";
  const box = document.getElementById("playground-correct");
  if (!box) return;
  const link = box.querySelector("a[data-base]");

  function watch() {
    window.BizAgent.on("message", (m) => {
      if (m.role !== "agent" || m.id == null || m.status === "streaming") return;
      link.href = link.dataset.base + "?message=" + encodeURIComponent(String(m.id));
      box.hidden = false;
    });
  }

  // widget.js loads async: it may be there already, or announce itself later.
  if (window.BizAgent && window.BizAgent.on) watch();
  else window.addEventListener("bizagent:ready", watch, { once: true });
})();
