// Refreshes the monitoring dashboard in place: fetches the body fragment and swaps it in, no page reload.
(function () {
  "use strict";

  function start() {
    var body = document.getElementById("dashboard-body");
    if (!body) {
      return;
    }
    var url = body.getAttribute("data-fragment-url");
    var range = body.getAttribute("data-range");
    var seconds = parseInt(body.getAttribute("data-refresh-seconds"), 10) || 15;
    var state = document.getElementById("dashboard-refresh-state");
    var busy = false;

    function refresh() {
      if (busy || document.hidden) {
        return;
      }
      busy = true;
      fetch(url + "?range=" + encodeURIComponent(range), {
        credentials: "same-origin",
        headers: { "X-Requested-With": "XMLHttpRequest" },
      })
        .then(function (response) {
          // A redirect means the session ended (the admin sends the login page): keep the last data shown.
          if (!response.ok || response.redirected) {
            throw new Error(response.redirected ? "signed out" : "HTTP " + response.status);
          }
          return response.text();
        })
        .then(function (html) {
          body.innerHTML = html;
          body.setAttribute("data-refreshed", String(Date.now()));
          if (state) {
            state.classList.remove("refresh-failed");
          }
        })
        .catch(function (error) {
          if (state) {
            state.classList.add("refresh-failed");
            state.setAttribute("title", String(error));
          }
        })
        .finally(function () {
          busy = false;
        });
    }

    window.setInterval(refresh, seconds * 1000);
    document.addEventListener("visibilitychange", function () {
      if (!document.hidden) {
        refresh();
      }
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
