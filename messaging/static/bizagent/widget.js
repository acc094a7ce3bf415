/*! bizagent chat widget. Embed with one tag:
 *  <script src="https://HOST/widget.js" data-agent="PUBLIC_WIDGET_KEY" async></script>
 * Plain JavaScript, no build step. Rendered in a shadow root so that the page's CSS and ours never mix.
 * Security rule for this file: text from the model, the catalog, staff or the customer reaches the DOM only
 * through textContent / text nodes, and URLs only after an http(s) check. No HTML string is ever parsed here.
 * Docs: docs/widget.md (attributes, JS API, --bizagent-* CSS variables), docs/websocket-protocol.md.
 */
(() => {
  "use strict";
  if (window.BizAgent && window.BizAgent.version) return; // loaded twice: the first copy stays in charge

  const VERSION = "1";
  const script =
    document.currentScript || document.querySelector('script[data-agent][src*="widget.js"]');
  if (!script || !script.dataset.agent) {
    console.warn("bizagent: add data-agent=\"YOUR_WIDGET_KEY\" to the widget's <script> tag");
    return;
  }
  const KEY = script.dataset.agent;
  const opt = script.dataset;
  const BASE = (opt.host || new URL(script.src, location.href).origin).replace(/\/+$/, "");
  const WS_URL = BASE.replace(/^http/, "ws") + "/ws/chat/" + encodeURIComponent(KEY) + "/";
  // The admin's playground (data-preview: its signed token) is a visitor of its own, answered with the draft.
  const PREVIEW = opt.preview || null;
  const STORE_KEY = "bizagent:" + KEY + (PREVIEW ? ":playground" : "");
  // Photos go over HTTP (a socket frame is at most 64 KiB): docs/widget.md, "Photos".
  const UPLOAD_URL = BASE + "/api/widget/" + encodeURIComponent(KEY) + "/uploads";
  const PHOTO_TYPES = ["image/jpeg", "image/png", "image/webp"];
  // The server's text for a photo sent without a caption (messaging.media_reading), shown as a label.
  const PHOTO_TEXT = "[image]";
  const OPEN_KEY = "bizagent-open:" + KEY;

  // ---- small helpers --------------------------------------------------------------------------------
  const h = (tag, cls, text) => {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text != null) node.textContent = text;
    return node;
  };
  const SVG_NS = "http://www.w3.org/2000/svg";
  const icon = (d) => {
    const svg = document.createElementNS(SVG_NS, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    const path = document.createElementNS(SVG_NS, "path");
    path.setAttribute("d", d);
    svg.append(path);
    return svg;
  };
  const ICONS = {
    chat: "M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2z",
    close: "M6.4 5 12 10.6 17.6 5 19 6.4 13.4 12l5.6 5.6-1.4 1.4-5.6-5.6L6.4 19 5 17.6 10.6 12 5 6.4z",
    send: "M3 20.5 21.5 12 3 3.5v6.6L15 12 3 13.9z",
    attach: "M16.5 6v11.5a4 4 0 0 1-8 0V5a2.5 2.5 0 0 1 5 0v10.5a1 1 0 0 1-2 0V6H10v9.5a2.5 2.5 0 0 0 5 0V5a4 4 0 0 0-8 0v12.5a5.5 5.5 0 0 0 11 0V6h-1.5z",
    stop: "M7 7h10v10H7z",
    up: "M1 21h4V9H1v12zm22-11c0-1.1-.9-2-2-2h-6.31l.95-4.57.03-.32c0-.41-.17-.79-.44-1.06L14.17 1 7.59 7.59C7.22 7.95 7 8.45 7 9v10c0 1.1.9 2 2 2h9c.83 0 1.54-.5 1.84-1.22l3.02-7.05c.09-.23.14-.47.14-.73v-2z",
    down: "M15 3H6c-.83 0-1.54.5-1.84 1.22l-3.02 7.05c-.09.23-.14.47-.14.73v2c0 1.1.9 2 2 2h6.31l-.95 4.57-.03.32c0 .41.17.79.44 1.06L9.83 23l6.59-6.59c.36-.36.58-.86.58-1.41V5c0-1.1-.9-2-2-2zm4 0v12h4V3h-4z",
  };
  /** An http(s) URL, or null: no javascript:, data: or malformed URLs. Relative ones only with a base. */
  const safeUrl = (raw, base) => {
    if (typeof raw !== "string" || !raw) return null;
    try {
      const url = new URL(raw, base);
      return url.protocol === "https:" || url.protocol === "http:" ? url.href : null;
    } catch (_) {
      return null;
    }
  };
  const str = (v) => (v == null ? "" : String(v));
  const randomId = () => {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  };
  // localStorage can throw (blocked storage, sandboxed frames): the widget then works for this page view only.
  const storage = {
    get(area, key) {
      try {
        return JSON.parse(window[area].getItem(key) || "null");
      } catch (_) {
        return null;
      }
    },
    set(area, key, value) {
      try {
        window[area].setItem(key, JSON.stringify(value));
      } catch (_) {
        /* private mode or quota: keep going without persistence */
      }
    },
  };

  // ---- Markdown subset: paragraphs, lists, bold, links, inline code, headings as bold lines -------------
  const INLINE =
    /\*\*([^*\n]+?)\*\*|__([^_\n]+?)__|\[([^\]\n]+)\]\(([^()\s]+)\)|`([^`\n]+)`|(https?:\/\/[^\s<>()[\]"']*[^\s<>()[\]"'.,;:!?])/g;

  // Origins a link in a reply may point to: the shop's own page, this server, and the origins of the shop's
  // catalog links (its cards) and of its configured sites. A URL elsewhere in a reply (a poisoned feed's
  // "order at https://phish.example") is shown as text, never as a link on the shop's site.
  const linkOrigins = new Set([location.origin, new URL(BASE).origin]);
  const trustOriginOf = (raw) => {
    const url = safeUrl(raw, BASE);
    if (url) linkOrigins.add(new URL(url).origin);
  };

  const link = (href, text) => {
    const url = safeUrl(href);
    if (!url || !linkOrigins.has(new URL(url).origin)) return document.createTextNode(text);
    const a = h("a", null, text);
    a.href = url;
    a.target = "_blank";
    a.rel = "noopener noreferrer nofollow ugc";
    return a;
  };

  function inline(text, parent) {
    const re = new RegExp(INLINE.source, "g");
    let last = 0;
    let m;
    while ((m = re.exec(text))) {
      if (m.index > last) parent.append(text.slice(last, m.index));
      if (m[1] != null || m[2] != null) parent.append(h("strong", null, m[1] ?? m[2]));
      else if (m[3] != null) parent.append(link(m[4], m[3]));
      else if (m[5] != null) parent.append(h("code", null, m[5]));
      else parent.append(link(m[6], m[6]));
      last = re.lastIndex;
    }
    if (last < text.length) parent.append(text.slice(last));
  }

  function markdown(text, box) {
    box.replaceChildren();
    let para = null;
    let list = null;
    for (const raw of str(text).replace(/\r\n?/g, "\n").split("\n")) {
      const line = raw.trimEnd();
      if (!line.trim()) {
        para = list = null;
        continue;
      }
      const item = /^\s*(?:([-*+\u2022])|(\d{1,3})[.)])\s+(.*)$/.exec(line);
      if (item) {
        const tag = item[2] ? "OL" : "UL";
        if (!list || list.tagName !== tag) {
          list = h(tag.toLowerCase());
          if (item[2] && item[2] !== "1") list.start = Number(item[2]);
          box.append(list);
        }
        const li = h("li");
        inline(item[3], li);
        list.append(li);
        para = null;
        continue;
      }
      if (list && /^\s{2,}\S/.test(raw)) {
        list.lastChild.append(" ");
        inline(line.trim(), list.lastChild);
        continue;
      }
      list = null;
      const heading = /^#{1,6}\s+(.*)$/.exec(line);
      if (heading) {
        para = null;
        box.append(h("p", "heading", heading[1].replace(/\*\*/g, "")));
        continue;
      }
      if (para) para.append(h("br"));
      else box.append((para = h("p")));
      inline(line, para);
    }
  }

  // ---- colours ------------------------------------------------------------------------------------------
  const HEX = /^#?([0-9a-f]{3}|[0-9a-f]{6})$/i;
  function luminance(hex) {
    let v = hex.replace("#", "");
    if (v.length === 3) v = v.replace(/./g, "$&$&");
    const ch = [0, 2, 4].map((i) => {
      const c = parseInt(v.slice(i, i + 2), 16) / 255;
      return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * ch[0] + 0.7152 * ch[1] + 0.0722 * ch[2];
  }
  /** White or near-black text on the accent colour, whichever has the higher WCAG contrast ratio. */
  const onColour = (hex) => {
    const l = luminance(hex);
    return 1.05 / (l + 0.05) >= (l + 0.05) / 0.0611 ? "#ffffff" : "#111418";
  };

  // ---- styles (all scoped to the shadow root) -------------------------------------------------------------
  const CSS = `
