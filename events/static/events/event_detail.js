// Scale-out event page in the admin: while the event runs, poll the events API and update the status, the step
// timeline, a few fields and the build log in place (no page reload). No dependencies.
(function () {
  "use strict";
  var POLL_MS = 2000;
  var EXTRA_POLLS_AFTER_END = 10; // the stored log arrives a little after the final status

  function start() {
    var root = document.getElementById("event-live");
    if (!root) { return; }
    var apiUrl = root.getAttribute("data-api-url");
    var badges = JSON.parse(root.getAttribute("data-badges") || "{}");
    var active = root.getAttribute("data-active") === "1";
    var afterEnd = 0;
    if (!active) { return; }

    function el(tag, text, cls) {
      var node = document.createElement(tag);
      if (text !== undefined && text !== null) { node.textContent = String(text); }
      if (cls) { node.className = cls; }
      return node;
    }
    function badge(value, label) {
      return el("span", label, "ev-badge ev-" + (badges[value] || "muted"));
    }
    function when(iso) {
      if (!iso) { return "-"; }
      var d = new Date(iso);
      function p(n) { return (n < 10 ? "0" : "") + n; }
      return d.getFullYear() + "-" + p(d.getMonth() + 1) + "-" + p(d.getDate()) + " " +
        p(d.getHours()) + ":" + p(d.getMinutes()) + ":" + p(d.getSeconds());
    }
    // Formats translated on the server (data-fmt-*), so the live timeline reads like the rendered one.
    var fmtSeconds = root.getAttribute("data-fmt-seconds") || "{seconds} s";
    var fmtMinutes = root.getAttribute("data-fmt-minutes") || "{minutes} min {seconds} s";
    function seconds(s) {
      if (s === null || s === undefined) { return "-"; }
      if (s < 60) { return fmtSeconds.replace("{seconds}", s.toFixed(1)); }
      return fmtMinutes.replace("{minutes}", Math.floor(s / 60)).replace("{seconds}", Math.floor(s % 60));
    }
    function setField(name, text) {
      var node = document.querySelector(".field-" + name + " .readonly");
      if (node) { node.textContent = text; }
    }

    // As the server renders the field (events/admin.py ScaleOutEventAdmin.vms): one "name (ip)" a line.
    function setVms(names, ips) {
      var node = document.querySelector(".field-vms .readonly");
      if (!node) { return; }
      var items = [];
      for (var i = 0; i < Math.max(names.length, ips.length); i++) {
        var name = names[i] || "", ip = ips[i] || "";
        if (name || ip) { items.push(name && ip ? name + " (" + ip + ")" : name || ip); }
      }
      if (!items.length) { node.textContent = "-"; return; }
      var list = el("ul"); list.className = "plain-list";
      items.forEach(function (text) { list.appendChild(el("li", text)); });
      node.replaceChildren(list);
    }

    function render(ev) {
      var status = document.querySelector("[data-ev=status]");
      if (status) { status.replaceChildren(badge(ev.status, ev.status_display)); }
      var body = root.querySelector("[data-ev=timeline]");
      var rows = ev.actions.map(function (a) {
        var tr = el("tr");
        tr.appendChild(el("td", a.step_display));
        var st = el("td"); st.appendChild(badge(a.status === "succeeded" ? "succeeded" :
          a.status === "failed" ? "failed" : a.status === "running" ? "running" : "skipped", a.status_display));
        tr.appendChild(st);
        tr.appendChild(el("td", when(a.started_at)));
        tr.appendChild(el("td", when(a.finished_at)));
        tr.appendChild(el("td", seconds(a.duration_seconds)));
        tr.appendChild(el("td", a.message));
        return tr;
      });
      if (rows.length) { body.replaceChildren.apply(body, rows); }
      ["triggered_at", "started_at", "finished_at"].forEach(function (n) { setField(n, when(ev[n])); });
      setVms(ev.vm_names || [], ev.vm_ips || []);
      setField("error_text", ev.error || "-");
      setField("failed_step", ev.failed_step || "-");
      setField("trigger_attempts", ev.trigger_attempts);
      if (ev.build_number) {
        setField("jenkins_queue_id", ev.jenkins_queue_id === null ? "-" : ev.jenkins_queue_id);
        var link = document.querySelector(".field-build_link .readonly");
        if (link) {
          var a = el("a", "#" + ev.build_number);
          if (ev.build_url) { a.href = ev.build_url; a.rel = "noopener"; }
          link.replaceChildren(a);
        }
      }
      var log = root.querySelector("[data-ev=log]");
      if (ev.build_log) {
        log.textContent = ev.build_log;
      } else if (ev.jenkins && ev.jenkins.log_api) {
        fetch(ev.jenkins.log_api, {credentials: "same-origin"}).then(function (r) {
          return r.ok ? r.text() : null;
        }).then(function (text) { if (text !== null) { log.textContent = text; } }).catch(function () {});
      }
      return ev;
    }

    function poll() {
      fetch(apiUrl, {credentials: "same-origin", headers: {"Accept": "application/json"}})
        .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.json(); })
        .then(render)
        .then(function (ev) {
          if (ev.is_active) {
            setTimeout(poll, POLL_MS);
            return;
          }
          var note = root.querySelector("[data-ev=live-note]");
          if (note) { note.hidden = true; }
          afterEnd += 1;
          if (!ev.build_log && afterEnd < EXTRA_POLLS_AFTER_END) { setTimeout(poll, POLL_MS); }
        })
        .catch(function () { setTimeout(poll, POLL_MS * 2); });
    }
    setTimeout(poll, POLL_MS);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
