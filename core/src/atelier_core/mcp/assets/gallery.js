"use strict";
(function () {
  var base = "/gallery";
  var grid = document.getElementById("grid");
  var more = document.getElementById("more");
  var errorLine = document.getElementById("error");
  var form = document.getElementById("filters");
  var nextCursor = null;
  var shown = 0;

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }
  function money(value) { return value === null || value === undefined ? "—" : "$" + Number(value).toFixed(4); }
  function getJSON(url) {
    return fetch(url, { credentials: "same-origin" }).then(function (response) {
      return response.json().then(function (body) {
        if (!response.ok) {
          throw new Error((body && body.error ? body.error : response.statusText) + (body && body.fix ? " — " + body.fix : ""));
        }
        return body;
      });
    });
  }
  function fail(error) { errorLine.textContent = error.message || String(error); }

  function filters() {
    var params = new URLSearchParams();
    ["q", "model", "provider", "since", "until", "session"].forEach(function (id) {
      var field = document.getElementById(id);
      if (field.value) { params.set(field.name, field.value); }
    });
    return params;
  }

  function row(table, label, value) {
    if (value === null || value === undefined || value === "") { return; }
    var tr = el("tr");
    tr.appendChild(el("td", {}, label));
    tr.appendChild(el("td", {}, typeof value === "object" ? JSON.stringify(value) : value));
    table.appendChild(tr);
  }

  function showDetail(item) {
    document.getElementById("detail").hidden = false;
    var link = document.getElementById("detail-link");
    link.href = item.file;
    var img = document.getElementById("detail-img");
    img.src = item.file;
    img.alt = item.prompt || item.relative;
    var table = document.getElementById("detail-meta");
    table.textContent = "";
    row(table, "prompt", item.prompt);
    row(table, "model", item.model);
    row(table, "created", item.created);
    row(table, "size", item.width + "×" + item.height + " " + item.format);
    row(table, "cost", money(item.cost_usd));
    Object.keys(item.applied || {}).forEach(function (k) { if (k !== "model") { row(table, k, item.applied[k]); } });
    row(table, "uri", item.uri);
    row(table, "edited from", item.edited_from);
    row(table, "job", item.job_id);
    if (item.session_id) {
      var tr = el("tr");
      tr.appendChild(el("td", {}, "session"));
      var cell = el("td", {}, item.session_id + " · turn " + item.turn);
      var button = el("button", { type: "button", "class": "session-link" }, "lineage tree");
      button.addEventListener("click", function () { showTree(item.session_id); });
      cell.appendChild(button);
      tr.appendChild(cell);
      table.appendChild(tr);
    }
  }

  function card(item) {
    var box = el("button", { type: "button", "class": "card", "data-relative": item.relative });
    var img = el("img", { src: item.thumb, alt: item.prompt || item.relative, loading: "lazy" });
    box.appendChild(img);
    box.appendChild(el("div", { "class": "prompt" }, item.prompt || "(no prompt)"));
    box.appendChild(el("div", { "class": "line" },
      (item.model || "?") + " · " + (item.created || "").slice(0, 10) + " · " + money(item.cost_usd)));
    box.addEventListener("click", function () { showDetail(item); });
    return box;
  }

  function load(append) {
    var params = filters();
    if (append && nextCursor) { params.set("cursor", nextCursor); }
    errorLine.textContent = "";
    return getJSON(base + "/api/images?" + params.toString()).then(function (body) {
      if (!append) { grid.textContent = ""; shown = 0; }
      body.images.forEach(function (item) { grid.appendChild(card(item)); });
      shown += body.images.length;
      nextCursor = body.next_cursor;
      more.hidden = !nextCursor;
      document.getElementById("count").textContent = shown + " image(s)" + (nextCursor ? " so far" : "");
      document.body.setAttribute("data-loaded", "1");
    }).catch(fail);
  }

  function treeList(nodes, parentTurn) {
    var list = el("ul", parentTurn === undefined ? { "class": "tree" } : {});
    nodes.filter(function (n) {
      return parentTurn === undefined ? n.parent_turn === null : n.parent_turn === parentTurn;
    }).forEach(function (node) {
      var li = el("li", { "data-turn": node.turn });
      var button = el("button", { type: "button", "class": "node" });
      button.appendChild(el("img", { src: node.thumb, alt: "" }));
      button.appendChild(el("span", {}, "turn " + node.turn + ": " + (node.prompt || "") + " (" + money(node.cost_usd) + ")"));
      button.addEventListener("click", function () { showDetail(node); });
      li.appendChild(button);
      var children = nodes.filter(function (n) { return n.parent_turn === node.turn; });
      if (children.length) { li.appendChild(treeList(nodes, node.turn)); }
      list.appendChild(li);
    });
    return list;
  }

  function showTree(sessionId) {
    getJSON(base + "/api/sessions/" + encodeURIComponent(sessionId)).then(function (body) {
      document.getElementById("tree").hidden = false;
      document.getElementById("tree-id").textContent = body.session_id;
      var holder = document.getElementById("tree-body");
      holder.textContent = "";
      holder.appendChild(treeList(body.nodes));
    }).catch(fail);
  }

  function summary() {
    return getJSON(base + "/api/summary").then(function (body) {
      document.getElementById("totals").textContent =
        body.images + " image(s), " + (body.bytes / 1048576).toFixed(1) + " MiB";
      [["model", body.models], ["provider", body.providers]].forEach(function (pair) {
        var select = document.getElementById(pair[0]);
        pair[1].forEach(function (value) { select.appendChild(el("option", { value: value }, value)); });
      });
      var sessions = document.getElementById("session");
      body.sessions.forEach(function (s) {
        sessions.appendChild(el("option", { value: s.session_id }, s.session_id.slice(0, 14) + "… (" + s.images + ")"));
      });
      var tbody = document.querySelector("#per-day tbody");
      body.cost_per_day.forEach(function (day) {
        var tr = el("tr");
        tr.appendChild(el("td", {}, day.day));
        tr.appendChild(el("td", {}, day.images));
        tr.appendChild(el("td", {}, money(day.cost_usd)));
        tbody.appendChild(tr);
      });
    }).catch(fail);
  }

  form.addEventListener("submit", function (event) { event.preventDefault(); load(false); });
  document.getElementById("clear").addEventListener("click", function () { form.reset(); load(false); });
  document.getElementById("session").addEventListener("change", function (event) {
    if (event.target.value) { showTree(event.target.value); }
    load(false);
  });
  more.addEventListener("click", function () { load(true); });
  summary().then(function () { return load(false); });
})();
