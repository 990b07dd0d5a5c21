/* FleetPrompt chat widget. Vanilla JS, no dependencies, no eval; styles are
   isolated in a Shadow DOM. Embed:
   <script async src="https://HOST/widget.js" data-site-key="pk_…"></script> */
(function () {
  "use strict";
  var script = document.currentScript || document.querySelector("script[data-site-key]");
  if (!script || window.__fleetpromptChat) return;
  window.__fleetpromptChat = true;
  var siteKey = script.getAttribute("data-site-key") || "";
  var base = new URL(script.src, location.href).origin;
  var storeKey = "fleetprompt:" + siteKey;
  var state = load();
  var token = null, tokenExp = 0, settings = null, open = false, seen = {}, lastId = "", streaming = false;
  var el = {};

  function load() {
    try { return JSON.parse(localStorage.getItem(storeKey)) || {}; } catch (e) { return {}; }
  }
  function save() {
    try { localStorage.setItem(storeKey, JSON.stringify(state)); } catch (e) { /* private mode */ }
  }
  function uuid() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    var b = new Uint8Array(16); crypto.getRandomValues(b);
    b[6] = (b[6] & 15) | 64; b[8] = (b[8] & 63) | 128;
    var h = Array.prototype.map.call(b, function (x) { return (x + 256).toString(16).slice(1); }).join("");
    return h.slice(0, 8) + "-" + h.slice(8, 12) + "-" + h.slice(12, 16) + "-" + h.slice(16, 20) + "-" + h.slice(20);
  }
  function url(path) { return base + "/v1/widget/" + path + (path.indexOf("?") < 0 ? "?" : "&") + "site_key=" + encodeURIComponent(siteKey); }

  function api(method, path, body, retried) {
    var ready = token && Date.now() < tokenExp - 30000 ? Promise.resolve() : bootstrap();
    return ready.then(function () {
      return fetch(url(path), {
        method: method,
        headers: body ? { "Content-Type": "application/json", Authorization: "Bearer " + token } : { Authorization: "Bearer " + token },
        body: body ? JSON.stringify(body) : undefined
      });
    }).then(function (r) {
      if (r.status === 401 && !retried) { token = null; return api(method, path, body, true); }
      if (!r.ok) { var e = new Error("HTTP " + r.status); e.status = r.status; throw e; }
      return r.json();
    });
  }

  // A new visitor may have to solve a proof of work first (the site's
  // `challenge` setting). A returning visitor shows the secret issued with
  // their id instead; without it the id is worth nothing.
  function bootstrap() {
    var pre = state.pow && !state.secret ? solve() : Promise.resolve(undefined);
    return pre.then(function (pow) { return boot(pow, pow ? 1 : 0); });
  }
  // `solved`: puzzles solved for this bootstrap so far; a second one is
  // tried when the first was refused (e.g. it expired on a slow device).
  function boot(pow, solved) {
    return fetch(url("bootstrap"), {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ site_key: siteKey, visitor_id: state.visitor || undefined, visitor_secret: state.secret || undefined, proof_of_work: pow })
    }).then(function (r) {
      if (r.status === 403 && solved < 2) {
        return r.json().then(function (e) {
          if (!e.error || e.error.code.indexOf("challenge_") !== 0) throw new Error("bootstrap refused: HTTP 403");
          state.pow = 1; save();
          return solve().then(function (p) { return boot(p, solved + 1); });
        });
      }
      if (!r.ok) throw new Error("bootstrap refused: HTTP " + r.status);
      return r.json().then(function (b) {
        token = b.token;
        tokenExp = Date.now() + b.expires_in * 1000;
        settings = b.settings;
        state.pow = settings.challenge === "proof_of_work" ? 1 : 0;
        if (state.visitor !== b.visitor_id) { state.visitor = b.visitor_id; state.secret = ""; }
        if (b.visitor_secret) state.secret = b.visitor_secret;
        save();
      });
    });
  }

  // Finds n with SHA-256(salt + n) = challenge, trying 0, 1, 2, … in
  // batches. Runs in a Web Worker (a Blob URL: needs `worker-src blob:`
  // where the page has a CSP), or here when the page allows no worker.
  function search(c, done) {
    var enc = new TextEncoder(), want = new Uint8Array(32), n = 0;
    for (var i = 0; i < 32; i++) want[i] = parseInt(c.challenge.substr(i * 2, 2), 16);
    function batch() {
      if (n > c.max_number) return done(null);
      var ps = [], first = n;
      for (var k = 0; k < 1000 && n <= c.max_number; k++, n++) ps.push(crypto.subtle.digest("SHA-256", enc.encode(c.salt + n)));
      Promise.all(ps).then(function (hs) {
        for (var j = 0; j < hs.length; j++) {
          var a = new Uint8Array(hs[j]), m = 0;
          while (m < 32 && a[m] === want[m]) m++;
          if (m === 32) return done(first + j);
        }
        batch();
      });
    }
    batch();
  }
  function solve() {
    return fetch(url("challenge"), {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ site_key: siteKey })
    }).then(function (r) {
      if (!r.ok) throw new Error("challenge refused: HTTP " + r.status);
      return r.json();
    }).then(function (c) {
      return new Promise(function (resolve) {
        var w;
        try {
          w = new Worker(URL.createObjectURL(new Blob(["var search=" + search.toString() + ";onmessage=function(e){search(e.data,postMessage)}"], { type: "text/javascript" })));
        } catch (e) { w = null; }
        if (!w) return search(c, resolve);
        w.onmessage = function (e) { w.terminate(); resolve(e.data); };
        w.onerror = function (e) { e.preventDefault(); w.terminate(); search(c, resolve); };
        w.postMessage(c);
      }).then(function (number) {
        if (number === null) throw new Error("challenge unsolved");
        return { salt: c.salt, challenge: c.challenge, max_number: c.max_number, signature: c.signature, number: number };
      });
    });
  }

  function h(tag, attrs, text) {
    var n = document.createElement(tag);
    for (var k in attrs || {}) n.setAttribute(k, attrs[k]);
    if (text) n.textContent = text;
    return n;
  }

  var CSS = ":host{all:initial}*{box-sizing:border-box;font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif}" +
    ".launch{position:fixed;right:20px;bottom:20px;width:56px;height:56px;border-radius:50%;border:0;color:#fff;background:var(--c);cursor:pointer;box-shadow:0 4px 14px rgba(0,0,0,.25);display:flex;align-items:center;justify-content:center;z-index:2147483000}" +
    ".panel{position:fixed;right:20px;bottom:88px;width:360px;max-width:calc(100vw - 40px);height:520px;max-height:calc(100vh - 120px);display:flex;flex-direction:column;background:#fff;color:#111;border-radius:12px;box-shadow:0 8px 30px rgba(0,0,0,.3);overflow:hidden;z-index:2147483000;font-size:14px}" +
    ".panel[hidden]{display:none}.head{display:flex;align-items:center;justify-content:space-between;padding:12px 14px;background:var(--c);color:#fff}" +
    ".head h2{margin:0;font-size:16px}.x{background:none;border:0;color:#fff;font-size:22px;cursor:pointer;line-height:1}" +
    ".log{flex:1;overflow-y:auto;padding:12px;display:flex;flex-direction:column;gap:8px;background:#f7f7f8}" +
    ".m{max-width:80%;padding:8px 11px;border-radius:12px;white-space:pre-wrap;word-wrap:break-word;line-height:1.35}" +
    ".visitor{align-self:flex-end;background:var(--c);color:#fff}.agent,.assistant,.note{align-self:flex-start;background:#fff;border:1px solid #e3e3e6}" +
    ".note{color:#555;font-style:italic}.failed{opacity:.7}.m button{margin-left:6px;font-size:12px}" +
    ".box{padding:12px;border-top:1px solid #e3e3e6;display:flex;flex-direction:column;gap:8px}.row{display:flex;gap:8px}" +
    "textarea,input{flex:1;font:inherit;padding:8px;border:1px solid #c9c9cf;border-radius:8px;resize:none;color:#111;background:#fff}" +
    ".send,.btn{border:0;border-radius:8px;padding:8px 14px;background:var(--c);color:#fff;cursor:pointer;font:inherit}" +
    ".link{background:none;border:0;color:#444;text-decoration:underline;cursor:pointer;font:inherit;align-self:flex-start}" +
    "button:focus-visible,textarea:focus-visible,input:focus-visible{outline:3px solid #ffbf47;outline-offset:1px}" +
    ".sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0)}" +
    "@media (max-width:480px){.panel{right:0;bottom:0;width:100vw;max-width:100vw;height:100%;max-height:100%;border-radius:0}}";

  function render() {
    var host = h("div", { id: "fleetprompt-chat" });
    var root = host.attachShadow({ mode: "open" });
    if (root.adoptedStyleSheets !== undefined && window.CSSStyleSheet && CSSStyleSheet.prototype.replaceSync) {
      var sheet = new CSSStyleSheet(); sheet.replaceSync(CSS); root.adoptedStyleSheets = [sheet];
    } else {
      root.appendChild(h("style", {}, CSS));
    }
    host.style.setProperty("--c", settings.color || "#2563eb");
    el.launch = h("button", { "class": "launch", "aria-label": "Open chat: " + settings.title, "aria-expanded": "false", "aria-controls": "fp-panel", type: "button" });
    // A speech-bubble icon drawn as SVG: emoji fonts are not everywhere.
    var svg = document.createElementNS("http://www.w3.org/2000/svg", "svg"), path = document.createElementNS(svg.namespaceURI, "path");
    svg.setAttribute("viewBox", "0 0 24 24"); svg.setAttribute("width", "26"); svg.setAttribute("height", "26"); svg.setAttribute("aria-hidden", "true");
    path.setAttribute("fill", "currentColor"); path.setAttribute("d", "M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2z");
    svg.appendChild(path); el.launch.appendChild(svg);
    el.panel = h("div", { "class": "panel", id: "fp-panel", role: "dialog", "aria-label": settings.title, hidden: "" });
    var head = h("div", { "class": "head" });
    head.appendChild(h("h2", {}, settings.title));
    el.close = h("button", { "class": "x", "aria-label": "Close chat", type: "button" }, "\u00D7");
    head.appendChild(el.close);
    el.log = h("div", { "class": "log", role: "log", "aria-live": "polite", "aria-label": "Messages" });
    el.box = h("div", { "class": "box" });
    el.panel.appendChild(head); el.panel.appendChild(el.log); el.panel.appendChild(el.box);
    root.appendChild(el.launch); root.appendChild(el.panel);
    document.body.appendChild(host);
    el.launch.addEventListener("click", function () { toggle(!open); });
    el.close.addEventListener("click", function () { toggle(false); });
    el.panel.addEventListener("keydown", function (e) { if (e.key === "Escape") toggle(false); });
  }

  function toggle(want) {
    open = want;
    el.panel.hidden = !want;
    el.launch.setAttribute("aria-expanded", String(want));
    if (want) { step(); if (!streaming) { refresh(); stream(); } } else el.launch.focus();
  }

  function note(text) { el.log.appendChild(h("div", { "class": "m note" }, text)); }

  function show(m) {
    if (m.id && seen[m.id]) return;
    if (m.client_message_id) {
      var pending = el.log.querySelector('[data-cmid="' + m.client_message_id + '"]');
      if (pending) { pending.remove(); }
    }
    if (m.id) { seen[m.id] = 1; if (m.id > lastId) lastId = m.id; }
    var d = h("div", { "class": "m " + m.role }, m.content);
    if (m.role !== "visitor") d.insertBefore(h("span", { "class": "sr" }, (m.role === "agent" ? "Agent" : "Assistant") + ": "), d.firstChild);
    el.log.appendChild(d);
    el.log.scrollTop = el.log.scrollHeight;
  }

  // What the box at the bottom shows: consent, contact form, or composer.
  function step() {
    el.box.textContent = "";
    if (settings.consent_required && !state.consent) {
      el.box.appendChild(h("p", { id: "fp-consent" }, settings.consent_text));
      var ok = h("button", { "class": "btn", type: "button", "aria-describedby": "fp-consent" }, "I agree");
      ok.addEventListener("click", function () { state.consent = true; save(); step(); });
      el.box.appendChild(ok); ok.focus();
      return;
    }
    var ask = settings.ask_contact;
    if ((ask === "before_chat" || ask === "optional") && !state.contact) {
      var f = h("form", { "class": "box", "aria-label": "Your contact details" });
      var email = h("input", { type: "email", required: "", placeholder: "Email", "aria-label": "Email", autocomplete: "email" });
      var name = h("input", { type: "text", placeholder: "Name (optional)", "aria-label": "Name", autocomplete: "name" });
      f.appendChild(email); f.appendChild(name);
      var row = h("div", { "class": "row" });
      row.appendChild(h("button", { "class": "btn", type: "submit" }, "Continue"));
      if (ask === "optional") {
        var skip = h("button", { "class": "link", type: "button" }, "Skip");
        skip.addEventListener("click", function () { state.contact = "skipped"; save(); step(); });
        row.appendChild(skip);
      }
      f.appendChild(row);
      f.addEventListener("submit", function (e) {
        e.preventDefault();
        api("POST", "contact", { email: email.value, name: name.value || undefined }).then(function () {
          state.contact = "given"; save(); step();
        }, function () { note("That email address did not work; please check it."); });
      });
      el.box.parentNode.replaceChild(f, el.box); el.box = f;
      email.focus();
      return;
    }
    if (el.box.tagName === "FORM") { var b = h("div", { "class": "box" }); el.box.parentNode.replaceChild(b, el.box); el.box = b; }
    var form = h("form", { "class": "row", "aria-label": "Send a message" });
    var text = h("textarea", { rows: "2", "aria-label": "Message", placeholder: "Type a message…", maxlength: String(settings.max_message_bytes) });
    form.appendChild(text);
    form.appendChild(h("button", { "class": "send", type: "submit" }, "Send"));
    text.addEventListener("keydown", function (e) {
      if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); form.requestSubmit ? form.requestSubmit() : submit(); }
    });
    function submit() {
      var v = text.value.trim();
      if (!v) return;
      text.value = "";
      queue(v);
    }
    form.addEventListener("submit", function (e) { e.preventDefault(); submit(); });
    el.box.appendChild(form);
    el.text = text;
    if (open) text.focus();
  }

  // Messages wait in an outbox (kept across reloads) until the server has
  // them; a retry reuses the same client_message_id, so nothing is doubled.
  function queue(content) {
    var item = { id: uuid(), content: content };
    state.outbox = (state.outbox || []).concat([item]); save();
    deliver(item);
  }
  function deliver(item) {
    var bubble = el.log.querySelector('[data-cmid="' + item.id + '"]');
    if (!bubble) {
      bubble = h("div", { "class": "m visitor", "data-cmid": item.id }, item.content);
      el.log.appendChild(bubble); el.log.scrollTop = el.log.scrollHeight;
    }
    bubble.classList.remove("failed");
    var old = bubble.querySelector("button"); if (old) old.remove();
    api("POST", "messages", { client_message_id: item.id, content: item.content, page_url: location.href }).then(function (r) {
      state.outbox = (state.outbox || []).filter(function (x) { return x.id !== item.id; }); save();
      bubble.removeAttribute("data-cmid");
      if (!seen[r.message_id]) { seen[r.message_id] = 1; if (r.message_id > lastId) lastId = r.message_id; }
      if (!streaming) stream();
    }, function (e) {
      bubble.classList.add("failed");
      var retry = h("button", { type: "button", "aria-label": "Not sent. Retry sending" }, e.status === 429 ? "Slow down — retry" : "Retry");
      retry.addEventListener("click", function () { deliver(item); });
      bubble.appendChild(retry);
    });
  }

  // historyOnly: a stream's catch-up, which must not resend the outbox.
  function refresh(historyOnly) {
    return api("GET", "messages" + (lastId ? "?after=" + encodeURIComponent(lastId) : "")).then(function (r) {
      if (!el.log.childNodes.length && settings.greeting) note(settings.greeting);
      r.messages.forEach(show);
      if (!historyOnly) (state.outbox || []).forEach(deliver);
    }, function () { /* shown as offline by failed sends */ });
  }

  // Server-sent events over fetch, so the token goes in a header. The
  // server ends a stream with `reconnect` (token expiry, node shutdown) or
  // `replaced` (too many streams for this visitor: stay quiet until used).
  // Every connect catches up from history once the stream is live, so a
  // message sent while no stream was open is not missed.
  var retryMs = 1000;
  function stream() {
    streaming = true;
    var ready = token && Date.now() < tokenExp - 30000 ? Promise.resolve() : bootstrap(), end = "";
    ready.then(function () {
      return fetch(url("stream"), { headers: { Authorization: "Bearer " + token, Accept: "text/event-stream" } });
    }).then(function (r) {
      if (!r.ok || !r.body) throw new Error("stream HTTP " + r.status);
      var reader = r.body.getReader(), dec = new TextDecoder(), buf = "";
      function pump() {
        return reader.read().then(function (c) {
          if (c.done) throw new Error("stream ended");
          buf += dec.decode(c.value, { stream: true });
          var i;
          while ((i = buf.indexOf("\n\n")) >= 0) {
            var chunk = buf.slice(0, i); buf = buf.slice(i + 2);
            var ev = "message", data = "";
            chunk.split("\n").forEach(function (l) {
              if (l.indexOf("event:") === 0) ev = l.slice(6).trim();
              else if (l.indexOf("data:") === 0) data += l.slice(5).trim();
            });
            if (ev === "message" && data) { try { show(JSON.parse(data)); } catch (e) { /* ignore a bad event */ } }
            if (ev === "ready") { el.root = 1; retryMs = 1000; refresh(true); }
            if (ev === "reconnect" || ev === "replaced") { end = ev; reader.cancel(); throw new Error(ev); }
          }
          return pump();
        });
      }
      return pump();
    }).catch(function () {
      if (end === "replaced") { streaming = false; return; }
      // Spread reconnects out (a node stopping ends every stream at once),
      // and back off while the server keeps failing.
      var wait = end === "reconnect" ? 250 + Math.random() * 1500 : retryMs * (0.5 + Math.random());
      if (end !== "reconnect") retryMs = Math.min(retryMs * 2, 30000);
      // The refresh also resends what is still in the outbox.
      setTimeout(function () { refresh(); stream(); }, wait);
    });
  }

  function start() {
    bootstrap().then(function () {
      render();
      window.FleetPromptChat = { open: function () { toggle(true); }, close: function () { toggle(false); } };
      if ((state.outbox || []).length) toggle(true);
    }, function (e) {
      if (window.console) console.warn("FleetPrompt chat disabled:", e.message);
    });
  }
  if (document.body) start(); else document.addEventListener("DOMContentLoaded", start);
})();