:host{all:initial!important;display:block!important;position:static!important;width:0!important;height:0!important;margin:0!important;padding:0!important;border:0!important;transform:none!important;filter:none!important;contain:none!important;visibility:visible!important;opacity:1!important}
:host([hidden]){display:none!important}
.root{--a:var(--bizagent-accent,var(--ba-accent,#2563eb));--ac:var(--bizagent-accent-contrast,var(--ba-accent-contrast,#fff));--bg:var(--bizagent-background,#fff);--fg:var(--bizagent-text,#1a1d21);--mu:var(--bizagent-muted,#596170);--ag:var(--bizagent-agent-bubble,#f0f2f5);--bd:var(--bizagent-border,#dde1e6);--er:var(--bizagent-error,#b42318);--r:var(--bizagent-radius,16px);--z:var(--bizagent-z-index,2147483000);--ox:var(--bizagent-offset-x,20px);--oy:var(--bizagent-offset-y,20px);--sh:var(--bizagent-shadow,0 12px 40px rgba(16,24,40,.22));
font-family:var(--bizagent-font-family,system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif);font-size:var(--bizagent-font-size,15px);line-height:1.45;color:var(--fg);-webkit-font-smoothing:antialiased;text-align:start;direction:ltr}
.root.dark{--bg:var(--bizagent-background,#1c1f24);--fg:var(--bizagent-text,#eceef1);--mu:var(--bizagent-muted,#a3aab5);--ag:var(--bizagent-agent-bubble,#2a2e35);--bd:var(--bizagent-border,#3a3f48);--er:var(--bizagent-error,#ff8a80);--sh:var(--bizagent-shadow,0 12px 40px rgba(0,0,0,.55))}
*,*::before,*::after{box-sizing:border-box}
[hidden]{display:none!important}
button,textarea{font:inherit;color:inherit}
button{cursor:pointer}
:focus-visible{outline:2px solid var(--a);outline-offset:2px}
.sr{position:absolute!important;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap;margin:-1px}
.launcher{position:fixed;z-index:var(--z);bottom:var(--oy);right:var(--ox);width:60px;height:60px;border-radius:50%;border:0;padding:0;background:var(--a);color:var(--ac);box-shadow:var(--sh);display:flex;align-items:center;justify-content:center;transition:transform .15s}
.left .launcher,.left .panel{right:auto;left:var(--ox)}
.launcher:hover{transform:scale(1.06)}
.launcher svg{width:28px;height:28px;fill:currentColor}
.launcher img{width:100%;height:100%;border-radius:50%;object-fit:cover}
.badge{position:absolute;top:-2px;right:-2px;min-width:20px;height:20px;padding:0 5px;border-radius:10px;background:var(--er);color:#fff;font-size:12px;font-weight:700;line-height:20px;text-align:center}
.badge:empty{display:none}
.panel{position:fixed;z-index:var(--z);bottom:calc(var(--oy) + 72px);right:var(--ox);width:var(--bizagent-panel-width,380px);height:var(--bizagent-panel-height,min(620px,calc(100vh - 120px)));max-width:calc(100vw - 2 * var(--ox));background:var(--bg);color:var(--fg);border:1px solid var(--bd);border-radius:var(--r);box-shadow:var(--sh);display:flex;flex-direction:column;overflow:hidden}
header{display:flex;align-items:center;gap:10px;padding:12px 12px 12px 16px;background:var(--a);color:var(--ac)}
header .avatar{width:34px;height:34px;border-radius:50%;object-fit:cover;flex:none;background:rgba(255,255,255,.2)}
header .t{flex:1;min-width:0}
header h2{margin:0;font-size:16px;font-weight:650;line-height:1.25;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
header .st{font-size:12.5px;opacity:.92}
.icon{width:38px;height:38px;border:0;border-radius:10px;background:transparent;display:flex;align-items:center;justify-content:center;padding:0;flex:none}
.icon svg{width:22px;height:22px;fill:currentColor}
header .icon:hover{background:rgba(127,127,127,.22)}
.banner{padding:8px 14px;font-size:13.5px;background:var(--ag);border-bottom:1px solid var(--bd);display:flex;gap:10px;align-items:center}
.log{flex:1;overflow-y:auto;padding:14px;display:flex;flex-direction:column;gap:10px;overscroll-behavior:contain}
.msg{display:flex;flex-direction:column;align-items:flex-start;max-width:88%}
.msg.customer{align-self:flex-end;align-items:flex-end}
.msg.has-cards{max-width:100%}
.msg.note{align-self:center;max-width:100%;color:var(--mu);font-size:13px;text-align:center}
.disclosure{font-size:12.5px;color:var(--mu);margin:0 0 4px;unicode-bidi:plaintext}
.bubble{padding:9px 13px;border-radius:var(--r);background:var(--ag);overflow-wrap:anywhere;white-space:normal;text-align:start;unicode-bidi:plaintext}
.customer .bubble{background:var(--a);color:var(--ac);white-space:pre-wrap}
.bubble p{margin:0 0 8px}.bubble p:last-child{margin:0}
.bubble ul,.bubble ol{margin:4px 0 8px;padding-inline-start:22px}
.bubble li{margin:2px 0}
.bubble a{color:inherit;text-decoration:underline}
.bubble code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9em;background:rgba(127,127,127,.18);padding:1px 4px;border-radius:4px}
.bubble .heading{font-weight:700}
.streaming .bubble::after{content:"";display:inline-block;width:7px;height:1em;margin-inline-start:2px;vertical-align:text-bottom;background:currentColor;opacity:.5;animation:blink 1s steps(2) infinite}
.meta{font-size:12.5px;color:var(--mu);margin-top:3px;display:flex;gap:8px;align-items:center}
.meta.err{color:var(--er)}
.rate{display:flex;gap:2px;margin-top:2px}
.rate button{border:0;background:none;width:28px;height:28px;border-radius:8px;padding:0;color:var(--mu);display:flex;align-items:center;justify-content:center}
.rate button:hover{background:var(--ag)}
.rate button[aria-pressed="true"]{color:var(--a);background:var(--ag)}
.dark .rate button[aria-pressed="true"]{color:var(--fg)}
.rate svg{width:15px;height:15px;fill:currentColor}
.csat{align-self:center;display:flex;flex-direction:column;align-items:center;gap:6px;padding:10px 12px;border:1px solid var(--bd);border-radius:12px;font-size:14px}
.csat .scores{display:flex;gap:4px}
.csat button{min-width:36px;height:36px;border:1px solid var(--bd);border-radius:10px;background:var(--bg);font-weight:600}
.csat button:hover,.csat button[aria-pressed="true"]{background:var(--a);color:var(--ac);border-color:var(--a)}
.csat .ends{display:flex;justify-content:space-between;width:100%;font-size:12px;color:var(--mu)}
.link-btn{border:0;background:none;padding:0;color:var(--a);text-decoration:underline;font-size:12.5px;font-weight:600}
.dark .link-btn{color:inherit}
.cards{display:flex;gap:8px;overflow-x:auto;max-width:100%;margin-top:8px;padding-bottom:4px}
.card{flex:none;width:168px;border:1px solid var(--bd);border-radius:12px;overflow:hidden;background:var(--bg);color:var(--fg);text-decoration:none;display:flex;flex-direction:column}
.card img{width:100%;height:112px;object-fit:cover;background:var(--ag);display:block}
.card .ci{padding:8px 10px;display:flex;flex-direction:column;gap:2px}
.card .ct{font-weight:600;font-size:14px;line-height:1.3;overflow-wrap:anywhere}
.card .cp{font-size:14px}.card s{color:var(--mu);font-size:12.5px}
.card .ca{font-size:12.5px;color:var(--mu)}
.card .ca.in{color:#0f7b3f}.dark .card .ca.in{color:#6ad49b}
a.card:hover .ct{text-decoration:underline}
.typing{align-self:flex-start;display:flex;gap:4px;padding:12px 14px;border-radius:var(--r);background:var(--ag)}
.typing i{width:7px;height:7px;border-radius:50%;background:var(--mu);animation:dot 1.2s infinite ease-in-out}
.typing i:nth-child(2){animation-delay:.15s}.typing i:nth-child(3){animation-delay:.3s}
form{display:flex;gap:8px;align-items:flex-end;padding:10px;border-top:1px solid var(--bd);margin:0}
textarea{flex:1;resize:none;border:1px solid var(--bd);border-radius:12px;padding:9px 12px;background:var(--bg);min-height:42px;max-height:130px;line-height:1.4;font-size:max(16px,1em)}
textarea:focus-visible{outline-offset:0}
textarea::placeholder{color:var(--mu);opacity:1}
.send{background:var(--a);color:var(--ac);border-radius:12px;width:42px;height:42px}
.send:disabled{opacity:.45;cursor:default}
.attach{width:42px;height:42px;border-radius:12px;color:var(--mu)}
.attach:hover{background:var(--ag);color:var(--fg)}
.attach[aria-disabled="true"]{opacity:.45;cursor:default}
.bubble .photo{display:block;width:220px;max-width:100%;max-height:260px;object-fit:cover;border-radius:calc(var(--r) - 6px);background:rgba(127,127,127,.18)}
.bubble .cap{display:block;padding:6px 9px 4px}
.customer .bubble.with-photo{padding:4px}
.uploading .photo{opacity:.6}
.foot{font-size:11.5px;color:var(--mu);text-align:center;padding:0 0 6px}
@keyframes dot{0%,80%,100%{transform:translateY(0);opacity:.5}40%{transform:translateY(-4px);opacity:1}}
@keyframes blink{50%{opacity:0}}
@media (max-width:480px){.panel{inset:0!important;width:100%!important;max-width:none;height:100%!important;border-radius:0;border:0}.open .launcher{display:none}}
@media (prefers-reduced-motion:reduce){*{animation:none!important;transition:none!important}}
`;

  // ---- plain words for the server's error codes -----------------------------------------------------------
  const ERRORS = {
    rate_limited: "You're sending messages quickly. Please wait a minute, then try again.",
    business_rate_limited: "We're very busy right now. Please try again in a minute.",
    too_long: "That message is too long. Please shorten it and try again.",
    too_large: "That message is too long. Please shorten it and try again.",
    empty_message: "Please type a message first.",
    feedback_rate_limited: "Thanks! Please wait a minute before rating again.",
    message_not_found: "That reply can't be rated.",
    csat_not_found: "This conversation can't be rated any more.",
    too_many_connections: "This chat is open in too many windows. Close one and try again.",
    origin_not_allowed: "This chat isn't available on this website.",
    unknown_widget: "This chat isn't set up correctly (unknown widget key).",
  };
  // A refused photo upload (docs/widget.md, "Photos"); other codes are the socket's (ERRORS).
  const UPLOAD_ERRORS = {
    too_large: (mb) => "That photo is too large. Please choose one under " + mb + " MB.",
    not_an_image: () => "Please choose a JPEG, PNG or WebP photo.",
    upload_rate_limited: () => "You're sending photos quickly. Please wait a minute, then try again.",
    bad_visitor_token: () => "This chat session has expired. Please reload the page.",
    network: () => "The photo couldn't be sent. Check your connection and try again.",
  };
  // Sending the same photo again cannot help after these.
  const FINAL_UPLOAD = new Set(["too_large", "not_an_image", "bad_visitor_token"]);
  // Close codes after which reconnecting cannot help (docs/websocket-protocol.md).
  const FINAL_CLOSE = { 4403: "origin_not_allowed", 4404: "unknown_widget" };
  const plainError = (code, detail) =>
    ERRORS[code] || (detail ? str(detail) : "Something went wrong. Please try again.");

  // ---- the element --------------------------------------------------------------------------------------
  class Widget extends HTMLElement {
    constructor() {
      super();
      this.state = {
        open: false,
        agent: { name: "", greeting: "", theme: {} },
        messages: new Map(), // id -> {id, role, text, status, seq, cards, el, ahead:Map}
        pending: new Map(), // client_id -> {text, el}
        awaiting: false, // a reply is expected and no text of it has arrived
        streamingId: null,
        unread: 0,
        ready: false,
        originAllowed: true,
      };
      const saved = storage.get("localStorage", STORE_KEY) || {};
      this.visitorToken = saved.visitor_token || null;
      this.conversationId = saved.conversation_id || null;
      this.contact = saved.contact || null;
      this.uploadMaxBytes = 5 * 1024 * 1024; // the server's MESSAGE_MEDIA_MAX_BYTES (its config says)
      this.listeners = {};
      this.ws = null;
      this.attempt = 0;
      this.retryTimer = null;
      this.build();
    }

    // -- DOM ---------------------------------------------------------------------------------------------
    build() {
      const root = this.attachShadow({ mode: "open" });
      const style = h("style", null, CSS);
      const box = (this.box = h("div", "root"));
      const launcher = (this.launcher = h("button", "launcher"));
      launcher.type = "button";
      launcher.setAttribute("aria-haspopup", "dialog");
      launcher.setAttribute("aria-expanded", "false");
      launcher.setAttribute("aria-controls", "bizagent-panel");
      launcher.setAttribute("aria-label", "Open chat");
      this.launcherIcon = icon(ICONS.chat);
      this.badge = h("span", "badge");
      this.badge.setAttribute("aria-hidden", "true");
      launcher.append(this.launcherIcon, this.badge);
      launcher.addEventListener("click", () => this.toggle());

      const panel = (this.panel = h("div", "panel"));
      panel.id = "bizagent-panel";
      panel.hidden = true;
      panel.setAttribute("role", "dialog");
      panel.setAttribute("aria-modal", "false");

      const header = h("header");
      this.avatar = h("img", "avatar");
      this.avatar.alt = "";
      this.avatar.hidden = true;
      const titles = h("div", "t");
      this.heading = h("h2", null, opt.title || "Chat");
      this.heading.id = "bizagent-title";
      this.status = h("div", "st", "");
      titles.append(this.heading, this.status);
      panel.setAttribute("aria-labelledby", "bizagent-title");
      const close = h("button", "icon");
      close.type = "button";
      close.setAttribute("aria-label", "Close chat");
      close.append(icon(ICONS.close));
      close.addEventListener("click", () => this.close());
      header.append(this.avatar, titles, close);

      this.banner = h("div", "banner");
      this.banner.hidden = true;
      this.banner.setAttribute("role", "alert");

      const log = (this.log = h("div", "log"));
      log.setAttribute("role", "log");
      log.setAttribute("aria-label", "Conversation");
      // Streaming text would be read out token by token: the log itself is silent and finished messages
      // are announced once through the live region below.
      log.setAttribute("aria-live", "off");
      log.tabIndex = 0;
      this.greeting = h("div", "msg agent greeting");
      this.greeting.hidden = true;
      this.typing = h("div", "typing");
      this.typing.hidden = true;
      this.typing.setAttribute("role", "status");
      this.typing.setAttribute("aria-label", "The assistant is typing");
      this.typing.append(h("i"), h("i"), h("i"));
      log.append(this.greeting, this.typing);

      this.live = h("div", "sr");
      this.live.setAttribute("aria-live", "polite");
      this.live.setAttribute("aria-atomic", "true");

      const form = (this.form = h("form"));
      form.noValidate = true;
      const label = h("label", "sr", "Your message");
      label.htmlFor = "bizagent-input";
      const input = (this.input = h("textarea"));
      input.id = "bizagent-input";
      input.rows = 1;
      input.maxLength = 2000; // the server's default CHAT_MAX_MESSAGE_CHARS; it answers too_long above its own
      input.dir = "auto";
      input.placeholder = opt.placeholder || "Type your message\u2026";
      input.setAttribute("enterkeyhint", "send");
      input.addEventListener("keydown", (e) => {
        if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
          e.preventDefault();
          this.submit();
        }
      });
      input.addEventListener("input", () => this.resizeInput());
      // A photo ("do you have this?"): the button opens the system's picker; what was typed is its caption.
      const attach = (this.attachBtn = h("button", "icon attach"));
      attach.type = "button";
      attach.setAttribute("aria-label", "Send a photo");
      attach.title = "Send a photo";
      attach.append(icon(ICONS.attach));
      attach.addEventListener("click", () => this.pickPhoto());
      const picker = (this.picker = h("input"));
      picker.type = "file";
      picker.accept = PHOTO_TYPES.join(",");
      picker.hidden = true;
      picker.tabIndex = -1;
      picker.setAttribute("aria-hidden", "true");
      picker.addEventListener("change", () => this.photoChosen());
      const send = (this.sendBtn = h("button", "icon send"));
      send.type = "submit";
      send.setAttribute("aria-label", "Send");
      send.append(icon(ICONS.send));
      form.addEventListener("submit", (e) => {
        e.preventDefault();
        if (this.state.streamingId != null) this.stop();
        else this.submit();
      });
      form.append(label, attach, picker, input, send);

      panel.append(header, this.banner, log, form, this.live);
      panel.addEventListener("keydown", (e) => {
        if (e.key === "Escape") {
          e.stopPropagation();
          this.close();
        }
      });
      box.append(launcher, panel);
      root.append(style, box);
      this.applyTheme({});
      this.updateSend();
    }

    connectedCallback() {
      this.applyScheme();
      this.dataset.connection = this.connection || "idle";
    }

    resizeInput() {
      const input = this.input;
      input.style.height = "auto";
      input.style.height = Math.min(input.scrollHeight + 2, 130) + "px";
    }

    applyTheme(theme) {
      const t = theme || {};
      const colour = str(opt.color || t.color || t.colour || t.primary_color);
      const box = this.box;
      if (HEX.test(colour)) {
        const hex = colour.startsWith("#") ? colour : "#" + colour;
        box.style.setProperty("--ba-accent", hex);
        box.style.setProperty("--ba-accent-contrast", onColour(hex));
      }
      const position = str(opt.position || t.position);
      box.classList.toggle("left", /left/.test(position));
      const mode = str(opt.theme || t.dark_mode || t.mode || t.scheme || "auto");
      this.scheme = mode === "dark" || mode === "light" ? mode : "auto";
      this.applyScheme();
      const title = opt.title || t.title || this.state.agent.name;
      if (title) this.heading.textContent = title;
      const avatar = safeUrl(str(opt.avatar || t.avatar_url || t.avatar || t.launcher_icon_url));
      if (avatar) {
        this.avatar.src = avatar;
        this.avatar.hidden = false;
        if (!this.launcherImg) {
          this.launcherImg = h("img");
          this.launcherImg.alt = "";
          this.launcherIcon.replaceWith(this.launcherImg);
        }
        this.launcherImg.src = avatar;
      }
    }

    applyScheme() {
      if (!this.mq) {
        this.mq = window.matchMedia ? matchMedia("(prefers-color-scheme: dark)") : null;
        if (this.mq && this.mq.addEventListener) this.mq.addEventListener("change", () => this.applyScheme());
      }
      const dark = this.scheme === "dark" || (this.scheme === "auto" && !!(this.mq && this.mq.matches));
      this.box.classList.toggle("dark", dark);
      // Host attributes (for tests and page CSS) only once in the document: a constructor may not set them.
      if (this.isConnected) this.dataset.scheme = dark ? "dark" : "light";
    }

    setAgent(agent) {
      if (!agent) return;
      const a = this.state.agent;
      a.name = str(agent.name) || a.name;
      a.greeting = agent.greeting != null ? str(agent.greeting) : a.greeting;
      a.theme = agent.theme || a.theme;
      this.applyTheme(a.theme);
      this.launcher.setAttribute("aria-label", "Open chat" + (a.name ? " with " + a.name : ""));
      this.greeting.hidden = !a.greeting;
      if (a.greeting) {
        const bubble = h("div", "bubble");
        bubble.dir = "auto";
        markdown(a.greeting, bubble);
        this.greeting.replaceChildren(bubble);
      }
    }

    setStatus(text) {
      this.status.textContent = text;
      if (this.isConnected) this.dataset.connection = this.connection || "idle";
    }

    showBanner(text, action, onAction) {
      if (!text) {
        this.banner.hidden = true;
        this.banner.replaceChildren();
        return;
      }
      const words = h("span", null, text);
      this.banner.replaceChildren(words);
      if (action) {
        const btn = h("button", "link-btn", action);
        btn.type = "button";
        btn.addEventListener("click", onAction);
        this.banner.append(btn);
      }
      this.banner.hidden = false;
    }

    announce(text) {
      // Clearing first makes screen readers announce the same words twice in a row too.
      this.live.textContent = "";
      setTimeout(() => (this.live.textContent = text), 30);
    }

    nearBottom() {
      const log = this.log;
      return log.scrollHeight - log.scrollTop - log.clientHeight < 80;
    }

    scrollDown(force) {
      if (force || this.stick) this.log.scrollTop = this.log.scrollHeight;
    }

    // -- messages ------------------------------------------------------------------------------------------
    /** The DOM node of one message: a bubble (dir=auto for RTL text), then cards and status lines. */
    messageNode(role) {
      const node = h("div", "msg " + (role === "customer" ? "customer" : "agent"));
      node.dataset.role = role;
      const bubble = h("div", "bubble");
      bubble.dir = "auto";
      const who = h("span", "sr", role === "customer" ? "You said: " : role === "staff" ? "Staff: " : "Assistant: ");
      node.append(who, bubble);
      return node;
    }

    insert(node) {
      this.stick = this.nearBottom();
      this.log.insertBefore(node, this.typing);
      this.scrollDown();
    }

    upsert(m) {
      const id = m.id;
      let msg = this.state.messages.get(id);
      const fresh = !msg;
      if (fresh) {
        // A message we sent ourselves comes back with our client_id: adopt the optimistic node.
        const mine = m.client_id && this.state.pending.get(m.client_id);
        msg = { id, role: m.role, text: "", status: "", seq: 0, cards: [], ahead: new Map() };
        msg.el = mine ? mine.el : this.messageNode(m.role);
        if (mine) {
          this.state.pending.delete(m.client_id);
          msg.photo = mine.photo;
          msg.el.classList.remove("uploading");
          msg.el.querySelector(".meta")?.remove();
        }
        msg.el.dataset.id = id;
        this.state.messages.set(id, msg);
        if (!mine) this.insert(msg.el);
      }
      msg.role = m.role || msg.role;
      if (m.status) msg.status = m.status;
      if (typeof m.seq === "number" && m.seq > msg.seq) msg.seq = m.seq;
      if (m.text != null && (fresh || msg.status !== "streaming" || str(m.text).length >= msg.text.length)) {
        msg.text = str(m.text);
      }
      if (Array.isArray(m.cards)) msg.cards = m.cards;
      if (typeof m.disclosure === "string") msg.disclosure = m.disclosure;
      if (m.rating === "up" || m.rating === "down") msg.rating = m.rating;
      if (Array.isArray(m.media) && m.media[0] && typeof m.media[0] === "object") msg.media = m.media[0];
      this.render(msg);
      return msg;
    }

    render(msg) {
      const el = msg.el;
      const bubble = el.querySelector(".bubble");
      for (const c of msg.cards) if (c && typeof c === "object") trustOriginOf(c.url || c.link);
      if (msg.role === "customer") this.customerBubble(bubble, msg.text, msg.photo, msg.media);
      else markdown(msg.text, bubble);
      bubble.hidden = !msg.text && msg.status === "streaming";
      // The AI disclosure (an agent reply's first in a while) stands above the answer, as a note of its own.
      if (msg.disclosure && !el.querySelector(".disclosure")) {
        const note = h("p", "disclosure", msg.disclosure);
        note.dir = "auto";
        el.prepend(note);
      }
      el.classList.toggle("streaming", msg.status === "streaming" && !!msg.text);
      el.querySelector(".cards")?.remove();
      el.querySelectorAll(".meta, .rate").forEach((n) => n.remove());
      el.classList.toggle("has-cards", msg.cards.length > 0);
      if (msg.cards.length) el.append(this.cardsNode(msg.cards));
      if (msg.status === "cut") el.append(h("div", "meta", "The reply was stopped before it finished."));
      if (msg.status === "failed") {
        // The server's failed text already apologises; without one, say it here.
        const meta = h("div", "meta err", msg.text ? "" : "Sorry, the assistant couldn't finish this reply.");
        const q = this.questionFor(msg);
        if (q) meta.append(this.retryButton(() => this.send(q)));
        el.append(meta);
      }
      if (msg.role === "agent" && msg.text && (msg.status === "done" || msg.status === "cut")) {
        el.append(this.ratingNode(msg));
      }
    }

    /** A customer's bubble: their words, or the photo they sent from this page (its own file, shown at once)
     * with its caption. After a reload the file is gone: the server says the message carried a photo or a
     * voice note (``media``), shown as a label with the words sent with it, not the question the agent read. */
    customerBubble(bubble, text, photo, media) {
      bubble.classList.toggle("with-photo", !!photo);
      if (!photo && media) {
        const label = media.kind === "audio" ? "\u{1F3A4} Voice message" : "\u{1F4F7} Photo";
        bubble.replaceChildren(h("span", "cap", label));
        if (media.caption) bubble.append(h("span", "cap", str(media.caption)));
        return;
      }
      if (!photo) {
        bubble.textContent = text === PHOTO_TEXT ? "\u{1F4F7} Photo" : text;
        return;
      }
      if (!photo.img) {
        const img = (photo.img = h("img", "photo"));
        img.alt = "Your photo";
        // A page whose Content-Security-Policy has no blob: in img-src: a label instead of a broken image.
        img.addEventListener("error", () => img.replaceWith(h("span", "cap", "\u{1F4F7} Photo")));
        img.src = photo.url;
      }
      bubble.replaceChildren(photo.img);
      if (photo.caption) bubble.append(h("span", "cap", photo.caption));
    }

    /** Thumbs up and down under a finished agent reply; the pressed one is the rating the server stored. */
    ratingNode(msg) {
      const row = h("div", "rate");
      row.setAttribute("role", "group");
      row.setAttribute("aria-label", "Rate this reply");
      for (const [rating, label] of [["up", "Helpful"], ["down", "Not helpful"]]) {
        const btn = h("button");
        btn.type = "button";
        btn.dataset.rating = rating;
        btn.setAttribute("aria-label", label);
        btn.title = label;
        btn.setAttribute("aria-pressed", String(msg.rating === rating));
        btn.append(icon(ICONS[rating]));
        btn.addEventListener("click", () => this.rate(msg, rating));
        row.append(btn);
      }
      return row;
    }

    rate(msg, rating) {
      if (!this.isOpen() || msg.rating === rating) return;
      this.frame({ type: "feedback", message_id: msg.id, rating });
    }

    questionFor(msg) {
      // The customer message just before this reply, to ask again.
      let node = msg.el.previousElementSibling;
      while (node && node.dataset.role !== "customer") node = node.previousElementSibling;
      return node ? node.querySelector(".bubble").textContent : null;
    }

    retryButton(fn) {
      const btn = h("button", "link-btn", "Try again");
      btn.type = "button";
      btn.addEventListener("click", fn);
      return btn;
    }

    cardsNode(cards) {
      const row = h("div", "cards");
      row.setAttribute("role", "list");
      row.setAttribute("aria-label", "Products");
      for (const c of cards.slice(0, 10)) {
        if (!c || typeof c !== "object") continue;
        // Catalog URLs may be paths on this server (the demo catalog's images): resolve them against it.
        const href = safeUrl(c.url || c.link, BASE);
        const card = h(href ? "a" : "div", "card");
        card.setAttribute("role", "listitem");
        if (href) {
          card.href = href;
          card.target = "_blank";
          card.rel = "noopener noreferrer";
        }
        const img = safeUrl(c.image_url || c.image, BASE);
        if (img) {
          const pic = h("img");
          pic.addEventListener("error", () => pic.remove()); // no broken-image icon for a dead link
          pic.src = img;
          pic.alt = "";
          pic.loading = "lazy";
          pic.referrerPolicy = "no-referrer";
          card.append(pic);
        }
        const info = h("div", "ci");
        info.append(h("span", "ct", str(c.title || c.name)));
        const onSale = c.sale_price != null && c.sale_price !== "";
        const price = this.money(onSale ? c.sale_price : c.price, c.currency);
        if (price) {
          const p = h("span", "cp", price);
          const was = onSale ? this.money(c.price, c.currency) : "";
          if (was && was !== price) p.append(" ", h("s", null, was));
          info.append(p);
        } else if (c.price === null && !onSale) {
          // An item the catalog lists with no price ("on request" in its feed); a card without the key says nothing.
          info.append(h("span", "cp", "Price on request"));
        }
        const avail = str(c.availability_label || c.availability).replace(/_/g, " ");
        if (avail) {
          const a = h("span", "ca", avail.charAt(0).toUpperCase() + avail.slice(1));
          if (/^in[ _]stock$/i.test(str(c.availability))) a.classList.add("in");
          info.append(a);
        }
        card.append(info);
        row.append(card);
      }
      return row;
    }

    money(value, currency) {
      if (value == null || value === "") return "";
      const n = Number(value);
      if (Number.isFinite(n) && /^[A-Z]{3}$/.test(str(currency))) {
        try {
          return new Intl.NumberFormat(document.documentElement.lang || undefined, {
            style: "currency",
            currency,
          }).format(n);
        } catch (_) {
          /* unknown currency code: fall through */
        }
      }
      return (str(value) + " " + str(currency)).trim();
    }

    note(text) {
      const node = h("div", "msg note", text);
      node.setAttribute("role", "note");
      this.insert(node);
      this.announce(text);
    }

    setAwaiting(on) {
      this.state.awaiting = on;
      this.typing.hidden = !on;
      if (on) this.scrollDown(true);
      this.updateSend();
    }

    busy() {
      return this.state.streamingId != null || this.state.awaiting;
    }

    setStreaming(id) {
      this.state.streamingId = id;
      this.updateSend();
    }

    updateSend() {
      const streaming = this.busy();
      // Not disabled: a disabled button drops the keyboard focus it has. A click while it cannot send is ignored.
      this.attachBtn.setAttribute("aria-disabled", String(streaming || !this.visitorToken || this.connection === "refused"));
      const btn = this.sendBtn;
      btn.classList.toggle("stop", streaming);
      btn.setAttribute("aria-label", streaming ? "Stop the reply" : "Send");
      btn.replaceChildren(icon(streaming ? ICONS.stop : ICONS.send));
    }

    // -- sending ---------------------------------------------------------------------------------------------
    submit() {
      if (this.busy()) return;
      const text = this.input.value.trim();
      if (!text) return;
      this.input.value = "";
      this.resizeInput();
      this.send(text);
    }

    send(text, clientId) {
      const id = clientId || randomId();
      let entry = this.state.pending.get(id);
      if (!entry) {
        const el = this.messageNode("customer");
        el.querySelector(".bubble").textContent = text;
        entry = { text, el };
        this.state.pending.set(id, entry);
        this.stick = true;
        this.insert(el);
      }
      entry.failed = false;
      entry.el.querySelectorAll(".meta").forEach((n) => n.remove());
      this.setAwaiting(true);
      this.emit("message", { role: "customer", text });
      this.frame({ type: "message", client_id: id, text });
      if (!this.isOpen()) this.connect();
    }

    pickPhoto() {
      if (this.attachBtn.getAttribute("aria-disabled") !== "true") this.picker.click();
    }

    photoChosen() {
      const file = this.picker.files && this.picker.files[0];
      this.picker.value = ""; // the same file may be chosen again
      if (!file) return;
      const mb = Math.round((this.uploadMaxBytes / (1024 * 1024)) * 10) / 10;
      if (!PHOTO_TYPES.includes(file.type)) return this.note(UPLOAD_ERRORS.not_an_image());
      if (file.size > this.uploadMaxBytes) return this.note(UPLOAD_ERRORS.too_large(mb));
      const caption = this.input.value.trim();
      this.input.value = "";
      this.resizeInput();
      this.input.focus({ preventScroll: true });
      this.upload(file, caption);
    }

    /** Send a photo over HTTP; the server tells this visitor's sockets (message.created), and the reply streams
     * on the socket as any reply. A retry sends the same client_message_id: stored once. */
    upload(file, caption, clientId) {
      const id = clientId || randomId();
      let entry = this.state.pending.get(id);
      if (!entry) {
        const el = this.messageNode("customer");
        entry = { text: caption, el, photo: { url: URL.createObjectURL(file), file, caption } };
        this.customerBubble(el.querySelector(".bubble"), caption, entry.photo);
        this.state.pending.set(id, entry);
        this.stick = true;
        this.insert(el);
      }
      entry.failed = false;
      entry.el.querySelectorAll(".meta").forEach((n) => n.remove());
      entry.el.classList.add("uploading");
      const sending = h("div", "meta", "Sending photo\u2026");
      sending.setAttribute("role", "status");
      entry.el.append(sending);
      this.setAwaiting(true);
      this.emit("message", { role: "customer", text: caption, photo: true });
      const body = new FormData();
      body.append("file", file, file.name || "photo");
      body.append("caption", caption);
      body.append("client_message_id", id);
      const headers = { "X-Bizagent-Visitor": this.visitorToken };
      if (PREVIEW) headers["X-Bizagent-Preview"] = PREVIEW;
      fetch(UPLOAD_URL, { method: "POST", mode: "cors", credentials: "omit", headers, body })
        .then((r) => r.json().then((data) => [r.status, data], () => [r.status, {}]))
        .then(([status, data]) => {
          if (status === 202 && data.message) this.on_message_created({ message: data.message });
          else this.uploadFailed(id, data.code || (status === 413 ? "too_large" : ""), data.detail);
        })
        .catch(() => this.uploadFailed(id, "network"));
      // The reply comes on the socket: open it if it is not (the visitor's sockets are told of the photo).
      if (!this.isOpen()) this.connect();
    }

    uploadFailed(id, code, detail) {
      const p = this.state.pending.get(id);
      if (!p) return;
      const mb = Math.round((this.uploadMaxBytes / (1024 * 1024)) * 10) / 10;
      const words = UPLOAD_ERRORS[code] ? UPLOAD_ERRORS[code](mb) : plainError(code, detail);
      p.failed = true;
      p.el.classList.remove("uploading");
      p.el.querySelectorAll(".meta").forEach((n) => n.remove());
      const meta = h("div", "meta err", words);
      if (!FINAL_UPLOAD.has(code)) meta.append(this.retryButton(() => this.upload(p.photo.file, p.photo.caption, id)));
      p.el.append(meta);
      this.setAwaiting(false);
      this.announce(words);
      this.emit("error", { code, detail: words });
    }

    stop() {
      const id = this.state.streamingId;
      this.frame(id != null ? { type: "stop", message_id: id } : { type: "stop" });
    }

    isOpen() {
      return !!this.ws && this.ws.readyState === 1 && this.state.ready;
    }

    frame(data) {
      // Messages typed while offline wait in `pending` and are sent again after the next `ready`.
      if (this.isOpen()) this.ws.send(JSON.stringify(data));
    }

    // -- connection ------------------------------------------------------------------------------------------
    connect() {
      // Even when the config says this origin is not allowed, try once: the server is the authority (and
      // the config may be cached); its refusal closes with 4403 and ends the retries.
      if (this.ws && this.ws.readyState <= 1) return;
      if (this.connection === "refused") return;
      clearTimeout(this.retryTimer);
      this.connection = "connecting";
      this.setStatus(this.attempt ? "Reconnecting\u2026" : "Connecting\u2026");
      let ws;
      try {
        ws = new WebSocket(WS_URL);
      } catch (_) {
        return this.retry();
      }
      this.ws = ws;
      this.state.ready = false;
      ws.onopen = () => {
        const lastSeq = {};
        for (const m of this.state.messages.values()) if (m.status === "streaming") lastSeq[m.id] = m.seq;
        ws.send(
          JSON.stringify({
            type: "hello",
            visitor_token: this.visitorToken,
            conversation_id: this.conversationId,
            last_seq: Object.keys(lastSeq).length ? lastSeq : null,
            contact: this.contact,
            preview: PREVIEW,
          })
        );
      };
      ws.onmessage = (e) => {
        let data;
        try {
          data = JSON.parse(e.data);
        } catch (_) {
          return;
        }
        if (data && typeof data.type === "string") this.handle(data);
      };
      ws.onclose = (e) => {
        if (this.ws !== ws) return;
        this.ws = null;
        const wasReady = this.state.ready;
        this.state.ready = false;
        this.connection = "closed";
        if (FINAL_CLOSE[e.code]) return this.refused(FINAL_CLOSE[e.code]);
        if (!wasReady && !this.state.originAllowed) return this.refused("origin_not_allowed");
        this.retry(e.code === 4429 ? 5 : 0);
      };
    }

    refused(code) {
      // The server said no for good (origin not allowed, unknown key): say so once and stop retrying.
      // A refused handshake from a proxy looks like any network failure (1006); the public config's
      // origin_allowed covers that case.
      this.connection = "refused";
      this.setStatus("");
      this.setAwaiting(false); // also marks the photo button as unusable
      this.showBanner(ERRORS[code]);
    }

    retry(atLeast) {
      this.attempt = Math.max(this.attempt + 1, atLeast || 0);
      // Exponential back-off with jitter, capped at 30 s: a server that restarts is not stampeded.
      const delay = Math.min(30000, 500 * 2 ** Math.min(this.attempt - 1, 6)) * (0.6 + Math.random() * 0.4);
      this.setStatus("Reconnecting\u2026");
      if (this.attempt >= 3 && !atLeast) {
        this.showBanner("Connection lost. Trying again\u2026", "Retry now", () => this.reconnectNow());
      }
      clearTimeout(this.retryTimer);
      this.retryTimer = setTimeout(() => this.connect(), delay);
    }

    reconnectNow() {
      clearTimeout(this.retryTimer);
      this.connect();
    }

    persist() {
      storage.set("localStorage", STORE_KEY, {
        visitor_token: this.visitorToken,
        conversation_id: this.conversationId,
        contact: this.contact,
      });
    }

    // -- server frames: one handler per type -------------------------------------------------------------------
    handle(f) {
      const fn = this["on_" + f.type.replace(/\./g, "_")];
      if (fn) fn.call(this, f);
    }

    on_ready(f) {
      this.state.ready = true;
      this.attempt = 0;
      this.connection = "open";
      this.setStatus(this.state.agent.name && opt.title ? this.state.agent.name : "");
      this.showBanner("");
      if (f.visitor_token) this.visitorToken = f.visitor_token;
      if (f.conversation_id != null) this.conversationId = f.conversation_id;
      this.persist();
      this.setAgent(f.agent);
      let streaming = null;
      let awaiting = false;
      for (const m of f.history || []) {
        const msg = this.upsert(m);
        if (msg.status === "streaming") streaming = msg.id;
        // Only a customer message still waiting for its answer at the end of the history means "typing".
        awaiting = m.role === "customer" && ["received", "pending", "preparing"].includes(m.status);
      }
      this.setStreaming(streaming);
      // Messages typed while disconnected: send them now (the client_id makes a repeat harmless).
      for (const [id, p] of this.state.pending) {
        // A photo being uploaded goes over HTTP, not as a frame.
        if (!p.failed && !p.photo) this.ws.send(JSON.stringify({ type: "message", client_id: id, text: p.text }));
      }
      this.setAwaiting(
        [...this.state.pending.values()].some((p) => !p.failed) || (streaming != null && !this.state.messages.get(streaming).text) || awaiting
      );
      // A conversation closed while the visitor was away: "How did we do?" now, once.
      if (typeof f.csat_conversation_id === "number" && !this.shadowRoot.querySelector('.csat[data-conversation="' + f.csat_conversation_id + '"]')) {
        this.note("Your last conversation was closed. Write again any time to start a new one.");
        this.insert(this.csatNode(f.csat_conversation_id));
      }
      this.stick = true;
      this.scrollDown(true);
      this.emit("ready", { conversation_id: this.conversationId });
    }

    on_message_created(f) {
      const m = f.message || {};
      if (m.id == null) return;
      if (m.conversation_id != null && m.conversation_id !== this.conversationId) {
        // The first message opens the conversation: remember it for the next page and tab.
        this.conversationId = m.conversation_id;
        this.persist();
      }
      const known = this.state.messages.has(m.id);
      const msg = this.upsert(m);
      if (msg.role === "customer") {
        // The server stored our message; if a reply is coming the indicator is already on.
        return;
      }
      if (msg.status === "streaming") {
        this.setStreaming(msg.id);
        this.setAwaiting(!msg.text);
      } else if (!known && (msg.role === "staff" || msg.status === "done")) {
        // A staff reply, or a note the server wrote whole (about a photo it could not look at): no delta follows.
        if (msg.role === "agent") this.setAwaiting(false);
        this.arrived(msg);
      }
    }

    on_delta(f) {
      const msg = this.state.messages.get(f.message_id) || this.upsert({ id: f.message_id, role: "agent", status: "streaming" });
      if (msg.status !== "streaming" || typeof f.seq !== "number" || f.seq <= msg.seq) return; // a repeat
      msg.ahead.set(f.seq, f);
      // Deltas can arrive out of order (channels_redis#89): apply them strictly in seq order. Seq 1 and a
      // `reset` delta start the text over (a reply retried on another endpoint restarts).
      while (msg.ahead.has(msg.seq + 1)) {
        msg.seq += 1;
        const d = msg.ahead.get(msg.seq);
        msg.ahead.delete(msg.seq);
        msg.text = (msg.seq === 1 || d.reset ? "" : msg.text) + str(d.text);
      }
      if (msg.ahead.size && !msg.gapTimer) {
        // A gap that stays open means a dropped event: reconnect, and `hello.last_seq` fetches the rest.
        msg.gapTimer = setTimeout(() => {
          msg.gapTimer = null;
          if (msg.ahead.size && this.ws) this.ws.close();
        }, 1500);
      }
      this.setStreaming(msg.id);
      msg.el.classList.add("streaming"); // at once, not at the next frame: the state is visible immediately
      if (this.state.awaiting) this.setAwaiting(false);
      this.stick = this.nearBottom();
      this.scheduleRender(msg);
    }

    scheduleRender(msg) {
      // Re-render at most once a frame however fast the deltas come.
      if (msg.frame) return;
      msg.frame = requestAnimationFrame(() => {
        msg.frame = 0;
        this.render(msg);
        this.scrollDown();
      });
    }

    on_message_done(f) {
      const msg = this.upsert({
        id: f.message_id,
        role: f.role || "agent",
        status: f.status || "done",
        text: f.text,
        cards: f.cards || [],
      });
      if (msg.frame) cancelAnimationFrame(msg.frame), (msg.frame = 0);
      msg.ahead.clear();
      msg.text = str(f.text);
      this.render(msg);
      if (this.state.streamingId === msg.id) this.setStreaming(null);
      this.setAwaiting(false);
      this.arrived(msg);
    }

    arrived(msg) {
      // Once per message: a note the server wrote whole may come with its message.done as well.
      if (msg.arrived) return;
      msg.arrived = true;
      this.stick = this.nearBottom() || this.stick;
      this.scrollDown();
      if (msg.text) this.announce((msg.role === "staff" ? "Staff: " : "Assistant: ") + msg.text);
      if (!this.state.open && msg.text) {
        this.state.unread += 1;
        this.badge.textContent = String(this.state.unread);
      }
      this.emit("message", { id: msg.id, role: msg.role, text: msg.text, status: msg.status, cards: msg.cards });
    }

    on_error(f) {
      if (f.code === "conversation_not_found") {
        // The stored conversation is gone or not this visitor's: the server falls back to their latest.
        this.conversationId = null;
        return;
      }
      if (FINAL_CLOSE[4403] === f.code || FINAL_CLOSE[4404] === f.code) return; // the close follows
      const words = plainError(f.code, f.detail);
      if (f.code === "too_many_connections") {
        // Followed by a close and a slow retry: one banner, not a note per attempt.
        this.showBanner(words, "Retry now", () => this.reconnectNow());
        return;
      }
      const p = f.client_id && this.state.pending.get(f.client_id);
      this.setAwaiting(false);
      if (p) {
        // Nothing was stored: offer to send the same words again (not automatically on reconnect).
        p.failed = true;
        p.el.querySelectorAll(".meta").forEach((n) => n.remove());
        const meta = h("div", "meta err", words);
        meta.append(this.retryButton(() => this.send(p.text, f.client_id)));
        p.el.append(meta);
        this.announce(words);
      } else {
        this.note(words);
      }
      this.emit("error", { code: f.code, detail: words });
    }

    on_feedback_saved(f) {
      const msg = this.state.messages.get(f.message_id);
      if (!msg || (f.rating !== "up" && f.rating !== "down")) return;
      msg.rating = f.rating;
      const active = this.shadowRoot.activeElement;
      const focused = !!active && msg.el.contains(active) && !!active.closest(".rate");
      this.render(msg);
      // Keyboard users keep their place: render rebuilt the buttons, focus goes to the one now pressed.
      if (focused) msg.el.querySelector('.rate button[data-rating="' + f.rating + '"]')?.focus();
      this.announce(f.rating === "up" ? "Thanks for your feedback." : "Thanks, we'll use this to improve.");
      this.emit("feedback", { id: msg.id, rating: f.rating });
    }

    on_closed(f) {
      this.note("This conversation was closed. Write again any time to start a new one.");
      if (f.csat && typeof f.conversation_id === "number") this.insert(this.csatNode(f.conversation_id));
      this.emit("closed", { conversation_id: f.conversation_id });
    }

    /** "How did we do?" with scores 1 to 5, asked once when a conversation closes. */
    csatNode(conversationId) {
      const box = h("div", "csat");
      box.dataset.conversation = String(conversationId);
      box.setAttribute("role", "group");
      box.setAttribute("aria-label", "How did we do?");
      box.append(h("span", "q", "How did we do?"));
      const scores = h("div", "scores");
      const words = ["Very poor", "Poor", "OK", "Good", "Excellent"];
      words.forEach((word, i) => {
        const btn = h("button", null, String(i + 1));
        btn.type = "button";
        btn.dataset.score = String(i + 1);
        btn.setAttribute("aria-label", i + 1 + " out of 5: " + word);
        btn.setAttribute("aria-pressed", "false");
        btn.addEventListener("click", () => {
          if (this.isOpen()) this.frame({ type: "csat", conversation_id: conversationId, score: i + 1 });
        });
        scores.append(btn);
      });
      const ends = h("div", "ends");
      ends.append(h("span", null, words[0]), h("span", null, words[4]));
      box.append(scores, ends);
      return box;
    }

    on_csat_saved(f) {
      const box = this.shadowRoot.querySelector('.csat[data-conversation="' + Number(f.conversation_id) + '"]');
      if (!box) return;
      box.querySelectorAll("button").forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.score === String(f.score))));
      box.querySelector(".q").textContent = "Thanks for your rating!";
      this.announce("Thanks for your rating!");
      this.emit("csat", { conversation_id: f.conversation_id, score: f.score });
    }

    on_handoff(f) {
      this.note(
        f.state === "human"
          ? "A member of our team has joined the conversation."
          : "You're chatting with the assistant again."
      );
    }

    // -- public behaviour ----------------------------------------------------------------------------------
    open() {
      if (this.state.open) return;
      this.state.open = true;
      this.panel.hidden = false;
      this.box.classList.add("open");
      this.launcher.setAttribute("aria-expanded", "true");
      this.launcher.setAttribute("aria-label", "Close chat");
      this.state.unread = 0;
      this.badge.textContent = "";
      storage.set("sessionStorage", OPEN_KEY, true);
      this.connect();
      this.stick = true;
      this.scrollDown(true);
      this.input.focus({ preventScroll: true });
      this.emit("open", {});
    }

    close() {
      if (!this.state.open) return;
      const inside = this.shadowRoot.activeElement != null;
      this.state.open = false;
      this.panel.hidden = true;
      this.box.classList.remove("open");
      this.launcher.setAttribute("aria-expanded", "false");
      this.launcher.setAttribute("aria-label", "Open chat" + (this.state.agent.name ? " with " + this.state.agent.name : ""));
      storage.set("sessionStorage", OPEN_KEY, false);
      if (inside) this.launcher.focus(); // focus returns where the dialog was opened from
      this.emit("close", {});
    }

    toggle() {
      if (this.state.open) this.close();
      else this.open();
    }

    emit(name, detail) {
      for (const fn of this.listeners[name] || []) {
        try {
          fn(detail);
        } catch (err) {
          console.error("bizagent: a listener for", name, "failed", err);
        }
      }
    }
  }

  const TAG = "bizagent-widget";
  if (!customElements.get(TAG)) customElements.define(TAG, Widget);
  const widget = document.createElement(TAG);

  window.BizAgent = {
    version: VERSION,
    open: () => widget.open(),
    close: () => widget.close(),
    toggle: () => widget.toggle(),
    /** Name the visitor for the business's inbox: identify({name, email}). Sent with the next hello. */
    identify(info) {
      const c = {};
      for (const k of ["name", "email", "phone", "external_id"]) if (info && info[k] != null) c[k] = str(info[k]).slice(0, 200);
      widget.contact = c;
      widget.persist();
    },
    /** Subscribe: "message" (each finished message), "open", "close", "ready", "error", "feedback" (a rating saved), "closed", "csat" (a score saved). Returns an unsubscribe function. */
    on(name, fn) {
      (widget.listeners[name] = widget.listeners[name] || []).push(fn);
      return () => {
        widget.listeners[name] = (widget.listeners[name] || []).filter((f) => f !== fn);
      };
    },
  };

  function mount() {
    document.body.append(widget);
    if (opt.launcher === "false") widget.launcher.hidden = true;
    // The public config themes the launcher before any websocket is opened, and tells whether this page's
    // origin may connect at all.
    fetch(BASE + "/api/widget/" + encodeURIComponent(KEY) + "/config", { credentials: "omit", mode: "cors" })
      .then((r) => (r.ok ? r.json() : null))
      .then((cfg) => {
        if (!cfg) return;
        widget.state.originAllowed = cfg.origin_allowed !== false;
        if (Number.isFinite(cfg.upload_max_bytes) && cfg.upload_max_bytes > 0) widget.uploadMaxBytes = cfg.upload_max_bytes;
        if (Array.isArray(cfg.link_origins)) cfg.link_origins.forEach(trustOriginOf);
        widget.setAgent(cfg.agent);
      })
      .catch(() => {})
      .finally(() => {
        const saved = storage.get("sessionStorage", OPEN_KEY);
        if (saved || (saved == null && opt.open === "true")) widget.open();
        else if (widget.conversationId != null) widget.connect(); // returning visitor: history and staff replies
      });
    window.addEventListener("online", () => {
      if (!widget.ws) widget.reconnectNow();
    });
    window.dispatchEvent(new CustomEvent("bizagent:ready"));
  }
  if (document.body) mount();
  else document.addEventListener("DOMContentLoaded", mount, { once: true });
})();
