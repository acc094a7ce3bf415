// bizagent admin: small progressive enhancements; every page works without them.
"use strict";
document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const source = document.querySelector(button.dataset.copy);
  if (!source) return;
  navigator.clipboard?.writeText(source.textContent.trim()).then(() => {
    const label = button.textContent;
    button.textContent = "Copied";
    setTimeout(() => { button.textContent = label; }, 1500);
  });
});
document.addEventListener("submit", (event) => {
  const message = event.target.dataset?.confirm;
  if (message && !window.confirm(message)) event.preventDefault();
});
// Install page: the theme preview follows the form as you type.
(() => {
  const form = document.getElementById("theme-form");
  const box = document.getElementById("theme-preview");
  if (!form || !box) return;
  const value = (name) => form.querySelector(`[name="${name}"]`)?.value || "";
  const update = () => {
    box.style.setProperty("--tp-color", value("theme_color") || "#2563eb");
    box.classList.toggle("left", value("theme_position") === "left");
    const mode = value("theme_dark_mode");
    box.classList.toggle("dark", mode === "dark" || (mode === "auto" && matchMedia("(prefers-color-scheme: dark)").matches));
    box.querySelector(".tp-title").textContent = value("theme_title") || box.dataset.agentName;
    box.querySelector(".tp-agent").textContent = box.dataset.greeting;
    const avatar = value("theme_avatar_url");
    box.querySelector(".tp-avatar").style.backgroundImage = avatar.startsWith("https://") ? `url("${encodeURI(avatar)}")` : "";
  };
  form.addEventListener("input", update);
  form.addEventListener("change", update);
  update();
})();
