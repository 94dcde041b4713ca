// Times in the reader's own zone and language; the live calls' refresh. Pages work without it.
"use strict";
(function () {
  const lang = document.documentElement.lang || "he";
  const format = new Intl.DateTimeFormat(lang, { dateStyle: "short", timeStyle: "medium" });
  function localTimes(root) {
    root.querySelectorAll("time[data-ms]").forEach(function (el) {
      const ms = Number(el.dataset.ms);
      if (ms > 0) {
        el.setAttribute("datetime", new Date(ms).toISOString());
        el.textContent = format.format(new Date(ms));
      }
    });
  }
  // A block with data-refresh="N" is fetched again every N seconds and replaced in place.
  function refresh(block) {
    const every = Number(block.dataset.refresh) * 1000;
    setInterval(function () {
      fetch(location.href, { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
        .then(function (html) {
          const next = new DOMParser().parseFromString(html, "text/html").querySelector("[data-refresh]");
          if (next) { block.innerHTML = next.innerHTML; localTimes(block); }
        })
        .catch(function () { /* the next tick tries again */ });
    }, every);
  }
  document.addEventListener("DOMContentLoaded", function () {
    localTimes(document);
    document.querySelectorAll("[data-refresh]").forEach(refresh);
  });
})();
