// The Control Room's own script. The Content Security Policy allows no
// inline script or handler, so what the pages need beyond htmx is here.
(function () {
  "use strict";

  // Times arrive as UTC in <time datetime>; show them in the viewer's zone.
  var format = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short"
  });
  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      if (el.dataset.local) { return; }
      var when = new Date(el.getAttribute("datetime"));
      if (isNaN(when.getTime())) { return; }
      el.title = el.textContent;
      el.textContent = format.format(when);
      el.dataset.local = "1";
    });
  }

  // Forms that need a second thought carry data-confirm.
  function confirmations(event) {
    var form = event.target;
    if (form.dataset && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
      event.preventDefault();
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    localTimes(document);
    // Whatever htmx adds, wherever: the live tail's rows arrive out of band
    // (into #rows), outside the element its request swaps, and the swap
    // events fire only after the rows are on screen. An observer converts
    // them before the next frame is drawn.
    new MutationObserver(function (changes) {
      changes.forEach(function (change) {
        change.addedNodes.forEach(function (node) {
          if (node.nodeType === Node.ELEMENT_NODE) { localTimes(node.matches("time[datetime]") ? node.parentNode : node); }
        });
      });
    }).observe(document.body, { childList: true, subtree: true });
  });
  document.addEventListener("submit", confirmations, true);
  // htmx shows nothing when a request fails; say so where the page can see it.
  document.addEventListener("htmx:responseError", function (event) {
    var box = document.getElementById("live-error");
    if (box) {
      box.textContent = "The last update failed (" + event.detail.xhr.status + "): " + event.detail.xhr.responseText.replace(/<[^>]*>/g, " ").replace(/\s+/g, " ").trim().slice(0, 300);
      box.hidden = false;
    }
  });
})();
