// FleetPrompt console: progressive enhancement only; every page works
// without it. No framework, no build step, no innerHTML: fragments from the
// server are parsed with DOMParser and swapped in as nodes.
(function () {
  "use strict";
  function $(sel, root) { return (root || document).querySelector(sel); }
  function $all(sel, root) { return Array.prototype.slice.call((root || document).querySelectorAll(sel)); }
  function say(text) { var s = $("#live-status"); if (s) { s.textContent = text; } }

  // The invite link carries its token in the URL fragment, never sent to a
  // server: copy it into the form.
  var invite = $("#invite");
  if (invite && location.hash.length > 1) { invite.value = decodeURIComponent(location.hash.slice(1)); }

  // Copy buttons: data-copy names the element whose text is copied.
  $all("[data-copy]").forEach(function (b) {
    b.addEventListener("click", function () {
      var id = b.getAttribute("data-copy");
      var src = document.getElementById(id);
      var status = document.getElementById(id + "-status");
      if (!src) { return; }
      var done = function () { if (status) { status.textContent = "Copied."; } };
      if (navigator.clipboard && navigator.clipboard.writeText) {
        navigator.clipboard.writeText(src.textContent).then(done, function () {
          if (status) { status.textContent = "Select the snippet and copy it."; }
        });
      }
    });
  });

  // A saved reply goes into the reply box where the cursor is, without a
  // reload (the form alone reloads the page with the reply box filled in).
  $all("form[data-insert-into]").forEach(function (f) {
    f.addEventListener("submit", function (ev) {
      var box = document.getElementById(f.getAttribute("data-insert-into"));
      var opt = $("select", f).selectedOptions[0];
      if (!box || !opt || !opt.hasAttribute("data-text")) { return; }
      ev.preventDefault();
      var text = opt.getAttribute("data-text");
      var at = box.selectionStart, end = box.selectionEnd;
      box.value = box.value.slice(0, at) + text + box.value.slice(end);
      box.focus();
      box.setSelectionRange(at + text.length, at + text.length);
      say("Inserted \u201c" + opt.textContent + "\u201d into the reply.");
    });
  });

  // Regions marked data-refresh are fetched again (the same page, with the
  // member's session) and swapped in place: the live inbox, a conversation's
  // messages, its actions' progress and its timeline.
  var refreshing = false, again = false;
  function refresh() {
    if (refreshing) { again = true; return; }
    refreshing = true;
    fetch(location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) { return; }
        var doc = new DOMParser().parseFromString(html, "text/html");
        $all("[data-refresh]").forEach(function (old) {
          // Never under the operator's hands: a region being typed in (a
          // draft being edited) keeps its text until it is left.
          var a = document.activeElement;
          var busy = (a && old.contains(a) && /^(TEXTAREA|INPUT|SELECT)$/.test(a.tagName)) ||
            $all("textarea", old).some(function (t) { return t.value !== t.defaultValue; });
          if (busy) { return; }
          var fresh = doc.getElementById(old.id);
          if (fresh) { old.replaceWith(document.importNode(fresh, true)); }
        });
        select(selected);
        poll();
      })
      .catch(function () {})
      .then(function () {
        refreshing = false;
        if (again) { again = false; refresh(); }
      });
  }

  // While an action is pending or running, its progress is polled.
  var timer = null;
  function poll() {
    if (timer) { clearTimeout(timer); timer = null; }
    if ($("[data-poll]")) { timer = setTimeout(refresh, 1000); }
  }
  poll();

  // With several API nodes a message may arrive on another node, whose
  // live feed this page does not hear: the inbox also refreshes now and then.
  if ($("#inbox") && !/[?&]after=/.test(location.search)) { setInterval(refresh, 20000); }

  // The tenant's live feed: new messages, over SSE with the session cookie.
  var inbox = $("#inbox");
  var convo = location.pathname.match(/^\/console\/conversations\/([^\/]+)$/);
  if ((inbox || convo) && window.EventSource) {
    var es = new EventSource("/console/live");
    es.addEventListener("message", function (ev) {
      var e; try { e = JSON.parse(ev.data); } catch (x) { return; }
      if (inbox) { say("New message."); refresh(); }
      else if (convo && e.conversation_id === convo[1]) {
        say(e.role === "visitor" ? "The visitor wrote." : "A reply was sent.");
        refresh();
      }
    });
  }

  // Keyboard: j/k move through the inbox, Enter opens, / searches.
  var selected = -1;
  function rows() { return $all(".inbox li"); }
  function select(i) {
    var r = rows();
    r.forEach(function (li) { li.classList.remove("selected"); });
    if (i < 0 || !r.length) { return; }
    selected = Math.max(0, Math.min(i, r.length - 1));
    r[selected].classList.add("selected");
    var a = $("a", r[selected]);
    if (a && document.activeElement !== a) { a.focus(); }
  }
  document.addEventListener("keydown", function (ev) {
    var t = ev.target;
    if (ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
    if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable)) { return; }
    if (ev.key === "/") {
      var q = $("#f-q");
      if (q) { ev.preventDefault(); q.focus(); q.select(); }
    } else if (inbox && (ev.key === "j" || ev.key === "k")) {
      ev.preventDefault();
      var cur = rows().indexOf(document.activeElement && document.activeElement.closest ? document.activeElement.closest("li") : null);
      if (cur >= 0) { selected = cur; }
      select(selected + (ev.key === "j" ? 1 : -1));
    } else if (inbox && ev.key === "Enter" && selected >= 0) {
      var a = $("a", rows()[selected] || document.createElement("li"));
      if (a && document.activeElement !== a) { ev.preventDefault(); a.click(); }
    }
  });
})();
