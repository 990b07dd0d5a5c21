// FleetPrompt console: progressive enhancement only; every page works
// without it. No framework, no build step, no innerHTML.
(function () {
  "use strict";
  function $(sel, root) { return (root || document).querySelector(sel); }
  function $all(sel, root) { return Array.prototype.slice.call((root || document).querySelectorAll(sel)); }

  // Fragments from the server are parsed, never assigned as HTML strings.
  function parse(html) { return new DOMParser().parseFromString(html, "text/html"); }

  // The invite link carries its token in the URL fragment, never sent to a
  // server: copy it into the form.
  var invite = $("#invite");
  if (invite && location.hash.length > 1) { invite.value = decodeURIComponent(location.hash.slice(1)); }

  // Copy buttons: data-copy names the element whose text is copied.
  $all("[data-copy]").forEach(function (b) {
    b.addEventListener("click", function () {
      var src = document.getElementById(b.getAttribute("data-copy"));
      if (!src || !navigator.clipboard) { return; }
      navigator.clipboard.writeText(src.textContent).then(function () {
        var status = document.getElementById(b.getAttribute("data-copy") + "-status");
        if (status) { status.textContent = "Copied."; }
      });
    });
  });

  window.FleetPrompt = { $: $, $all: $all, parse: parse };
})();
