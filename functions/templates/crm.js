// The live calls' refresh, and who played a recording. Pages work without it; times come
// written in the business's zone.
"use strict";
(function () {
  // A block with data-refresh="N" is fetched again every N seconds and replaced in place.
  function refresh(block) {
    const every = Number(block.dataset.refresh) * 1000;
    setInterval(function () {
      fetch(location.href, { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
        .then(function (html) {
          const next = new DOMParser().parseFromString(html, "text/html").querySelector("[data-refresh]");
          if (next) { block.innerHTML = next.innerHTML; }
        })
        .catch(function () { /* the next tick tries again */ });
    }, every);
  }
  // The player loads a recording's length as the page opens; pressing play is what says someone
  // listened: posted once a page, with the session's form token.
  function recordPlays(audio) {
    audio.addEventListener("play", function () {
      const csrf = document.querySelector("input[name=csrf]");
      const body = new URLSearchParams({ csrf: csrf ? csrf.value : "" });
      fetch(audio.dataset.played, { method: "POST", credentials: "same-origin", body: body });
    }, { once: true });
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-refresh]").forEach(refresh);
    document.querySelectorAll("audio[data-played]").forEach(recordPlays);
  });
})();
