// quayside's dashboard: reads the admin API with the token kept in sessionStorage, follows
// /api/v1/events for changes and refreshes its figures every second. The DOM is updated in
// place (rows keyed by `no`), so focus and keyboard use survive the refreshes.
"use strict";

const TOKEN_KEY = "quayside-token";
const WINDOW = 300;
const state = {
  access: null, // "change", "read" or "none"
  backends: new Map(),
  services: [],
  sources: [],
  tls: null,
  stats: { services: new Map(), backends: new Map() },
  lastT: null,
  events: [],
  lastEventId: null,
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

function headers(extra = {}) {
  const h = { ...extra };
  const t = token();
  if (t) h.Authorization = "Bearer " + t;
  return h;
}

// One admin API call: { status, body } (JSON when the answer is JSON).
async function api(method, path, body) {
  const init = { method, headers: headers(body ? { "Content-Type": "application/json" } : {}) };
  if (body) init.body = JSON.stringify(body);
  const r = await fetch(path, init);
  const type = r.headers.get("content-type") || "";
  const data = type.includes("json") ? await r.json() : await r.text();
  if (r.status === 401) askToken("That token was not accepted.");
  return { status: r.status, ok: r.ok, body: data };
}

let noticeTimer = null;
// A message under the header: errors stay until the next one, confirmations go after a while.
function notice(text, kind = "error") {
  const n = $("notice");
  n.textContent = text;
  n.className = "notice " + (kind === "info" ? "info" : "");
  n.hidden = !text;
  clearTimeout(noticeTimer);
  if (kind === "info") noticeTimer = setTimeout(() => (n.hidden = true), 4000);
}

// ---- token and access -------------------------------------------------------------------

// Cancel buttons are type="button": Enter in a dialog's field submits its form with the first
// submit button, which must be the one that goes ahead, not Cancel.
for (const b of document.querySelectorAll("dialog button.cancel")) {
  b.addEventListener("click", () => b.closest("dialog").close("cancel"));
}

let asking = null;
function askToken(why) {
  if (asking) return asking;
  const d = $("token-dialog");
  $("token-error").hidden = !why;
  $("token-error").textContent = why || "";
  $("token-input").value = "";
  asking = new Promise((resolve) => {
    d.addEventListener(
      "close",
      () => {
        asking = null;
        if (d.returnValue === "ok" && $("token-input").value) {
          sessionStorage.setItem(TOKEN_KEY, $("token-input").value.trim());
          refreshAccess().then(() => refreshAll());
        }
        resolve();
      },
      { once: true }
    );
  });
  d.showModal();
  return asking;
}

async function refreshAccess() {
  // /api/v1/access answers without a token too ("none"), so asking never fails.
  const r = await fetch("/api/v1/access", { headers: headers() });
  const a = await r.json();
  state.access = a.access;
  const badge = $("access");
  badge.textContent = { change: "can change", read: "read-only", none: "no access" }[a.access];
  badge.className = "pill " + (a.access === "change" ? "ok" : "bad");
  badge.title = a.who || "";
  if (a.access === "none") {
    await askToken(token() ? "That token was not accepted." : "");
  }
  render();
}

// ---- data -------------------------------------------------------------------------------

async function refreshFigures() {
  if (state.access === "none") return;
  // Each backend's newest point is what its row shows; the services' history draws the charts.
  const since = "?backends=last" + (state.lastT === null ? "" : "&since=" + state.lastT);
  const [b, s] = await Promise.all([api("GET", "/api/v1/backends"), api("GET", "/api/v1/stats" + since)]);
  if (b.ok) {
    state.backends = new Map(b.body.backends.map((x) => [x.no, x]));
  }
  if (s.ok) {
    mergePoints(state.stats.services, s.body.services, (x) => x.name);
    mergePoints(state.stats.backends, s.body.backends, (x) => x.no);
    for (const list of [s.body.services, s.body.backends]) {
      for (const x of list) {
        const last = x.points[x.points.length - 1];
        if (last && (state.lastT === null || last.t > state.lastT)) state.lastT = last.t;
      }
    }
  }
  render();
}

function mergePoints(map, list, key) {
  const seen = new Set();
  for (const x of list) {
    const k = key(x);
    seen.add(k);
    const points = (map.get(k) || []).concat(x.points);
    map.set(k, points.slice(-WINDOW));
  }
  for (const k of [...map.keys()]) if (!seen.has(k)) map.delete(k);
}

async function refreshConfig() {
  if (state.access === "none") return;
  const [sv, d, t] = await Promise.all([api("GET", "/api/v1/services"), api("GET", "/api/v1/discovery"), api("GET", "/api/v1/tls")]);
  if (sv.ok) state.services = sv.body.services;
  if (d.ok) state.sources = d.body.sources;
  if (t.ok) state.tls = t.body;
  render();
}

async function refreshAll() {
  try {
    await Promise.all([refreshFigures(), refreshConfig()]);
  } catch (e) {
    setLive(false);
  }
}

let soon = null;
function refreshSoon() {
  if (soon) return;
  soon = setTimeout(() => {
    soon = null;
    refreshAll();
  }, 100);
}

// ---- events -----------------------------------------------------------------------------

function setLive(on) {
  const l = $("live");
  l.textContent = on ? "live" : "disconnected: retrying";
  l.className = "pill " + (on ? "ok" : "bad");
}

async function followEvents() {
  for (;;) {
    if (state.access && state.access !== "none") {
      try {
        const h = headers();
        if (state.lastEventId) h["Last-Event-ID"] = state.lastEventId;
        const r = await fetch("/api/v1/events", { headers: h });
        if (r.ok) {
          setLive(true);
          const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
          let buf = "";
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buf += value;
            let i;
            while ((i = buf.indexOf("\n\n")) >= 0) {
              onBlock(buf.slice(0, i));
              buf = buf.slice(i + 2);
            }
          }
        }
      } catch (e) {
        // The connection ended (quayside restarting, network): retried below.
      }
      setLive(false);
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

let eventsDrawn = 0;
function onBlock(block) {
  let id = null;
  let data = "";
  for (const line of block.split("\n")) {
    if (line.startsWith("id:")) id = line.slice(3).trim();
    else if (line.startsWith("data:")) data += line.slice(5).trim();
  }
  if (!data) return; // a keep-alive comment
  state.lastEventId = id;
  try {
    state.events.unshift(JSON.parse(data));
  } catch (e) {
    return;
  }
  state.events.length = Math.min(state.events.length, 100);
  // (The kept events arrive together on connecting: drawn once per frame.)
  if (!eventsDrawn) {
    eventsDrawn = requestAnimationFrame(() => {
      eventsDrawn = 0;
      renderEvents();
    });
  }
  refreshSoon();
}

// ---- actions ----------------------------------------------------------------------------

function confirmThen(text) {
  const d = $("confirm-dialog");
  $("confirm-text").textContent = text;
  return new Promise((resolve) => {
    d.addEventListener("close", () => resolve(d.returnValue === "ok"), { once: true });
    d.returnValue = "";
    d.showModal();
    $("confirm-ok").focus();
  });
}

async function act(what, no) {
  const b = state.backends.get(no);
  if (!b) return;
  let req;
  if (what === "Pin") {
    const pinned = await pinDialog(b);
    if (!pinned) return;
    req = ["PUT", "", { address: pinned.address, port: pinned.port, service: b.service, weight: b.weight }];
    if (!(await confirmThen(`Pin ${no} to ${pinned.address}:${pinned.port}?`))) return;
  } else {
    const text = {
      Drain: `Drain ${no}? It takes no new requests; those in flight finish.`,
      Enable: `Enable ${no}? It takes traffic again.`,
      Delete: b.pinned
        ? `Delete ${no}? The pin goes and the discovered backend is routed again.`
        : b.source === "manual"
          ? `Delete ${no}? The manual entry is removed.`
          : `Delete ${no}? It is discovered, so it is disabled until enabled again.`,
    }[what];
    if (!(await confirmThen(text))) return;
    req = { Drain: ["POST", "/drain"], Enable: ["POST", "/enable"], Delete: ["DELETE", ""] }[what];
  }
  const [method, suffix, body] = req;
  const r = await api(method, "/api/v1/backends/" + encodeURIComponent(no) + suffix, body);
  if (!r.ok) {
    notice(`${what} ${no}: ${r.body.error || r.body}`);
    return;
  }
  notice(`${what} ${no}: done`, "info");
  if (r.status === 200 && r.body.no) state.backends.set(r.body.no, r.body);
  render();
  refreshSoon();
}

function pinDialog(b) {
  const d = $("pin-dialog");
  $("pin-no").textContent = b.no;
  $("pin-address").value = b.address;
  $("pin-port").value = b.port;
  return new Promise((resolve) => {
    d.addEventListener(
      "close",
      () => resolve(d.returnValue === "ok" ? { address: $("pin-address").value.trim(), port: $("pin-port").value.trim() } : null),
      { once: true }
    );
    d.returnValue = "";
    d.showModal();
  });
}

// ---- rendering --------------------------------------------------------------------------

const cards = new Map(); // service name -> { card, parts }
const rows = new Map(); // no -> { tr, cells, buttons }
const COLUMNS = [
  ["no", "no"], ["address", "address"], ["source", "source"], ["state", "state"],
  ["pinned", "pinned"], ["health", "health"], ["in_flight", "in flight", "num"],
  ["rps", "req/s", "num"], ["errors", "errors", "num"], ["p50", "p50 ms", "num"], ["p99", "p99 ms", "num"],
];
const ACTIONS = ["Drain", "Enable", "Pin", "Delete"];

function fmt(v, digits = 1) {
  if (v === null || v === undefined) return "–";
  return Number(v).toFixed(digits).replace(/\.0+$/, "");
}

function lastPoint(points) {
  return points && points.length ? points[points.length - 1] : null;
}

function health(b) {
  const h = b.health;
  if (!h) return ["not in the table yet", ""];
  if (!h.active.up) return [`down (probes: ${h.active.probes})`, "down"];
  if (h.passive.needs_check && h.passive.ejected_until <= Date.now()) return ["ejected, being checked", "down"];
  if (h.passive.ejected_until > Date.now() || !h.available) return ["ejected", "down"];
  if (h.stalled) return ["stalled (answers nothing), being checked", "down"];
  const probes = h.active.probes ? `, ${h.active.probes} probes` : "";
  return ["up" + probes, "up"];
}

function source(b) {
  return b.endpoint && b.source !== "manual" ? `${b.source}: ${b.endpoint}` : b.source;
}

function serviceCard(svc) {
  let c = cards.get(svc.name);
  if (!c) {
    const title = el("h3", { text: svc.name });
    const rules = el("div", { class: "rules" });
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("class", "chart");
    svg.setAttribute("viewBox", `0 0 ${WINDOW} 60`);
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("role", "img");
    const area = document.createElementNS(svg.namespaceURI, "polygon");
    area.setAttribute("class", "area");
    const rps = document.createElementNS(svg.namespaceURI, "polyline");
    rps.setAttribute("class", "rps");
    const err = document.createElementNS(svg.namespaceURI, "polyline");
    err.setAttribute("class", "err");
    svg.append(area, rps, err);
    const figures = el("div", { class: "figures" });
    const thead = el("thead", {}, el("tr", {}, ...COLUMNS.map(([, h, cls]) => el("th", { class: cls || "", text: h })), el("th", { text: "actions" })));
    const tbody = el("tbody");
    const table = el("table", { class: "backends" }, thead, tbody);
    const card = el("article", { class: "card", "data-service": svc.name, "aria-label": "service " + svc.name },
      el("div", { class: "card-head" }, title, rules),
      el("div", { class: "chart-row" }, svg, figures),
      el("div", { class: "scroll" }, table));
    c = { card, rules, svg, area, rps, err, figures, tbody };
    cards.set(svc.name, c);
  }
  return c;
}

function rulesOf(svc) {
  const parts = [
    ["hosts", svc.hosts && svc.hosts.length ? svc.hosts.join(", ") : "any"],
    ["path", svc.path_prefix ? svc.path_prefix + (svc.strip_prefix ? " (stripped)" : "") : "any"],
    ["strategy", svc.lb + (svc.hash_key ? ` on ${svc.hash_key}` : "")],
  ];
  if (svc.sticky_cookie) parts.push(["sticky", "cookie " + svc.sticky_cookie]);
  parts.push(["health", svc.health ? `GET ${svc.health.path} every ${svc.health.interval} (rise ${svc.health.rise}, fall ${svc.health.fall})` : "passive only"]);
  if (svc.slow_start) parts.push(["slow start", svc.slow_start]);
  if (svc.protocol && svc.protocol !== "http1") parts.push(["protocol", svc.protocol]);
  parts.push(["settings", svc.settings_from]);
  return parts;
}

function drawChart(c, points) {
  // The newest point at the right edge; the x axis spans at least a minute and grows to the
  // whole window as points come.
  const n = points.length;
  const span = Math.max(60, n);
  const max = Math.max(1, ...points.map((p) => p.rps));
  const x = (i) => (((span - n + i) / (span - 1)) * WINDOW).toFixed(1);
  const y = (v) => (58 - (v / max) * 54).toFixed(1);
  const line = points.map((p, i) => `${x(i)},${y(p.rps)}`).join(" ");
  c.rps.setAttribute("points", line);
  c.area.setAttribute("points", n ? `${x(0)},58 ${line} ${x(n - 1)},58` : "");
  // Errors per second, on the same scale.
  const errs = (p) => (p.requests ? (p.rps * p.errors) / p.requests : 0);
  c.err.setAttribute("points", points.map((p, i) => `${x(i)},${y(errs(p))}`).join(" "));
  const last = lastPoint(points);
  const errRate = last && last.requests ? (100 * last.errors) / last.requests : 0;
  c.svg.setAttribute("aria-label", `requests per second over the last ${Math.round(n / 60)} minutes, at most ${fmt(max)}`);
  c.figures.replaceChildren(
    el("div", {}, el("b", { text: fmt(last ? last.rps : 0) }), " req/s now, peak ", el("b", { text: fmt(max) })),
    el("div", {}, "errors ", el("b", { class: "legend-err", text: fmt(errRate) + " %" })),
    el("div", {}, "p50 ", el("b", { text: fmt(last && last.p50_ms, 2) }), " ms, p99 ", el("b", { text: fmt(last && last.p99_ms, 2) }), " ms")
  );
}

function backendRow(no) {
  let r = rows.get(no);
  if (!r) {
    const tr = el("tr", { "data-no": no });
    const cells = {};
    for (const [key, label, cls] of COLUMNS) {
      const base = key + (cls ? " " + cls : "");
      cells[key] = el("td", { class: base, "data-base": base, "data-label": label });
      tr.append(cells[key]);
    }
    const buttons = {};
    const acts = el("td", { class: "acts" });
    for (const a of ACTIONS) {
      buttons[a] = el("button", { type: "button", class: a === "Delete" ? "danger" : "", text: a });
      buttons[a].addEventListener("click", () => act(a, no));
      acts.append(buttons[a]);
    }
    tr.append(acts);
    r = { tr, cells, buttons };
    rows.set(no, r);
  }
  return r;
}

// Set a cell's text, and with `tone` its colour class (besides the classes it was made with).
function setText(node, text, tone) {
  if (node.textContent !== text) node.textContent = text;
  if (tone !== undefined) {
    const want = node.dataset.base + " " + tone;
    if (node.className !== want) node.className = want;
  }
}

function fillRow(r, b) {
  const p = lastPoint(state.stats.backends.get(b.no));
  const [h, hcls] = health(b);
  setText(r.cells.no, b.no);
  setText(r.cells.address, `${b.address}:${b.port}` + (b.weight !== 1 ? ` ×${b.weight}` : ""));
  setText(r.cells.source, source(b));
  setText(r.cells.state, b.state, b.state);
  setText(r.cells.pinned, b.pinned ? "pinned" : "–");
  setText(r.cells.health, h, hcls);
  setText(r.cells.in_flight, b.health ? String(b.health.in_flight) : "–");
  setText(r.cells.rps, fmt(p && p.rps));
  setText(r.cells.errors, p && p.requests ? fmt((100 * p.errors) / p.requests) + " %" : "–");
  setText(r.cells.p50, fmt(p && p.p50_ms, 2));
  setText(r.cells.p99, fmt(p && p.p99_ms, 2));
  const ro = state.access !== "change";
  const why = ro ? "the token is read-only" : "";
  const set = (name, disabled) => {
    const btn = r.buttons[name];
    btn.disabled = ro || disabled;
    btn.title = ro ? why : "";
  };
  set("Drain", b.state === "draining");
  set("Enable", b.state === "active");
  set("Pin", false);
  set("Delete", false);
}

function render() {
  const host = $("services");
  // Services the registry knows, and any a backend names (before the next services refresh).
  const names = new Map(state.services.map((s) => [s.name, s]));
  for (const b of state.backends.values()) {
    if (!names.has(b.service)) names.set(b.service, { name: b.service, hosts: [], lb: "round_robin", settings_from: "labels or defaults" });
  }
  if (!names.size) {
    host.replaceChildren(el("p", { class: "empty", text: state.access === "none" ? "A token is needed to see anything." : "No services yet: add a backend with curl or start a labelled container." }));
    cards.clear();
    rows.clear();
  } else {
    const order = [...names.keys()].sort();
    const wanted = [];
    for (const name of order) {
      const svc = names.get(name);
      const c = serviceCard(svc);
      c.rules.replaceChildren(...rulesOf(svc).map(([k, v]) => el("span", {}, k + " ", el("b", { text: v }))));
      drawChart(c, state.stats.services.get(name) || []);
      const nos = [...state.backends.values()].filter((b) => b.service === name).map((b) => b.no).sort();
      const trs = nos.map((no) => {
        const r = backendRow(no);
        fillRow(r, state.backends.get(no));
        return r.tr;
      });
      if (!trs.length) trs.push(el("tr", {}, el("td", { colspan: COLUMNS.length + 1, class: "empty", text: "no backends" })));
      syncChildren(c.tbody, trs);
      wanted.push(c.card);
    }
    for (const name of [...cards.keys()]) if (!names.has(name)) cards.delete(name);
    for (const no of [...rows.keys()]) if (!state.backends.has(no)) rows.delete(no);
    syncChildren(host, wanted);
  }
  renderSources();
  renderTls();
}

// Make `parent`'s children exactly `list`, moving nodes only when their place changed (a
// focused button keeps its focus).
function syncChildren(parent, list) {
  list.forEach((node, i) => {
    if (parent.children[i] !== node) parent.insertBefore(node, parent.children[i] || null);
  });
  while (parent.children.length > list.length) parent.lastElementChild.remove();
}

function renderSources() {
  const src = $("sources");
  if (!state.sources.length) {
    const why = state.access === "none"
      ? "Not shown: this page has no token (Token, top right)."
      : "None: Docker discovery is off (--no-docker), or not reachable.";
    src.replaceChildren(el("p", { class: "empty", text: why }));
  } else {
    const head = el("tr", {}, ...["name", "kind", "endpoint", "state", "last event", "events", "reconnects", "last error"].map((h) => el("th", { text: h })));
    const body = state.sources.map((s) =>
      el("tr", { "data-source": s.name },
        el("td", { text: s.name }), el("td", { text: s.kind }), el("td", { class: "mono", text: s.endpoint }),
        el("td", { class: "state " + (s.state === "connected" ? "active" : "disabled"), text: s.state }),
        el("td", { text: s.last_event || "–" }), el("td", { class: "num", text: String(s.events) }),
        el("td", { class: "num", text: String(s.reconnects) }), el("td", { class: "error", text: s.last_error || "" })));
    src.replaceChildren(el("div", { class: "scroll" }, el("table", {}, el("thead", {}, head), el("tbody", {}, ...body))));
  }
  // Another quayside's containers (--instance) are not a problem of this one's: listed apart.
  const unrouted = [], others = [];
  for (const s of state.sources) for (const c of s.containers) {
    if (c.routed) continue;
    (c.detail && c.detail.kind === "other_instance" ? others : unrouted).push([s, c]);
  }
  const u = $("unrouted");
  const apart = others.length
    ? [el("p", { class: "empty", text: `Belonging to another quayside (--instance): ${others.map(([, c]) => c.name).join(", ")}` })]
    : [];
  if (!unrouted.length) {
    u.replaceChildren(el("p", { class: "empty", text: "Every labelled container is routed." }), ...apart);
  } else {
    const head = el("tr", {}, ...["container", "source", "why not"].map((h) => el("th", { text: h })));
    u.replaceChildren(el("div", { class: "scroll" }, el("table", {}, el("thead", {}, head), el("tbody", {}, ...unrouted.map(([s, c]) =>
      el("tr", {}, el("td", { text: c.name }), el("td", { text: s.name }), el("td", { text: c.reason || "" })))))), ...apart);
  }
}

// Each host name's certificate (GET /api/v1/tls): where it comes from, until when, and what
// went wrong last.
const TLS_TONE = { valid: "active", ordering: "draining", pending: "draining" };
function renderTls() {
  const t = state.tls;
  if (!t) return;
  const summary = !t.https
    ? "HTTPS is off: services are served over plain HTTP (--tls-cert or --acme-email turns it on)."
    : t.acme
    ? `Automatic HTTPS on (${t.directory}): ${t.orders.issued} issued, ${t.orders.failed} failed since start.`
    : "Automatic HTTPS off (--acme-email turns it on); certificates given with --tls-cert are listed.";
  $("tls-summary").textContent = summary;
  const box = $("tls");
  if (!t.https) {
    box.replaceChildren();
    return;
  }
  if (!t.names.length) {
    box.replaceChildren(el("p", { class: "empty", text: "No host names: a service's hosts and the --tls-cert certificates are listed here." }));
    return;
  }
  const when = (v) => (v ? v.replace("T", " ").replace("Z", "") : "–");
  const head = el("tr", {}, ...["name", "source", "state", "expires", "renews", "retry", "failures", "last error"].map((h) => el("th", { text: h })));
  const body = t.names.map((n) =>
    el("tr", { "data-name": n.name },
      el("td", { class: "mono", text: n.name }), el("td", { text: n.source, title: n.file || "" }),
      el("td", { class: "state " + (TLS_TONE[n.state] || "disabled"), text: n.state }),
      el("td", { class: "expires", text: when(n.not_after) }), el("td", { text: when(n.renew_at) }),
      el("td", { text: when(n.retry_at) }), el("td", { class: "num", text: String(n.failures || 0) }),
      el("td", { class: "error", text: n.last_error || "" })));
  box.replaceChildren(el("div", { class: "scroll" }, el("table", {}, el("thead", {}, head), el("tbody", {}, ...body))));
}

function renderEvents() {
  const list = $("events");
  if (!state.events.length) {
    list.replaceChildren(el("li", { class: "empty", text: "No events yet." }));
    return;
  }
  list.replaceChildren(...state.events.slice(0, 50).map((e) =>
    el("li", {},
      el("time", { datetime: e.time, text: e.time.replace("T", " ").replace("Z", "") }),
      el("span", { class: "kind " + e.kind, text: e.kind }),
      el("span", { class: "mono", text: e.no || e.service }),
      el("span", { text: [e.service && e.no ? "in " + e.service : "", e.source ? "from " + e.source : "", e.reason, e.by ? "by " + e.by : ""].filter(Boolean).join(" · ") }))));
}

// ---- start ------------------------------------------------------------------------------

async function start() {
  $("token-button").addEventListener("click", () => askToken(""));
  renderEvents();
  try {
    await refreshAccess();
  } catch (e) {
    setLive(false);
  }
  await refreshAll();
  followEvents();
  let tick = 0;
  setInterval(async () => {
    tick += 1;
    try {
      // (quayside was not reachable when the page loaded: ask again what the token may do.)
      if (state.access === null) await refreshAccess();
      await (tick % 5 === 0 ? refreshAll() : refreshFigures());
    } catch (e) {
      setLive(false);
    }
  }, 1000);
}

start();
