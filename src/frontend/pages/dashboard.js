// Bazar's operator dashboard: asks GET /cluster about every second and shows each
// service's state, a drawing of the topology, and the changes seen between answers.
// Rates and p99 are computed here from two successive answers' counters and histograms.
//
// Rule: no data is ever code. Server text goes on the page with textContent only.
"use strict";

(function () {
  const INTERVAL_MS = 1000;
  const TIMEOUT_MS = 3000;
  const MAX_EVENTS = 14;
  const SVG = "http://www.w3.org/2000/svg";

  const $ = (id) => document.getElementById(id);
  let previous = null; // the last answer
  const states = new Map(); // service key -> { state, role }
  let lastEpoch = null; // the newest epoch a primary showed (with etcd), once seen
  let answering = true;

  function el(tag, className, ...children) {
    const e = document.createElement(tag);
    if (className) e.className = className;
    for (const c of children) e.append(c);
    return e;
  }

  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }

  const clock = (ms) => new Date(ms).toLocaleTimeString([], { hour12: false });
  const port = (url) => {
    try {
      const u = new URL(url);
      return u.hostname === "127.0.0.1" || u.hostname === "localhost" ? ":" + u.port : u.host;
    } catch (_) {
      return String(url);
    }
  };

  function stateOf(s) {
    if (!s.up) return "down";
    return s.ready ? "ready" : "notready";
  }

  // A service's role now, or the last one seen while it was up.
  function roleOf(key, s) {
    const seen = states.get(key);
    return s.role || (seen && seen.role) || "?";
  }

  function stateText(s) {
    const st = stateOf(s);
    if (st === "down") return "down";
    if (st === "notready") return "not ready" + (s.ready_status ? " (" + s.ready_status + ")" : "");
    return "ready";
  }

  // Every service in an answer, with a stable key and a name people read.
  function services(c) {
    const list = [{ key: "frontend", name: "front end", s: c.frontend }];
    for (const m of c.memcached) list.push({ key: "memcached " + m.address, name: "memcached " + m.address, s: m });
    for (const s of c.catalogs) list.push({ key: "catalog " + s.url, name: "catalog " + s.url, s: s });
    for (const s of c.orders) list.push({ key: "order " + s.url, name: "order server " + s.url, s: s });
    return list;
  }

  // Adds an event on top of the timeline (a live region: only the new one is read out).
  function addEvent(at, kind, text) {
    const list = $("timeline");
    list.prepend(el("li", "event " + kind, el("time", null, clock(at)), " ", el("span", null, text)));
    while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
  }

  // Compares with the states seen before and records what changed.
  function noteChanges(c) {
    const now = c.at_ms;
    if (states.size === 0) addEvent(now, "info", "Watching " + services(c).length + " services.");
    // A new epoch is a change of primary (failover or switchover, with etcd).
    const led = c.catalogs.filter((s) => s.up && s.role === "primary" && typeof s.epoch === "number");
    const newest = led.reduce((a, s) => (a && a.epoch >= s.epoch ? a : s), null);
    if (newest && newest.epoch > 0) {
      if (lastEpoch !== null && newest.epoch > lastEpoch) addEvent(now, "warn", "New primary " + newest.url + " at epoch " + newest.epoch + ".");
      lastEpoch = Math.max(lastEpoch || 0, newest.epoch);
    }
    for (const { key, name, s } of services(c)) {
      const st = stateOf(s);
      const role = s.role || null;
      const before = states.get(key);
      if (!before) {
        if (st !== "ready") addEvent(now, st === "down" ? "down" : "warn", name + " is " + stateText(s) + ".");
      } else {
        if (before.state !== st) {
          if (st === "down") addEvent(now, "down", name + " is down" + (s.error ? " (" + s.error + ")" : "") + ".");
          else if (st === "notready") addEvent(now, "warn", name + " is up but " + stateText(s) + ".");
          else addEvent(now, "back", name + (before.state === "down" ? " is back and ready." : " is ready again."));
        }
        if (role && before.role && role !== before.role) addEvent(now, "warn", name + " is now " + role + ".");
      }
      states.set(key, { state: st, role: role || (before && before.role) || null });
    }
  }

  // Requests per second between two answers, or null.
  function rate(now, before, dt) {
    if (!before || typeof now.requests !== "number" || typeof before.requests !== "number" || dt <= 0) return null;
    const d = now.requests - before.requests;
    return d < 0 ? null : d / dt;
  }

  // The 99th percentile's bucket bound (seconds; Infinity past the last) between two answers.
  function p99(now, before) {
    if (!before || !Array.isArray(now.buckets) || now.buckets.length === 0 || !Array.isArray(before.buckets)) return null;
    const old = new Map(before.buckets.map(([le, n]) => [String(le), n]));
    const deltas = now.buckets.map(([le, n]) => [le, n - (old.get(String(le)) || 0)]);
    const total = deltas[deltas.length - 1][1];
    if (!(total > 0)) return null;
    for (const [le, n] of deltas) if (n >= 0.99 * total) return le === null ? Infinity : le;
    return null;
  }

  const fmtRate = (r) => (r === null ? "\u2014" : r < 10 ? r.toFixed(1) : Math.round(r).toString());
  function fmtLatency(le) {
    if (le === null) return "\u2014";
    if (le === Infinity) return "> 2.5 s";
    return le < 1 ? "\u2264 " + +(le * 1000).toFixed(1) + " ms" : "\u2264 " + le + " s";
  }
  const fmtMs = (ms) => (ms === null || ms === undefined ? "\u2014" : (ms / 1000).toFixed(1) + " s");
  const ratio = (hits, misses) => (hits + misses > 0 ? Math.round((100 * hits) / (hits + misses)) + "%" : "\u2014");

  function find(list, key, value) {
    return (list || []).find((x) => x[key] === value) || null;
  }

  function stateCell(s) {
    const st = stateOf(s);
    const td = el("td", "state " + st, el("span", "dot " + st), " " + stateText(s));
    return td;
  }

  function row(url, cells) {
    const tr = el("tr");
    tr.setAttribute("data-url", url);
    for (const c of cells) tr.append(c instanceof Node ? c : el("td", null, String(c)));
    return tr;
  }

  function renderTables(c, p, dt) {
    const primary = c.catalogs.find((s) => s.up && s.role === "primary");
    $("catalogs").tBodies[0].replaceChildren(
      ...c.catalogs.map((s) => {
        const b = p && find(p.catalogs, "url", s.url);
        let seq = s.seq === undefined ? "\u2014" : String(s.seq);
        if (primary && s.role === "replica" && typeof s.seq === "number" && primary.seq > s.seq) seq += " (" + (primary.seq - s.seq) + " behind)";
        let lease = "\u2014";
        if (s.role === "replica") lease = s.primary_down ? fmtMs(s.lease_ms_left) + ", extended: the primary said farewell" : fmtMs(s.lease_ms_left);
        const sync = s.in_sync === true ? "yes" : s.in_sync === false ? "no" : "\u2014";
        return row(s.url, [
          el("td", "url", s.url),
          stateCell(s),
          s.role || "\u2014",
          typeof s.epoch === "number" && s.epoch > 0 ? String(s.epoch) : "\u2014",
          seq,
          lease,
          el("td", s.in_sync === false ? "bad" : null, sync),
          s.books === undefined ? "\u2014" : String(s.books),
          fmtRate(rate(s, b, dt)),
          fmtLatency(p99(s, b)),
        ]);
      })
    );
    $("orders").tBodies[0].replaceChildren(
      ...c.orders.map((s) => {
        const b = p && find(p.orders, "url", s.url);
        const pulls = (s.peers || []).map((peer) => port(peer.url) + ": " + (peer.last_pull_ms_ago === null ? "never" : fmtMs(peer.last_pull_ms_ago) + " ago"));
        return row(s.url, [
          el("td", "url", s.url),
          stateCell(s),
          s.orders === undefined ? "\u2014" : String(s.orders),
          s.taken === null || s.taken === undefined ? "\u2014" : String(s.taken),
          pulls.length ? pulls.join(", ") : "no peers",
          fmtRate(rate(s, b, dt)),
          fmtLatency(p99(s, b)),
        ]);
      })
    );
    const fe = c.frontend;
    const pf = p && p.frontend;
    let hit = "\u2014";
    if (typeof fe.cache_hits === "number") {
      const dh = pf && typeof pf.cache_hits === "number" ? fe.cache_hits - pf.cache_hits : 0;
      const dm = pf && typeof pf.cache_misses === "number" ? fe.cache_misses - pf.cache_misses : 0;
      hit = dh + dm > 0 ? ratio(dh, dm) + " now" : ratio(fe.cache_hits, fe.cache_misses) + " overall";
    }
    const rows = [
      row("frontend", [el("td", "url", "this front end"), stateCell(fe), hit, "cache " + fe.cache, fmtRate(rate(fe, pf, dt)), fmtLatency(p99(fe, pf))]),
    ];
    if (fe.near !== "off" && typeof fe.near_hits === "number") {
      const dh = pf && typeof pf.near_hits === "number" ? fe.near_hits - pf.near_hits : 0;
      const dm = pf && typeof pf.near_misses === "number" ? fe.near_misses - pf.near_misses : 0;
      const nearHit = dh + dm > 0 ? ratio(dh, dm) + " now" : ratio(fe.near_hits, fe.near_misses) + " overall";
      const mb = ((fe.near_bytes || 0) / 1048576).toFixed(1);
      const details = "near cache " + (fe.near === "on" ? "leased" : "no lease") + ", " + (fe.near_entries || 0) + " entries, " + mb + " MB, " +
        (fe.near_invalidations || 0) + " invalidated, " + (fe.near_evictions || 0) + " evicted, " + (fe.near_resets || 0) + " resets";
      rows.push(row("near", [el("td", "url", "near cache (this front end)"), stateCell({ up: true, ready: fe.near === "on" }), nearHit, details, "\u2014", "\u2014"]));
    }
    for (const m of c.memcached) {
      const details = m.up ? m.items + " items, up " + Math.round(m.uptime_s / 60) + " min" : m.error || "no answer";
      rows.push(row(m.address, [el("td", "url", "memcached " + m.address), stateCell(m), m.up ? ratio(m.hits, m.misses) + " overall" : "\u2014", details, "\u2014", "\u2014"]));
    }
    $("edge").tBodies[0].replaceChildren(...rows);
  }

  // The topology: the front end on top, memcached beside it, catalogs and order servers below.
  function renderTopology(c) {
    const W = 760, H = 300, BW = 150, BH = 54;
    const box = svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "aria-labelledby": "topo-title topo-desc" });
    box.append(svg("desc", { id: "topo-desc" }, "The front end sends reads to the catalogs and purchases to the order servers; the primary pushes writes to the replicas."));
    const spread = (n, from, to) => Array.from({ length: n }, (_, i) => from + ((to - from) * (i + 0.5)) / n);
    const nodes = [];
    const fe = { x: W / 2, y: 44, s: c.frontend, name: "front end", sub: "round robin" };
    nodes.push(fe);
    const mcs = c.memcached.map((m, i) => ({ x: W - 100, y: 44 + i * 62, s: m, name: "memcached", sub: port("http://" + m.address) }));
    const cats = spread(c.catalogs.length, 0, W / 2).map((x, i) => ({ x, y: 200, s: c.catalogs[i], name: "catalog " + port(c.catalogs[i].url), sub: roleOf("catalog " + c.catalogs[i].url, c.catalogs[i]) }));
    const ords = spread(c.orders.length, W / 2, W).map((x, i) => ({ x, y: 200, s: c.orders[i], name: "order " + port(c.orders[i].url), sub: c.orders[i].up ? (c.orders[i].orders || 0) + " orders" : "" }));
    const line = (a, b, cls) => box.append(svg("line", { x1: a.x, y1: a.y, x2: b.x, y2: b.y, class: "edge " + cls + (a.s.up && b.s.up ? "" : " cut") }));
    for (const m of mcs) line(fe, m, "cache");
    for (const n of cats.concat(ords)) line(fe, n, "call");
    const primary = cats.find((n) => n.s.role === "primary");
    for (const n of cats) {
      if (primary && n !== primary) {
        const midX = (primary.x + n.x) / 2;
        box.append(svg("path", { d: "M" + primary.x + " " + (primary.y + BH / 2) + " Q" + midX + " " + (H - 4) + " " + n.x + " " + (n.y + BH / 2), class: "edge push" + (n.s.up && primary.s.up ? "" : " cut") }));
        box.append(svg("text", { x: midX, y: H - 24, class: "edge-label" }, "push"));
      }
    }
    for (let i = 0; i + 1 < ords.length; i++) {
      const a = ords[i], b = ords[i + 1];
      box.append(svg("path", { d: "M" + a.x + " " + (a.y + BH / 2) + " Q" + (a.x + b.x) / 2 + " " + (H - 4) + " " + b.x + " " + (b.y + BH / 2), class: "edge peer" + (a.s.up && b.s.up ? "" : " cut") }));
      box.append(svg("text", { x: (a.x + b.x) / 2, y: H - 24, class: "edge-label" }, "sync"));
    }
    for (const n of nodes.concat(mcs, cats, ords)) {
      const g = svg("g", { class: "node " + stateOf(n.s) + (n.s.role === "primary" ? " primary" : "") });
      g.append(svg("rect", { x: n.x - BW / 2, y: n.y - BH / 2, width: BW, height: BH, rx: 10 }));
      g.append(svg("text", { x: n.x, y: n.y - 5, class: "name" }, n.name));
      g.append(svg("text", { x: n.x, y: n.y + 14, class: "sub" }, n.sub + (n.sub ? " \u00b7 " : "") + stateText(n.s)));
      box.append(g);
    }
    $("topology").replaceChildren(box);
  }

  function renderSummary(c) {
    const list = services(c);
    const ready = list.filter(({ s }) => stateOf(s) === "ready").length;
    const down = list.filter(({ s }) => stateOf(s) === "down").length;
    const sum = $("summary");
    sum.className = "summary " + (down > 0 ? "down" : ready < list.length ? "notready" : "ready");
    sum.textContent = ready + " of " + list.length + " services ready" + (down ? ", " + down + " down" : "") + " \u00b7 updated " + clock(c.at_ms) + " (" + c.gathered_ms + " ms)";
  }

  async function tick() {
    const started = Date.now();
    if (!$("pause").checked) {
      const abort = new AbortController();
      const timer = setTimeout(() => abort.abort(), TIMEOUT_MS);
      try {
        const response = await fetch("/cluster", { cache: "no-store", signal: abort.signal });
        if (!response.ok) throw new Error("HTTP " + response.status);
        const c = await response.json();
        if (!answering) addEvent(Date.now(), "back", "The front end answers again.");
        answering = true;
        const dt = previous ? (c.at_ms - previous.at_ms) / 1000 : 0;
        noteChanges(c);
        renderSummary(c);
        renderTopology(c);
        renderTables(c, previous, dt);
        previous = c;
      } catch (e) {
        if (answering) addEvent(Date.now(), "down", "The front end does not answer (" + (e && e.name === "AbortError" ? "timed out" : "unreachable") + ").");
        answering = false;
        const sum = $("summary");
        sum.className = "summary down";
        sum.textContent = "The front end does not answer; retrying\u2026";
      } finally {
        clearTimeout(timer);
      }
    }
    setTimeout(tick, Math.max(100, INTERVAL_MS - (Date.now() - started)));
  }

  // ---- The lab: only when this front end was started by bazar-cluster (GET /lab is 200;
  // elsewhere the route does not exist and nothing of this shows).

  const ACTIONS = [
    ["stop", "Stop", "SIGTERM: a graceful stop"],
    ["kill", "Kill", "SIGKILL: the process dies at once"],
    ["freeze", "Freeze", "SIGSTOP: the process hangs, its sockets stay open"],
    ["thaw", "Thaw", "SIGCONT: a frozen process runs again"],
    ["start", "Start", "start it again with the same settings"],
  ];
  // Which action applies in which state (as the lab decides: 409 otherwise).
  const APPLIES = {
    running: ["stop", "kill", "freeze"],
    frozen: ["stop", "kill", "thaw"],
    stopped: ["start"],
  };
  let lab = false;
  let labBusy = false;
  let timelineSeen = 0; // lab timeline entries already on the page (by time)
  let probeOn = true;

  async function labCall(method, path, body) {
    const init = { method: method, cache: "no-store", headers: { Accept: "application/json" } };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers["Content-Type"] = "application/json";
    }
    const response = await fetch(path, init);
    let json = null;
    try {
      json = await response.json();
    } catch (_) {
      // not JSON
    }
    return { status: response.status, json: json };
  }

  async function act(name, action) {
    labBusy = true;
    $("lab-note").textContent = action + " " + name + "\u2026";
    try {
      const a = await labCall("POST", "/lab/" + encodeURIComponent(name) + "/" + action);
      $("lab-note").textContent =
        a.status === 200 ? name + ": " + a.json.state + "." : name + ": " + ((a.json && a.json.error) || "HTTP " + a.status);
    } catch (_) {
      $("lab-note").textContent = "The lab does not answer.";
    } finally {
      labBusy = false;
      labTick();
    }
  }

  function renderLab(entries) {
    const body = $("lab-services").tBodies[0];
    body.replaceChildren();
    for (const e of entries) {
      const name = String(e.name);
      const buttons = el("td", "actions");
      for (const [action, label, why] of ACTIONS) {
        const b = el("button", action === "kill" || action === "freeze" ? "danger" : null, label);
        b.type = "button";
        b.dataset.action = action;
        b.title = why;
        b.setAttribute("aria-label", label + " " + name + " (" + why + ")");
        b.disabled = labBusy || !(APPLIES[e.state] || []).includes(action);
        b.addEventListener("click", () => act(name, action));
        buttons.append(b);
      }
      const tr = el(
        "tr",
        null,
        el("th", null, name),
        el("td", "url", String(e.url)),
        el("td", null, e.pid === null || e.pid === undefined ? "\u2013" : String(e.pid)),
        el("td", "lab-state " + e.state, String(e.state)),
        buttons
      );
      tr.querySelector("th").setAttribute("scope", "row");
      tr.dataset.name = name;
      body.append(tr);
    }
  }

  function yesNo(ok) {
    return ok ? "yes" : "NO";
  }

  function renderVerdict(v) {
    probeOn = v.probe === "on";
    $("probe-toggle").textContent = probeOn ? "Turn the probe off" : "Turn the probe on";
    const s = v.since_start;
    const broken = [];
    if (!v.linearizable || !s.linearizable) broken.push("a history that is not linearizable");
    if (s.acked_writes_lost > 0) broken.push(s.acked_writes_lost + " acknowledged writes lost");
    if (v.orders_missing > 0) broken.push(v.orders_missing + " acknowledged orders missing");
    if (!v.copies_match && s.ops > 0) broken.push("copies taken and orders logged differ");
    const box = $("verdict");
    const checked = s.ops > 0;
    box.className = "verdict " + (broken.length ? "bad" : checked ? "ok" : "");
    $("verdict-status").textContent = broken.length
      ? "A GUARANTEE WAS BROKEN: " + broken.join("; ") + "."
      : checked
        ? "Every guarantee held: " + s.ops + " operations checked in " + s.windows + (s.windows === 1 ? " window" : " windows") + (probeOn ? "." : " (the probe is off).")
        : probeOn
          ? "The probe is warming up: nothing checked yet."
          : "The probe is off: nothing checked.";
    const body = $("verdict-table").tBodies[0];
    body.replaceChildren();
    const copies = v.copies_taken + " / " + v.orders_logged + (v.copies_match ? "" : " (differ)");
    const rows = [
      ["Last minute", v.ops, v.linearizable, v.acked_writes_lost],
      ["Since start", s.ops, s.linearizable, s.acked_writes_lost],
    ];
    for (const [period, ops, lin, lost] of rows) {
      const tr = el("tr", null, el("th", null, period), el("td", null, String(ops)), el("td", lin ? null : "bad", yesNo(lin)), el("td", lost ? "bad" : null, String(lost)), el("td", v.orders_missing ? "bad" : null, String(v.orders_missing)), el("td", v.copies_match ? null : "bad", copies));
      tr.querySelector("th").setAttribute("scope", "row");
      body.append(tr);
    }
    const list = $("violations");
    list.replaceChildren();
    for (const x of (s.violations || []).slice(0, 3)) {
      list.append(el("li", null, "book " + x.book + " at " + clock(x.at_ms) + ":", el("pre", null, String(x.text))));
    }
    for (const t of v.timeline || []) {
      if (t.at_ms > timelineSeen) {
        const what = String(t.what);
        const kind = /kill|stop|froze|exited|not answering/.test(what) ? "down" : /primary/.test(what) ? "warn" : "info";
        addEvent(t.at_ms, kind, "Lab: " + what);
        timelineSeen = t.at_ms;
      }
    }
  }

  async function labTick() {
    try {
      const [entries, verdict] = await Promise.all([labCall("GET", "/lab"), labCall("GET", "/lab/verdict")]);
      if (entries.status === 200) renderLab(entries.json);
      if (verdict.status === 200) renderVerdict(verdict.json);
    } catch (_) {
      $("lab-note").textContent = "The lab does not answer.";
    }
  }

  async function labStart() {
    let a;
    try {
      a = await labCall("GET", "/lab");
    } catch (_) {
      return;
    }
    if (a.status !== 200) return; // no lab here: no buttons
    lab = true;
    $("lab").hidden = false;
    $("probe-toggle").addEventListener("click", async () => {
      await labCall("POST", "/lab/probe", { on: !probeOn });
      labTick();
    });
    $("switchover").addEventListener("click", async () => {
      $("lab-note").textContent = "Switchover\u2026";
      const r = await labCall("POST", "/lab/store/switchover", {});
      $("lab-note").textContent =
        r.status === 200 ? "Switchover done." : "Switchover: " + ((r.json && r.json.error) || "HTTP " + r.status);
      labTick();
    });
    renderLab(a.json);
    const loop = async () => {
      if (!$("pause").checked && !labBusy) await labTick();
      setTimeout(loop, INTERVAL_MS);
    };
    loop();
  }

  // ---- Traces: the last purchases and writes, each opened as a waterfall (one row per
  // span, indented under its parent, a bar from its start for its duration).
  const TRACE_INTERVAL_MS = 3000;
  const MAX_TRACES = 10;
  const WRITE = /^(POST|PATCH) /;
  let openTrace = null;

  async function fetchJSON(path) {
    try {
      const r = await fetch(path, { cache: "no-store" });
      return { status: r.status, json: r.ok ? await r.json() : null };
    } catch (_) {
      return { status: 0, json: null };
    }
  }

  const msText = (ms) => (ms >= 10 ? ms.toFixed(0) : ms >= 1 ? ms.toFixed(1) : ms.toFixed(2)) + " ms";
  const kindOf = (s) => String(s.service).replace(/^bazar-/, "").replace(/@.*$/, "");
  const where = (s) => kindOf(s) + " " + port("http://" + String(s.service).replace(/^[^@]*@/, ""));

  async function traceTick() {
    const a = await fetchJSON("/traces?limit=200");
    if (a.status !== 200 || !Array.isArray(a.json)) return;
    const writes = a.json.filter((t) => WRITE.test(String(t.name))).slice(0, MAX_TRACES);
    const list = $("trace-list");
    list.replaceChildren();
    if (writes.length === 0) list.append(el("li", "muted", "No purchase or write traced yet."));
    for (const t of writes) {
      const b = el(
        "button",
        "trace-item" + (t.trace_id === openTrace ? " open" : ""),
        el("span", "trace-name", String(t.name)),
        " ",
        el("span", "muted", clock(Number(t.start) / 1000) + " \u00b7 " + msText(Number(t.duration_ms)))
      );
      b.type = "button";
      b.dataset.trace = String(t.trace_id);
      b.addEventListener("click", () => showTrace(String(t.trace_id)));
      list.append(el("li", null, b));
    }
  }

  async function showTrace(id) {
    if (!/^[0-9a-f]{32}$/.test(id)) return;
    openTrace = id;
    history.replaceState(null, "", "#trace=" + id);
    for (const b of document.querySelectorAll(".trace-item")) b.classList.toggle("open", b.dataset.trace === id);
    const box = $("waterfall");
    box.replaceChildren(el("p", "muted", "Gathering trace " + id + " from every service\u2026"));
    const a = await fetchJSON("/traces/" + id);
    if (a.status !== 200 || !Array.isArray(a.json)) {
      box.replaceChildren(
        el(
          "p",
          "muted",
          a.status === 404
            ? "No service holds trace " + id + " any more (its spans were pushed out of the rings, or it was not sampled)."
            : "Could not gather trace " + id + " (HTTP " + a.status + ")."
        )
      );
      return;
    }
    renderWaterfall(id, a.json);
  }

  function renderWaterfall(id, spans) {
    const byId = new Map(spans.map((s) => [s.span_id, s]));
    const children = new Map();
    const roots = [];
    for (const s of spans) {
      if (s.parent_id && byId.has(s.parent_id)) {
        if (!children.has(s.parent_id)) children.set(s.parent_id, []);
        children.get(s.parent_id).push(s);
      } else {
        roots.push(s);
      }
    }
    const rows = [];
    const walk = (s, depth) => {
      rows.push([s, depth]);
      for (const c of (children.get(s.span_id) || []).sort((a, b) => a.start - b.start)) walk(c, depth + 1);
    };
    roots.sort((a, b) => a.start - b.start).forEach((r) => walk(r, 0));
    const t0 = Math.min(...spans.map((s) => Number(s.start)));
    const t1 = Math.max(...spans.map((s) => Number(s.start) + 1000 * Number(s.duration_ms)));
    const total = Math.max(t1 - t0, 1); // microseconds
    const ROW = 22, LABEL = 360, WIDTH = 1100, RIGHT = 70;
    const scale = (WIDTH - LABEL - RIGHT) / total;
    const drawing = svg("svg", {
      viewBox: "0 0 " + WIDTH + " " + (rows.length * ROW + 26),
      class: "waterfall-svg",
      role: "img",
      "aria-label": "Waterfall of trace " + id,
    });
    for (let i = 0; i <= 4; i++) {
      const x = LABEL + (i * (WIDTH - LABEL - RIGHT)) / 4;
      drawing.append(svg("line", { x1: x, x2: x, y1: 14, y2: rows.length * ROW + 22, class: "wf-grid" }));
      drawing.append(svg("text", { x: x, y: 11, class: "wf-tick" }, msText((i * total) / 4000)));
    }
    rows.forEach(([s, depth], i) => {
      const y = 18 + i * ROW;
      drawing.append(svg("text", { x: 4 + depth * 12, y: y + 14, class: "wf-label" }, where(s) + "  " + String(s.name)));
      const x = LABEL + (Number(s.start) - t0) * scale;
      const w = Math.max(1000 * Number(s.duration_ms) * scale, 1.5);
      const bar = svg("rect", { x: x, y: y + 4, width: w, height: ROW - 8, rx: 2, class: "wf-bar " + kindOf(s) + (s.status === "error" ? " error" : "") });
      const facts = Object.entries(s.attributes || {}).map(([k, v]) => k + "=" + String(v)).join(", ");
      bar.append(svg("title", {}, String(s.name) + " on " + String(s.service) + ": " + msText(Number(s.duration_ms)) + (facts ? " (" + facts + ")" : "")));
      drawing.append(bar);
      drawing.append(svg("text", { x: Math.min(x + w + 4, WIDTH - RIGHT + 4), y: y + 14, class: "wf-ms" }, msText(Number(s.duration_ms))));
    });
    const table = el("table", "wf-table");
    const head = el("tr", null);
    for (const h of ["Service", "Span", "Starts at", "Takes", "Status", "Attributes"]) {
      const th = el("th", null, h);
      th.scope = "col";
      head.append(th);
    }
    table.append(el("thead", null, head));
    const body = el("tbody", null);
    for (const [s, depth] of rows) {
      const facts = Object.entries(s.attributes || {}).map(([k, v]) => k + "=" + String(v)).join(", ");
      const name = el("td", null, "\u00a0".repeat(2 * depth) + String(s.name));
      body.append(
        el(
          "tr",
          s.status === "error" ? "bad" : null,
          el("td", null, where(s)),
          name,
          el("td", null, "+" + msText((Number(s.start) - t0) / 1000)),
          el("td", null, msText(Number(s.duration_ms))),
          el("td", null, String(s.status)),
          el("td", "muted", facts)
        )
      );
    }
    table.append(body);
    const services = new Set(spans.map((s) => s.service)).size;
    $("waterfall").replaceChildren(
      el("h3", null, "Trace " + id + ": " + spans.length + " spans in " + services + " services, " + msText(total / 1000)),
      drawing,
      table
    );
  }

  function traceStart() {
    const wanted = /^#trace=([0-9a-f]{32})$/.exec(location.hash);
    if (wanted) {
      showTrace(wanted[1]);
      $("traces").scrollIntoView();
    }
    const loop = async () => {
      if (!$("pause").checked) await traceTick();
      setTimeout(loop, TRACE_INTERVAL_MS);
    };
    loop();
  }

  tick();
  labStart();
  traceStart();
})();
