// pflow trace report: draws the waterfall from the embedded span data and
// shows a span's details on click (or from #span=<id> in the URL).
// Every piece of trace data goes into the page through textContent.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("pflow-data").textContent);
  var spans = data.spans;
  // Attribute and event names, from pflow's registry (src/telemetry/attr.rs).
  var N = data.names;
  var byId = {};
  spans.forEach(function (s) { byId[s.id] = s; });
  var total = Math.max(data.total_ms, 0.001);
  var KIND_LABEL = { workflow: "workflow", node: "node", item: "batch item", llm: "LLM call", planner: "planner", other: "span" };
  var MESSAGE_KEYS = [N.GEN_AI_SYSTEM_INSTRUCTIONS, N.GEN_AI_INPUT_MESSAGES, N.GEN_AI_OUTPUT_MESSAGES];

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function fmtMs(ms) {
    if (ms < 1) return ms.toFixed(2) + " ms";
    if (ms < 1000) return ms.toFixed(1) + " ms";
    if (ms < 60000) return (ms / 1000).toFixed(2) + " s";
    var s = Math.round(ms / 1000);
    return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
  }

  function attr(s, key) {
    for (var i = 0; i < s.attrs.length; i++) if (s.attrs[i][0] === key) return s.attrs[i][1];
    return undefined;
  }

  function valueText(v) {
    if (v === null || v === undefined) return "";
    if (typeof v === "string") return v;
    return JSON.stringify(v);
  }

  // JSON objects and arrays pretty-printed; anything else as it is.
  function pretty(v) {
    var t = valueText(v);
    var c = t.trim().charAt(0);
    if (c === "{" || c === "[") {
      try { return JSON.stringify(JSON.parse(t), null, 2); } catch (e) { /* not JSON */ }
    }
    return t;
  }

  // Ticks at 1, 2 or 5 times a power of ten, about eight across.
  function tickStep(range) {
    var raw = range / 8;
    var p = Math.pow(10, Math.floor(Math.log10(raw)));
    var m = raw / p;
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
  }

  var rowsEl = {};
  var selected = null;
  // The visible time window (ms from the run start); zooming narrows it.
  var view = { from: 0, to: total };

  function tickLabel(t, step) {
    var digits = step >= 1 ? 0 : Math.min(3, Math.ceil(-Math.log10(step)));
    if (t >= 1000 && step >= 100) return (t / 1000).toFixed(step >= 1000 ? 0 : 1) + " s";
    return t.toFixed(digits) + " ms";
  }

  function pct(t) {
    return ((t - view.from) / (view.to - view.from) * 100) + "%";
  }

  // A zoom the user asks for is a history entry, so the browser's Back
  // returns to the previous view.
  function zoomByUser(from, to) {
    try { history.pushState({ pflowZoom: [from, to] }, ""); } catch (e) { /* file: URLs may refuse */ }
    zoom(from, to);
  }

  function zoom(from, to) {
    if (!(to > from)) { from = 0; to = total; }
    var pad = (to - from) * 0.02;
    view = { from: Math.max(0, from - pad), to: Math.min(total, to + pad) };
    if (from <= 0 && to >= total) view = { from: 0, to: total };
    drawWaterfall();
    if (selected) select(selected, false);
  }

  function drawWaterfall() {
    var root = document.getElementById("waterfall");
    root.textContent = "";
    var wf = el("div", "wf");
    var head = el("div", "wf-head");
    head.appendChild(el("div", null, "Span"));
    var axis = el("div", "axis");
    var range = view.to - view.from;
    var step = tickStep(range);
    var ticks = [];
    for (var t = Math.ceil(view.from / step) * step; t <= view.to + 1e-9; t += step) ticks.push(t);
    ticks.forEach(function (t) {
      var tk = el("div", "tick");
      tk.style.left = pct(t);
      // A label too close to the right edge would run into the next column.
      if ((t - view.from) / range < 0.9) tk.appendChild(el("span", null, tickLabel(t, step)));
      axis.appendChild(tk);
    });
    head.appendChild(axis);
    head.appendChild(el("div", null, "Duration"));
    wf.appendChild(head);

    var rows = el("div", "rows");
    // Grid lines once, behind all rows (not per row: 10k rows stay light).
    var overlay = el("div", "grid-overlay");
    ticks.forEach(function (t) {
      var g = el("div", "grid-line");
      g.style.left = pct(t);
      overlay.appendChild(g);
    });
    rows.appendChild(overlay);
    var frag = document.createDocumentFragment();
    var limit = Math.min(spans.length, data.row_limit);
    var hasKids = {};
    spans.forEach(function (s) { hasKids[s.parent] = true; });
    for (var i = 0; i < limit; i++) {
      var s = spans[i];
      var row = el("div", "row k-row-" + s.kind + (s.failed ? " failed" : "") + (s.critical ? " critical" : ""));
      row.setAttribute("data-id", s.id);
      row.setAttribute("role", "button");
      row.tabIndex = 0;
      var lbl = el("div", "lbl");
      lbl.style.paddingLeft = (6 + s.depth * 14) + "px";
      lbl.appendChild(el("span", "caret", hasKids[s.id] ? "\u25BE" : ""));
      var att = attr(s, N.NODE_ATTEMPT) || attr(s, N.LLM_ATTEMPT);
      lbl.appendChild(el("span", "nm", (s.failed ? "\u2717 " : "") + (s.reuse ? "\u21BA " : "") + s.name + (att > 1 ? " (attempt " + att + ")" : "")));
      lbl.title = s.reuse || s.name;
      row.appendChild(lbl);
      var track = el("div", "track");
      var bar = el("div", "bar k-" + s.kind + (s.failed ? " failed" : "") + (s.critical ? " critical" : ""));
      var b0 = Math.max(s.start, view.from), b1 = Math.min(s.end, view.to);
      if (b1 >= b0) {
        bar.style.left = pct(b0);
        bar.style.width = (Math.max(b1 - b0, 0) / range * 100) + "%";
      } else {
        bar.style.display = "none";
      }
      bar.title = s.name + " \u00B7 " + fmtMs(s.end - s.start) + " \u00B7 starts at +" + fmtMs(s.start) + (s.critical ? " \u00B7 on the critical path" : "");
      track.appendChild(bar);
      row.appendChild(track);
      row.appendChild(el("div", "dur", fmtMs(s.end - s.start)));
      rowsEl[s.id] = row;
      frag.appendChild(row);
    }
    rows.appendChild(frag);
    rows.addEventListener("click", function (ev) {
      var r = ev.target.closest("[data-id]");
      if (r) select(r.getAttribute("data-id"), true);
    });
    rows.addEventListener("dblclick", function (ev) {
      var r = ev.target.closest("[data-id]");
      var s = r && byId[r.getAttribute("data-id")];
      if (s) zoomByUser(s.start, s.end);
    });
    rows.addEventListener("keydown", function (ev) {
      if (ev.key !== "Enter" && ev.key !== " ") return;
      var r = ev.target.closest("[data-id]");
      if (r) { ev.preventDefault(); select(r.getAttribute("data-id"), true); }
    });
    wf.appendChild(rows);
    var bar2 = el("div", "wf-tools");
    var zoomed = view.from > 0 || view.to < total;
    bar2.appendChild(el("span", "muted", zoomed
      ? "Showing " + fmtMs(view.from) + " \u2013 " + fmtMs(view.to) + " of " + fmtMs(total)
      : "Click a span for details; double-click to zoom to it."));
    if (zoomed) {
      var reset = el("button", "btn", "Reset zoom");
      reset.addEventListener("click", function () { zoomByUser(0, total); });
      bar2.appendChild(reset);
    }
    root.appendChild(bar2);
    root.appendChild(wf);
    if (spans.length > limit) {
      root.appendChild(el("div", "wf-note", "Showing the first " + limit + " of " + spans.length +
        " spans. The tables below cover the whole run; `pflow trace show` lists every span."));
    }
  }

  function section(parent, title) {
    parent.appendChild(el("h4", null, title));
  }

  function kvRow(grid, k, v, asPre) {
    grid.appendChild(el("div", "k", k));
    var cell = el("div", "v");
    if (asPre) cell.appendChild(el("pre", null, v)); else cell.textContent = v;
    grid.appendChild(cell);
  }

  function kvList(parent, pairs, cls) {
    var grid = el("div", "kv" + (cls ? " " + cls : ""));
    pairs.forEach(function (p) {
      var text = pretty(p[1]);
      kvRow(grid, p[0], text, text.indexOf("\n") >= 0 || text.length > 80);
    });
    parent.appendChild(grid);
  }

  // GenAI message JSON: [{role, parts: [{type, content}]}] (or {role, content}).
  function messages(parent, raw, fallbackRole) {
    var list;
    try { list = JSON.parse(raw); } catch (e) { list = null; }
    if (!Array.isArray(list)) {
      parent.appendChild(el("pre", null, pretty(raw)));
      return;
    }
    list.forEach(function (m) {
      var box = el("div", "msg");
      var role = (m && (m.role || m.type)) || fallbackRole;
      box.appendChild(el("div", "role", role));
      var texts = [];
      if (m && typeof m.content === "string") texts.push(m.content);
      (m && Array.isArray(m.parts) ? m.parts : []).forEach(function (p) {
        if (p && typeof p.content === "string") texts.push(p.content);
        else texts.push(JSON.stringify(p, null, 2));
      });
      if (!texts.length) texts.push(JSON.stringify(m, null, 2));
      box.appendChild(el("pre", null, texts.join("\n")));
      parent.appendChild(box);
    });
  }

  function renderDetails(s) {
    var box = document.getElementById("details");
    box.textContent = "";
    box.appendChild(el("h3", null, s.name));
    var chips = el("div", "chips");
    chips.appendChild(el("span", "chip", KIND_LABEL[s.kind] || s.kind));
    chips.appendChild(el("span", s.failed ? "chip err" : "chip okc", s.failed ? "failed" : (s.reuse ? attr(s, N.NODE_STATUS) : "ok")));
    var attempt = attr(s, N.NODE_ATTEMPT) || attr(s, N.LLM_ATTEMPT);
    if (attempt > 1) chips.appendChild(el("span", "chip", "attempt " + attempt));
    box.appendChild(chips);
    if (s.end > s.start) {
      var zb = el("button", "btn", "Zoom timeline to this span");
      zb.addEventListener("click", function () { zoomByUser(s.start, s.end); });
      box.appendChild(zb);
    }

    if (s.reuse) box.appendChild(el("div", "notice", "\u21BA " + s.reuse));
    var err = attr(s, N.ERROR_TYPE);
    if (s.failed || err) {
      var msg = [err, s.status].filter(function (x) { return x; });
      if (msg.length === 2 && msg[0] === msg[1]) msg.pop();
      box.appendChild(el("div", "err-box", msg.join(": ") || "error"));
    }

    var over = [["Span id", s.id], ["Starts at", "+" + fmtMs(s.start)], ["Duration", fmtMs(s.end - s.start)]];
    [["Node", N.NODE_PATH], ["Type", N.NODE_TYPE], ["Action", N.NODE_ACTION],
     ["Model", N.GEN_AI_REQUEST_MODEL], ["Response model", N.GEN_AI_RESPONSE_MODEL],
     ["Provider", N.GEN_AI_PROVIDER_NAME], ["Input tokens", N.USAGE_INPUT_TOKENS],
     ["Output tokens", N.USAGE_OUTPUT_TOKENS], ["Cost (USD)", N.COST_USD],
     ["Cost source", N.COST_SOURCE]].forEach(function (p) {
      var v = attr(s, p[1]);
      if (v !== undefined && v !== "") over.push([p[0], valueText(v)]);
    });
    section(box, "Overview");
    kvList(box, over);

    // Resource use (docs/telemetry.md, "Resource use per node").
    function fmtBytes(n) {
      if (n < 1024) return n + " B";
      var u = ["KiB", "MiB", "GiB", "TiB"], i = -1;
      do { n /= 1024; i++; } while (n >= 1024 && i < u.length - 1);
      return n.toFixed(n < 10 ? 2 : 1) + " " + u[i];
    }
    var us = function (v) { return fmtMs(v / 1000); };
    var secs = function (v) { return fmtMs(v * 1000); };
    var res = [];
    [["Command CPU (user)", N.PROCESS_CPU_USER, us], ["Command CPU (system)", N.PROCESS_CPU_SYSTEM, us],
     ["Command peak RSS", N.PROCESS_MEMORY_PEAK, fmtBytes], ["pflow busy time", N.NODE_BUSY_US, us],
     ["pflow peak RSS (new high)", N.NODE_RSS_PEAK, fmtBytes], ["Request body", N.HTTP_REQUEST_BODY_SIZE, fmtBytes],
     ["Response body", N.HTTP_RESPONSE_BODY_SIZE, fmtBytes], ["Time to first byte", N.HTTP_TIME_TO_FIRST_BYTE, secs],
     ["Time to first chunk", N.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK, secs],
     ["Output tokens/s", N.LLM_OUTPUT_TOKENS_PER_S, function (v) { return v.toFixed(1); }]].forEach(function (p) {
      var v = attr(s, p[1]);
      if (typeof v === "number") res.push([p[0], p[2](v)]);
    });
    if (res.length) {
      section(box, "Resources");
      kvList(box, res, "resources");
    }

    var params = attr(s, N.NODE_PARAMS);
    if (params !== undefined) {
      section(box, "Params");
      box.appendChild(el("pre", null, pretty(params)));
    }

    var titles = {}, roles = {};
    titles[N.GEN_AI_SYSTEM_INSTRUCTIONS] = "System"; roles[N.GEN_AI_SYSTEM_INSTRUCTIONS] = "system";
    titles[N.GEN_AI_INPUT_MESSAGES] = "Prompt"; roles[N.GEN_AI_INPUT_MESSAGES] = "user";
    titles[N.GEN_AI_OUTPUT_MESSAGES] = "Response"; roles[N.GEN_AI_OUTPUT_MESSAGES] = "assistant";
    MESSAGE_KEYS.forEach(function (k) {
      var v = attr(s, k);
      if (v === undefined) return;
      section(box, titles[k]);
      var holder = el("div", "messages");
      holder.setAttribute("data-key", k);
      messages(holder, valueText(v), roles[k]);
      box.appendChild(holder);
    });

    if (s.events.length) {
      section(box, "Events (" + s.events.length + ")");
      s.events.forEach(function (e) {
        var ev = el("div", "event" + (e.name === N.EVENT_EXCEPTION ? " exc" : ""));
        var h = el("div", "event-head");
        h.appendChild(el("span", null, e.name));
        h.appendChild(el("span", "t", "+" + fmtMs(e.t)));
        ev.appendChild(h);
        if (e.attrs.length) kvList(ev, e.attrs, "attrs");
        box.appendChild(ev);
      });
    }

    var rest = s.attrs.filter(function (p) { return MESSAGE_KEYS.indexOf(p[0]) < 0 && p[0] !== N.NODE_PARAMS; });
    if (rest.length) {
      section(box, "Attributes (" + rest.length + ")");
      kvList(box, rest, "attrs");
    }
    if (s.parent && byId[s.parent]) {
      section(box, "Parent");
      var a = el("a", null, byId[s.parent].name);
      a.setAttribute("href", "#span=" + s.parent);
      a.addEventListener("click", function (ev) { ev.preventDefault(); select(s.parent, true); });
      box.appendChild(a);
    }
  }

  function select(id, fromUser) {
    var s = byId[id];
    if (!s) return;
    if (selected && rowsEl[selected]) rowsEl[selected].classList.remove("selected");
    selected = id;
    var row = rowsEl[id];
    if (row) {
      row.classList.add("selected");
      if (fromUser && row.scrollIntoView) row.scrollIntoView({ block: "nearest" });
    }
    renderDetails(s);
    if (fromUser) {
      try { history.replaceState(history.state, "", "#span=" + id); } catch (e) { /* file: URLs may refuse */ }
    }
  }

  function fromHash() {
    var m = /^#span=([0-9a-fA-F]+)$/.exec(location.hash || "");
    if (m) select(m[1].toLowerCase(), false);
  }

  drawWaterfall();
  fromHash();
  window.addEventListener("hashchange", fromHash);
  window.addEventListener("popstate", function (ev) {
    var z = ev.state && ev.state.pflowZoom;
    if (z) zoom(z[0], z[1]); else zoom(0, total);
  });
  document.body.setAttribute("data-rendered", "true");
  document.body.setAttribute("data-rows", String(Math.min(spans.length, data.row_limit)));
}());
