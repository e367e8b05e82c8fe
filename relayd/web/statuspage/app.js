// relayd's live status page (served at /$relayd/ui/ by relayd.web.ui).  Hand-written, no
// framework, nothing fetched from elsewhere: it works air-gapped.
//
// Once a second it reads the management API of the relay that served it:
//   GET /$relayd/status    counts, and "traffic": bytes each way so far and live connections
//                          by door (bytes/s are computed here from two successive totals)
//   GET /$relayd/entities  every entity with its kind and listener count (and online state)
// and, as they happen, the connectivity events (events.js: GET /$relayd/connectivity/stream).
// Both need a SAS token with the Manage right.  The operator pastes one into the form; it is
// kept in sessionStorage (this tab only, gone when the tab closes), sent only in the
// Authorization header, and never put in a URL.  A refused token (401/403) is dropped and the
// form comes back with the relay's reason.
"use strict";

(function () {
  const API = "../";                  // /$relayd/ui/ -> /$relayd/
  const STORAGE_KEY = "relayd.token";
  const POLL_MS = 1000;
  const WINDOW_S = 120;               // the graph shows the last two minutes
  const FETCH_TIMEOUT_MS = 5000;
  const MAX_ROWS = 500;               // entity rows drawn; the rest are counted
  const LARGE_NAMESPACE = 500;        // more entities than this: their list is read only
  const ENTITIES_EVERY = 10;          //   every tenth poll (the counts still every second)
  const TOKEN_PREFIX = "SharedAccessSignature ";
  const KINDS = {hybrid_connection: "hybrid connection", soap: "SOAP", oneway: "one-way events",
                 multicast: "multicast events"};
  const COLOR_UP = "#2563eb", COLOR_DOWN = "#ea580c";
  const MAX_EVENTS = 50;              // event rows kept, newest first

  const $ = (id) => document.getElementById(id);
  let token = null;
  let timer = null;
  let previous = null;                // {t, up, down}: the last totals read
  let history = [];                   // [{t, up, down}]: bytes/s, oldest first
  let listed = null;                  // the last GET /$relayd/entities
  let polls = 0;
  let watch = null;                   // the connectivity stream (RelaydEvents)

  // -- token ------------------------------------------------------------------------------

  class Refused extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  function tokenExpiry(value) {
    const m = /(?:^|[ &])se=(\d+)/.exec(value);
    return m ? Number(m[1]) : null;
  }

  function showLogin(message) {
    stopPolling();
    token = null;
    sessionStorage.removeItem(STORAGE_KEY);
    $("dashboard").hidden = true;
    $("sign-out").hidden = true;
    $("token-expiry").textContent = "";
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    $("token").focus();
  }

  function showDashboard() {
    $("login").hidden = true;
    $("login-error").textContent = "";
    $("dashboard").hidden = false;
    $("sign-out").hidden = false;
    resizeCanvas();
  }

  function refusal(err) {
    return "The relay refused the token (" + err.status + "): " + err.message +
           ". Make a new one with the command below and sign in again.";
  }

  async function signIn(value) {
    $("login-error").textContent = "";
    if (!value.startsWith(TOKEN_PREFIX) || value.indexOf("sig=") < 0) {
      $("login-error").textContent = "That is not a SAS token: paste the whole token, starting with \"" +
                                     TOKEN_PREFIX.trim() + " sr=\".";
      return;
    }
    try {
      await call("status", value);
    } catch (err) {
      if (err instanceof Refused) {
        showLogin(refusal(err));
      } else {
        $("login-error").textContent = "Cannot reach the relay: " + err.message;
      }
      return;
    }
    token = value;
    sessionStorage.setItem(STORAGE_KEY, value);
    $("token").value = "";
    previous = null;
    history = [];
    listed = null;
    showDashboard();
    startPolling();
  }

  // -- the management API --------------------------------------------------------------------

  async function call(path, withToken) {
    const abort = new AbortController();
    const timeout = setTimeout(() => abort.abort(), FETCH_TIMEOUT_MS);
    let response;
    try {
      response = await fetch(API + path, {headers: {"Authorization": withToken}, cache: "no-store",
                                          credentials: "omit", redirect: "error", signal: abort.signal});
    } catch (err) {
      throw new Error(err.name === "AbortError" ? "no answer within " + FETCH_TIMEOUT_MS / 1000 + " s" : err.message);
    } finally {
      clearTimeout(timeout);
    }
    let body = null;
    try { body = await response.json(); } catch (err) { body = null; }
    if (response.status === 401 || response.status === 403) {
      const detail = body && body.error && body.error.message ? body.error.message : response.statusText;
      throw new Refused(response.status, detail.replace(/\.$/, ""));
    }
    if (!response.ok || body === null) {
      throw new Error("GET /$relayd/" + path + " answered " + response.status);
    }
    return body;
  }

  function startPolling() {
    stopPolling();
    poll();
    watch = window.RelaydEvents.watch(token, addEvent, (state) => { $("events-state").textContent = state; });
  }

  function stopPolling() {
    if (timer !== null) { clearTimeout(timer); timer = null; }
    if (watch !== null) { watch.stop(); watch = null; }
  }

  function addEvent(event) {
    let data = {};
    try { data = JSON.parse(event.data); } catch (err) { data = {}; }
    const when = data.time ? new Date(data.time * 1000).toLocaleTimeString() : "";
    const tr = row([cell(when), cell(event.name), cell(data.entity || ""),
                    cell(data.listeners != null ? String(data.listeners) : "", "num"), cell(data.message || "")],
                   {name: event.name, entity: data.entity || ""});
    const body = $("events").tBodies[0];
    body.insertBefore(tr, body.firstChild);
    while (body.rows.length > MAX_EVENTS) body.deleteRow(-1);
    $("no-events").hidden = true;
  }

  async function poll() {
    const began = Date.now();
    const used = token;
    try {
      const fresh = listed === null || listed.length <= LARGE_NAMESPACE || polls % ENTITIES_EVERY === 0;
      const [status, entities] = await Promise.all([call("status", used),
                                                    fresh ? call("entities", used) : Promise.resolve(listed)]);
      if (token !== used) return;     // signed out meanwhile
      polls += 1;
      listed = entities;
      $("banner").hidden = true;
      render(status, entities, performance.now() / 1000);
    } catch (err) {
      if (token !== used) return;
      if (err instanceof Refused) { showLogin("Signed out. " + refusal(err)); return; }
      $("banner").textContent = "Cannot read the relay's status (" + err.message + "); retrying.";
      $("banner").hidden = false;
    }
    timer = setTimeout(poll, Math.max(100, POLL_MS - (Date.now() - began)));
  }

  // -- rendering ------------------------------------------------------------------------------

  function render(status, entities, now) {
    const online = entities.filter(isOnline).length;
    setText("count-entities", entities.length);
    setText("count-online", online);
    setText("count-listeners", status.listeners);
    setText("count-pending", status.pending_rendezvous);
    $("relay-version").textContent = status.version ? "version " + status.version +
      (status.uptime != null ? ", up " + duration(status.uptime) : "") : "";
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
    const se = tokenExpiry(token);
    if (se !== null) {
      $("token-expiry").textContent = "token valid " + duration(Math.max(0, se - Date.now() / 1000)) + " more";
    }
    renderTraffic(status.traffic, now);
    renderEntities(entities);
  }

  function isOnline(entity) {
    return entity.online !== undefined ? Boolean(entity.online) : entity.listeners > 0;
  }

  function renderTraffic(traffic, now) {
    $("no-traffic").hidden = Boolean(traffic);
    if (!traffic) return;
    const up = Number(traffic.bytes_up) || 0, down = Number(traffic.bytes_down) || 0;
    if (previous !== null && up >= previous.up && down >= previous.down && now > previous.t) {
      const dt = now - previous.t;
      history.push({t: now, up: (up - previous.up) / dt, down: (down - previous.down) / dt});
    } else if (previous !== null) {
      history = [];                   // the relay restarted: its totals began again
    }
    previous = {t: now, up: up, down: down};
    history = history.filter((s) => s.t > now - WINDOW_S);
    const last = history.length ? history[history.length - 1] : {up: 0, down: 0};
    setRate("rate-up", last.up);
    setRate("rate-down", last.down);
    $("totals").textContent = "relayed since start: " + bytes(up) + " up, " + bytes(down) + " down";
    const live = traffic.connections != null ? traffic.connections : 0;
    setText("live-connections", live);
    $("live-connections").dataset.count = String(live);
    renderDoors(traffic.connections_by_door || {});
    $("graph").dataset.samples = String(history.length);
    $("graph").dataset.busySamples = String(history.filter((s) => s.up > 0 || s.down > 0).length);
    draw(now);
  }

  function renderDoors(byDoor) {
    const doors = Object.keys(byDoor).filter((d) => byDoor[d] > 0).sort();
    const body = document.createElement("tbody");
    for (const door of doors) {
      body.appendChild(row([cell(door), cell(String(byDoor[door]), "num")], {door: door}));
    }
    $("doors").replaceChild(body, $("doors").tBodies[0]);
    $("no-doors").hidden = doors.length > 0;
  }

  function renderEntities(entities) {
    const sorted = entities.slice().sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
    const body = document.createElement("tbody");
    for (const e of sorted.slice(0, MAX_ROWS)) {
      const on = isOnline(e);
      const name = cell(e.path);
      if (e.display_name) {
        const shown = document.createElement("span");
        shown.className = "muted";
        shown.textContent = " " + e.display_name;
        name.appendChild(shown);
      }
      const state = cell(on ? "online" : "offline", on ? "state on" : "state off");
      const at = on ? e.online_since : e.offline_since;
      const since = at ? new Date(at * 1000).toLocaleTimeString() + " (" + duration(Math.max(0, Date.now() / 1000 - at)) + ")" : "";
      body.appendChild(row([name, cell(KINDS[e.kind] || e.kind), state, cell(String(e.listeners), "num"), cell(since)],
                           {path: e.path, online: String(on), listeners: String(e.listeners)}));
    }
    $("entities").replaceChild(body, $("entities").tBodies[0]);
    const more = sorted.length - MAX_ROWS;
    $("entities-more").hidden = more <= 0;
    $("entities-more").textContent = more > 0 ? "and " + more + " more (GET /$relayd/entities lists them all)" : "";
  }

  function row(cells, data) {
    const tr = document.createElement("tr");
    for (const c of cells) tr.appendChild(c);
    for (const k of Object.keys(data)) tr.dataset[k] = data[k];
    return tr;
  }

  function cell(text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    return td;
  }

  function setText(id, value) {
    $(id).textContent = value == null ? "–" : String(value);
  }

  function setRate(id, bps) {
    $(id).textContent = bytes(bps) + "/s";
    $(id).dataset.bps = String(Math.round(bps));
  }

  function bytes(n) {
    const units = ["B", "kB", "MB", "GB", "TB"];
    let i = 0;
    while (n >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
    return (i === 0 ? Math.round(n) : n.toFixed(n < 10 ? 2 : n < 100 ? 1 : 0)) + " " + units[i];
  }

  function duration(seconds) {
    seconds = Math.round(seconds);
    if (seconds < 120) return seconds + " s";
    if (seconds < 7200) return Math.round(seconds / 60) + " min";
    if (seconds < 172800) return Math.round(seconds / 3600) + " h";
    return Math.round(seconds / 86400) + " days";
  }

  // -- the graph ---------------------------------------------------------------------------------

  function resizeCanvas() {
    const canvas = $("graph");
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(300, canvas.clientWidth);
    const height = Math.max(150, canvas.clientHeight);
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    draw(performance.now() / 1000);
  }

  function niceMax(value) {
    if (value <= 0) return 1000;
    const magnitude = Math.pow(10, Math.floor(Math.log10(value)));
    for (const step of [1, 2, 5, 10]) {
      if (step * magnitude >= value) return step * magnitude;
    }
    return 10 * magnitude;
  }

  function draw(now) {
    const canvas = $("graph");
    const ctx = canvas.getContext("2d");
    const ratio = window.devicePixelRatio || 1;
    const w = canvas.width / ratio, h = canvas.height / ratio;
    const left = 76, right = 12, top = 10, bottom = 24;
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const top_ = niceMax(Math.max(0, ...history.map((s) => Math.max(s.up, s.down))));
    const x = (t) => left + (w - left - right) * (1 - (now - t) / WINDOW_S);
    const y = (v) => top + (h - top - bottom) * (1 - v / top_);
    ctx.font = "12px system-ui, sans-serif";
    ctx.fillStyle = "#6b7280";
    ctx.strokeStyle = "#e5e7eb";
    ctx.lineWidth = 1;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (let i = 0; i <= 4; i += 1) {
      const v = top_ * i / 4;
      ctx.beginPath();
      ctx.moveTo(left, Math.round(y(v)) + 0.5);
      ctx.lineTo(w - right, Math.round(y(v)) + 0.5);
      ctx.stroke();
      ctx.fillText(bytes(v) + "/s", left - 6, y(v));
    }
    ctx.textBaseline = "top";
    ctx.textAlign = "left";
    ctx.fillText("2 min ago", left, h - bottom + 6);
    ctx.textAlign = "right";
    ctx.fillText("now", w - right, h - bottom + 6);
    line(ctx, "down", COLOR_DOWN, x, y);
    line(ctx, "up", COLOR_UP, x, y);
  }

  function line(ctx, key, color, x, y) {
    if (history.length === 0) return;
    ctx.strokeStyle = color;
    ctx.lineWidth = 2;
    ctx.lineJoin = "round";
    ctx.beginPath();
    history.forEach((s, i) => (i === 0 ? ctx.moveTo(x(s.t), y(s[key])) : ctx.lineTo(x(s.t), y(s[key]))));
    ctx.stroke();
    ctx.globalAlpha = 0.12;
    ctx.fillStyle = color;
    ctx.lineTo(x(history[history.length - 1].t), y(0));
    ctx.lineTo(x(history[0].t), y(0));
    ctx.closePath();
    ctx.fill();
    ctx.globalAlpha = 1;
  }

  // -- start ----------------------------------------------------------------------------------------

  function start() {
    const namespace = "http://" + location.host + "/";   // Manage tokens are for the http:// form
    $("relay-host").textContent = location.host;
    $("token-uri").textContent = namespace;
    $("token-command").textContent = "relayd token --uri " + namespace +
      " --rule RootManageSharedAccessKey --key \"$RELAYD_KEY\" --ttl 3600";
    $("login-form").addEventListener("submit", (event) => {
      event.preventDefault();
      signIn($("token").value.trim());
    });
    $("sign-out").addEventListener("click", () => showLogin("Signed out."));
    window.addEventListener("resize", () => { if (!$("dashboard").hidden) resizeCanvas(); });
    const kept = sessionStorage.getItem(STORAGE_KEY);
    if (kept) {
      token = kept;
      showDashboard();
      startPolling();
    } else {
      showLogin("");
    }
  }

  start();
})();
