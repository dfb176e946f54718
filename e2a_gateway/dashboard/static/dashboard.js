// e2a dashboard: the live inbox and confirmation of destructive forms. No framework.
"use strict";

(function () {
  // Forms marked data-confirm ask before submitting (deleting an agent, revoking a key...).
  document.addEventListener("submit", function (event) {
    var question = event.target.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
  });

  // A just-created secret is selected when focused, ready to copy.
  document.querySelectorAll("[data-select-on-focus]").forEach(function (input) {
    input.addEventListener("focus", function () { input.select(); });
  });

  var table = document.getElementById("inbox");
  if (!table || !table.dataset.events || !window.EventSource) {
    return;
  }
  var body = table.querySelector("tbody");
  var empty = document.getElementById("inbox-empty");
  var state = document.getElementById("live-state");
  var base = table.dataset.messageBase;

  function known(id) {
    return Array.prototype.some.call(body.rows, function (row) { return row.dataset.id === id; });
  }

  function cell(tag, text, label) {
    var element = document.createElement(tag);
    element.textContent = text;
    if (label) {
      element.dataset.label = label;
    }
    return element;
  }

  // Same form as the server's dashboard_time filter: "2026-02-01 12:00 UTC".
  function minuteUtc(value) {
    return value && value.charAt(10) === "T" ? value.slice(0, 10) + " " + value.slice(11, 16) + " UTC" : value;
  }

  function addRow(frame) {
    if (known(frame.message_id)) {
      return;
    }
    var row = document.createElement("tr");
    row.dataset.id = frame.message_id;
    row.className = "unread fresh";
    row.appendChild(cell("td", frame.from, "From"));
    var subject = cell("th", "", "Subject");
    subject.scope = "row";
    var link = cell("a", frame.subject || "(no subject)");
    link.href = base + encodeURIComponent(frame.message_id);
    subject.appendChild(link);
    row.appendChild(subject);
    var when = cell("time", minuteUtc(frame.received_at));
    when.setAttribute("datetime", frame.received_at);
    var received = cell("td", "", "Received");
    received.appendChild(when);
    row.appendChild(received);
    var status = cell("td", "", "Status");
    var badge = cell("span", "unread");
    badge.className = "badge info";
    status.appendChild(badge);
    row.appendChild(status);
    body.appendChild(row);
    if (empty) {
      empty.hidden = true;
    }
    state.textContent = "New message from " + frame.from + ": " + (frame.subject || "(no subject)");
  }

  // Each message event carries its inbox position as its id: on reconnecting, EventSource
  // sends it back (Last-Event-ID) and the server resumes after it; a message sent again is
  // shown once. When more mail waits than one stream sends, the server asks for a reload.
  var source = new EventSource(table.dataset.events);
  source.addEventListener("message", function (event) {
    addRow(JSON.parse(event.data));
  });
  source.addEventListener("reload", function () {
    source.close();
    window.location.reload();
  });
  source.addEventListener("open", function () {
    table.dataset.live = "connected";
  });
  source.addEventListener("error", function () {
    table.dataset.live = "reconnecting";
  });
})();
