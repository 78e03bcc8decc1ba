// Live updates of the events page: new journaled events arrive by server-sent events and are added at
// the top of the table. Text only (textContent): nothing from an event is ever parsed as HTML.
"use strict";
(function () {
  var state = document.getElementById("live-state");
  var body = document.querySelector("#events tbody");
  if (!state || !body || !state.dataset.stream || !window.EventSource) { return; }
  var prefix = body.dataset.prefix;
  var source = new EventSource(state.dataset.stream);
  source.addEventListener("open", function () { state.textContent = "Newest first, live."; });
  source.addEventListener("error", function () { state.textContent = "Newest first (live updates paused)."; });
  source.addEventListener("journaled", function (message) {
    var e = JSON.parse(message.data);
    var row = document.createElement("tr");
    row.className = "fresh";
    var link = document.createElement("a");
    link.href = prefix + "/events/" + e.seq;
    link.textContent = String(e.seq);
    var first = document.createElement("td");
    first.appendChild(link);
    row.appendChild(first);
    [e.receivedAt, e.type, e.source, e.subject || "", e.status, e.id].forEach(function (text, i) {
      var cell = document.createElement("td");
      cell.textContent = text;
      if (i === 4) { cell.className = "s-" + e.status; }
      if (i === 5) { cell.className = "id"; }
      row.appendChild(cell);
    });
    body.insertBefore(row, body.firstChild);
  });
})();
