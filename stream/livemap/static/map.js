// trajstream live map: draws the frames the server pushes over /ws on a canvas.
//
// Frame layout (see stream/livemap/frames.py): "TSM1", uint32 header length, JSON header
// (space padded to 4 bytes), then float32 x[n], y[n], heading[n], length[n], width[n],
// path[n*p*2], sigma[n*p], positions relative to header.origin (metres, x east, y north).
//
// Flow control: every frame received is acknowledged once drawn (or once a newer frame
// replaced it before it could be drawn); the server sends no more than a couple ahead, so a
// slow or hidden page gets fewer frames instead of a growing queue. The page tells the
// server what it shows ({type: "view"}) so frames carry only the vehicles in view.
//
// window.trajstreamMap exposes the page's state (read by the end-to-end test).
"use strict";
(() => {
  const C = {
    bg: "#0e1318", grid: "#18212a", gridMajor: "#243040", label: "#5f6e7d",
    vehicle: "#8fb3d9", vehicleEdge: "#c9dcf0", path: "rgba(143, 179, 217, 0.55)",
    band: "rgba(120, 160, 210, 0.13)", warning: "#f2a93b", critical: "#ff4d4f",
  };
  const SEVERITY_RANK = { warning: 1, critical: 2 };
  const canvas = document.getElementById("map");
  const ctx = canvas.getContext("2d", { alpha: false });
  const $ = (id) => document.getElementById(id);

  const state = {
    connected: false, frames: 0, skipped: 0, seq: 0, drawnVehicles: 0, totalVehicles: 0,
    openAlerts: [], alertsShown: {}, renderMs: 0, renderMsMax: 0, draws: 0, view: null,
    fitted: false, lastFrameWall: 0, errors: [],
  };
  window.trajstreamMap = state;

  let ws = null;
  let frame = null; // the frame on screen (decoded)
  let pending = null; // newest frame received, not drawn yet
  let index = new Map(); // vehicle id -> row of `frame`
  const cam = { cx: 0, cy: 0, s: 1 }; // world centre (m) and scale (px per m)
  let W = 0, H = 0, dpr = 1;
  let showBands = true;
  let selectedAlert = null;
  let drawQueued = false;
  let viewSentAt = 0, viewTimer = null;
  let retryMs = 500;
  let recentKey = "";
  let hover = null; // {x, y} screen

  // -- connection ------------------------------------------------------------------------

  function connect() {
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
    ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    ws.onopen = () => {
      state.connected = true;
      retryMs = 500;
      setStatus(true, "live");
      if (state.fitted) sendView(true);
    };
    ws.onclose = () => {
      state.connected = false;
      setStatus(false, "reconnecting");
      pending = null;
      setTimeout(connect, retryMs);
      retryMs = Math.min(retryMs * 2, 5000);
    };
    ws.onmessage = (ev) => {
      if (typeof ev.data === "string") {
        const msg = JSON.parse(ev.data);
        state.errors.push(msg.message);
        console.warn("map server:", msg.message);
        return;
      }
      let f;
      try {
        f = decode(ev.data);
      } catch (err) {
        console.error("bad frame", err);
        return;
      }
      if (pending) { // never drawn: a newer one replaces it
        ack(pending);
        state.skipped += 1;
      }
      pending = f;
      state.frames += 1;
      state.lastFrameWall = Date.now();
      requestDraw();
    };
  }

  function send(obj) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(obj));
  }

  function ack(f) { send({ type: "ack", seq: f.head.seq }); }

  function setStatus(on, text) {
    const el = $("status");
    el.textContent = text;
    el.className = "status " + (on ? "on" : "off");
  }

  function decode(buf) {
    const magic = new Uint8Array(buf, 0, 4);
    if (String.fromCharCode(...magic) !== "TSM1") throw new Error("not a map frame");
    const hlen = new DataView(buf).getUint32(4, true);
    const head = JSON.parse(new TextDecoder().decode(new Uint8Array(buf, 8, hlen)));
    const n = head.n, p = head.p;
    const f = new Float32Array(buf, 8 + hlen);
    return {
      head, n, p, ox: head.origin[0], oy: head.origin[1],
      x: f.subarray(0, n), y: f.subarray(n, 2 * n), heading: f.subarray(2 * n, 3 * n),
      length: f.subarray(3 * n, 4 * n), width: f.subarray(4 * n, 5 * n),
      path: f.subarray(5 * n, 5 * n + 2 * n * p), sigma: f.subarray(5 * n + 2 * n * p, 5 * n + 3 * n * p),
    };
  }

  // -- camera ----------------------------------------------------------------------------

  function resize() {
    dpr = window.devicePixelRatio || 1;
    W = window.innerWidth;
    H = window.innerHeight;
    canvas.width = Math.round(W * dpr);
    canvas.height = Math.round(H * dpr);
    requestDraw();
    sendView(false);
  }

  const toWorld = (sx, sy) => [cam.cx + (sx - W / 2) / cam.s, cam.cy - (sy - H / 2) / cam.s];

  function currentView() {
    const [x0, y1] = toWorld(0, 0);
    const [x1, y0] = toWorld(W, H);
    return { type: "view", x0, y0, x1, y1, mpp: 1 / cam.s };
  }

  function sendView(now) {
    if (!state.fitted) return;
    state.view = currentView();
    const wait = 100 - (Date.now() - viewSentAt);
    if (now || wait <= 0) {
      clearTimeout(viewTimer);
      viewTimer = null;
      viewSentAt = Date.now();
      send(state.view);
    } else if (!viewTimer) {
      viewTimer = setTimeout(() => { viewTimer = null; sendView(true); }, wait);
    }
  }

  function moved() { requestDraw(); sendView(false); }

  function zoomAt(sx, sy, factor) {
    const [wx, wy] = toWorld(sx, sy);
    cam.s = Math.min(200, Math.max(0.002, cam.s * factor));
    cam.cx = wx - (sx - W / 2) / cam.s;
    cam.cy = wy + (sy - H / 2) / cam.s;
    moved();
  }

  function fit() {
    if (!frame || frame.n === 0) return;
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    for (let i = 0; i < frame.n; i++) {
      const x = frame.x[i], y = frame.y[i];
      if (x < x0) x0 = x; if (x > x1) x1 = x;
      if (y < y0) y0 = y; if (y > y1) y1 = y;
    }
    const span = Math.max(x1 - x0, y1 - y0, 50);
    cam.cx = frame.ox + (x0 + x1) / 2;
    cam.cy = frame.oy + (y0 + y1) / 2;
    cam.s = Math.min((W - 40) / Math.max(x1 - x0, 50), (H - 40) / Math.max(y1 - y0, 50), 20);
    if (!isFinite(cam.s) || cam.s <= 0) cam.s = Math.min(W, H) / span;
    state.fitted = true;
    moved();
    sendView(true);
  }

  function centreOn(x, y, minScale) {
    cam.cx = x;
    cam.cy = y;
    cam.s = Math.max(cam.s, minScale);
    moved();
  }

  // -- drawing ---------------------------------------------------------------------------

  function requestDraw() {
    if (drawQueued) return;
    drawQueued = true;
    requestAnimationFrame(draw);
    // Some headless or throttled pages run no animation frames: draw anyway if visible.
    setTimeout(() => { if (drawQueued && !document.hidden) draw(); }, 250);
  }

  function draw() {
    if (!drawQueued) return;
    drawQueued = false;
    const t0 = performance.now();
    let drawnNow = null;
    if (pending) {
      frame = pending;
      pending = null;
      drawnNow = frame;
      index = new Map();
      const ids = frame.head.ids;
      for (let i = 0; i < ids.length; i++) index.set(ids[i], i);
      if (!state.fitted && frame.n > 0) fit();
    }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = C.bg;
    ctx.fillRect(0, 0, W, H);
    drawGrid();
    if (frame) {
      drawFleet(frame);
      drawAlerts(frame);
      updatePanels(frame);
    }
    drawScale();
    drawHover();
    const ms = performance.now() - t0;
    state.renderMs = ms;
    state.renderMsMax = Math.max(state.renderMsMax, ms);
    state.draws += 1;
    if (drawnNow) ack(drawnNow);
  }

  function niceStep(minMetres) {
    const p = Math.pow(10, Math.floor(Math.log10(minMetres)));
    for (const m of [1, 2, 5, 10]) if (m * p >= minMetres) return m * p;
    return 10 * p;
  }

  function fmtMetres(m) {
    const a = Math.abs(m);
    if (a >= 10000) return (m / 1000).toFixed(0) + " km";
    if (a >= 1000) return (m / 1000).toFixed(1) + " km";
    return m.toFixed(a < 10 && m % 1 !== 0 ? 1 : 0) + " m";
  }

  function drawGrid() {
    const step = niceStep(70 / cam.s);
    const [wx0, wy1] = toWorld(0, 0);
    const [wx1, wy0] = toWorld(W, H);
    ctx.lineWidth = 1;
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = C.label;
    for (const major of [false, true]) {
      const every = major ? step * 5 : step;
      ctx.strokeStyle = major ? C.gridMajor : C.grid;
      ctx.beginPath();
      for (let x = Math.ceil(wx0 / every) * every; x <= wx1; x += every) {
        const sx = Math.round((x - cam.cx) * cam.s + W / 2) + 0.5;
        ctx.moveTo(sx, 0); ctx.lineTo(sx, H);
      }
      for (let y = Math.ceil(wy0 / every) * every; y <= wy1; y += every) {
        const sy = Math.round(H / 2 - (y - cam.cy) * cam.s) + 0.5;
        ctx.moveTo(0, sy); ctx.lineTo(W, sy);
      }
      ctx.stroke();
    }
    const major = step * 5;
    ctx.textBaseline = "bottom";
    for (let x = Math.ceil(wx0 / major) * major; x <= wx1; x += major) {
      ctx.fillText(fmtMetres(x), (x - cam.cx) * cam.s + W / 2 + 3, H - 44);
    }
    ctx.textBaseline = "top";
    for (let y = Math.ceil(wy0 / major) * major; y <= wy1; y += major) {
      ctx.fillText(fmtMetres(y), 272, H / 2 - (y - cam.cy) * cam.s + 2);
    }
  }

  function drawScale() {
    const metres = niceStep(100 / cam.s);
    const px = metres * cam.s;
    const x = W - 20 - px, y = H - 22;
    ctx.strokeStyle = C.vehicleEdge;
    ctx.lineWidth = 2;
    ctx.beginPath();
    ctx.moveTo(x, y - 5); ctx.lineTo(x, y); ctx.lineTo(x + px, y); ctx.lineTo(x + px, y - 5);
    ctx.stroke();
    ctx.fillStyle = C.vehicleEdge;
    ctx.textBaseline = "bottom";
    ctx.textAlign = "center";
    ctx.fillText(fmtMetres(metres), x + px / 2, y - 6);
    ctx.textAlign = "left";
  }

  let bands = [];
  function bandBuffers(p) { // reused: no garbage per vehicle and frame
    if (!bands.length || bands[0].length < p) bands = [0, 1, 2, 3].map(() => new Float64Array(p));
    return bands;
  }

  // Screen coordinates of frame-relative metres: sx = rx * s + ax, sy = ay - ry * s.
  function affine(f) {
    return [(f.ox - cam.cx) * cam.s + W / 2, H / 2 - (f.oy - cam.cy) * cam.s];
  }

  function drawFleet(f) {
    const n = f.n, p = f.p, s = cam.s;
    const [ax, ay] = affine(f);
    const P = f.path, S = f.sigma;
    // Uncertainty bands: the path offset sideways by +-sigma, closed into one polygon each.
    if (showBands && p > 0) {
      ctx.beginPath();
      for (let i = 0; i < n; i++) {
        const base = i * p;
        if (!(S[base + p - 1] * s >= 2.0)) continue; // none, or too thin to see (zoomed out)
        const x0 = f.x[i] * s + ax, y0 = ay - f.y[i] * s;
        const [lx, ly, rx, ry] = bandBuffers(p);
        let px = x0, py = y0, ok = true;
        for (let k = 0; k < p; k++) {
          const qx = P[2 * (base + k)] * s + ax, qy = ay - P[2 * (base + k) + 1] * s;
          const nx2 = k + 1 < p ? P[2 * (base + k + 1)] * s + ax : qx;
          const ny2 = k + 1 < p ? ay - P[2 * (base + k + 1) + 1] * s : qy;
          let dx = nx2 - px, dy = ny2 - py;
          const len = Math.hypot(dx, dy);
          if (!(len > 1e-6)) { dx = Math.cos(f.heading[i]); dy = -Math.sin(f.heading[i]); } else { dx /= len; dy /= len; }
          const w = S[base + k] * s;
          if (!isFinite(qx) || !isFinite(w)) { ok = false; break; }
          lx[k] = qx - dy * w; ly[k] = qy + dx * w;
          rx[k] = qx + dy * w; ry[k] = qy - dx * w;
          px = qx; py = qy;
        }
        if (!ok) continue;
        ctx.moveTo(x0, y0);
        for (let k = 0; k < p; k++) ctx.lineTo(lx[k], ly[k]);
        for (let k = p - 1; k >= 0; k--) ctx.lineTo(rx[k], ry[k]);
        ctx.closePath();
      }
      ctx.fillStyle = C.band;
      ctx.fill();
    }
    // Predicted paths.
    if (p > 0) {
      ctx.beginPath();
      for (let i = 0; i < n; i++) {
        const base = 2 * i * p;
        if (!isFinite(P[base])) continue;
        ctx.moveTo(f.x[i] * s + ax, ay - f.y[i] * s);
        for (let k = 0; k < p; k++) ctx.lineTo(P[base + 2 * k] * s + ax, ay - P[base + 2 * k + 1] * s);
      }
      ctx.strokeStyle = C.path;
      ctx.lineWidth = 1;
      ctx.stroke();
    }
    // Footprints, heading-aligned; a dot when under ~3 px long.
    ctx.fillStyle = C.vehicle;
    let drawn = 0;
    if (4.5 * s < 3) {
      for (let i = 0; i < n; i++) {
        const sx = f.x[i] * s + ax, sy = ay - f.y[i] * s;
        if (sx < -5 || sy < -5 || sx > W + 5 || sy > H + 5) continue;
        ctx.fillRect(sx - 1.5, sy - 1.5, 3, 3);
        drawn++;
      }
    } else {
      ctx.beginPath();
      for (let i = 0; i < n; i++) {
        const sx = f.x[i] * s + ax, sy = ay - f.y[i] * s;
        if (sx < -50 || sy < -50 || sx > W + 50 || sy > H + 50) continue;
        footprint(sx, sy, f.heading[i], f.length[i] * s, f.width[i] * s);
        drawn++;
      }
      ctx.fill();
    }
    state.drawnVehicles = drawn;
    state.totalVehicles = f.head.total;
  }

  // A rectangle of screen size l x w centred at (sx, sy), heading h (radians, CCW from +x).
  function footprint(sx, sy, h, l, w) {
    const c = Math.cos(h), sn = -Math.sin(h); // screen y points down
    const hl = l / 2, hw = w / 2;
    ctx.moveTo(sx + c * hl - sn * hw, sy + sn * hl + c * hw);
    ctx.lineTo(sx + c * hl + sn * hw, sy + sn * hl - c * hw);
    ctx.lineTo(sx - c * hl + sn * hw, sy - sn * hl - c * hw);
    ctx.lineTo(sx - c * hl - sn * hw, sy - sn * hl + c * hw);
    ctx.closePath();
  }

  function remainingTtc(a, f) {
    if (a.ttc === null || a.ttc === undefined) return null;
    const now = f.head.t;
    return now === null ? a.ttc : a.ttc - (now - a.ts);
  }

  function drawAlerts(f) {
    const s = cam.s;
    const [ax, ay] = affine(f);
    const open = f.head.open.slice().sort((a, b) => SEVERITY_RANK[a.severity] - SEVERITY_RANK[b.severity]);
    state.openAlerts = open.map((a) => a.id);
    ctx.font = "bold 12px system-ui, sans-serif";
    const placed = []; // label boxes drawn so far: later labels move down instead of overlapping
    for (const a of open) {
      const color = a.severity === "critical" ? C.critical : C.warning;
      const pts = [];
      for (const v of [a.a, a.b]) {
        const i = index.get(v);
        if (i !== undefined) {
          const sx = f.x[i] * s + ax, sy = ay - f.y[i] * s;
          pts.push([sx, sy]);
          // its path, thick, and its footprint (at least 6 px so it shows zoomed out)
          if (f.p > 0 && isFinite(f.path[2 * i * f.p])) {
            ctx.beginPath();
            ctx.moveTo(sx, sy);
            for (let k = 0; k < f.p; k++) {
              ctx.lineTo(f.path[2 * (i * f.p + k)] * s + ax, ay - f.path[2 * (i * f.p + k) + 1] * s);
            }
            ctx.strokeStyle = color;
            ctx.lineWidth = 2;
            ctx.stroke();
          }
          ctx.beginPath();
          footprint(sx, sy, f.heading[i], Math.max(f.length[i] * s, 8), Math.max(f.width[i] * s, 4));
          ctx.fillStyle = color;
          ctx.fill();
        } else if (a.at && a.at[v]) { // outside the frame: where the alert saw it
          pts.push([(a.at[v][0] - cam.cx) * s + W / 2, H / 2 - (a.at[v][1] - cam.cy) * s]);
        }
      }
      const cpa = a.cpa && a.cpa[0] !== null ? [(a.cpa[0] - cam.cx) * s + W / 2, H / 2 - (a.cpa[1] - cam.cy) * s] : null;
      ctx.strokeStyle = color;
      ctx.lineWidth = 1.5;
      ctx.setLineDash([4, 3]);
      ctx.beginPath();
      if (pts.length === 2) { ctx.moveTo(pts[0][0], pts[0][1]); ctx.lineTo(pts[1][0], pts[1][1]); }
      ctx.stroke();
      ctx.setLineDash([]);
      const mark = cpa || (pts.length ? pts[0] : null);
      if (!mark) continue;
      const r = Math.max(14, 2 * s);
      ctx.beginPath();
      ctx.arc(mark[0], mark[1], r, 0, 2 * Math.PI);
      ctx.lineWidth = a.id === selectedAlert ? 3.5 : 2;
      ctx.stroke();
      const ttc = remainingTtc(a, f);
      const label = (ttc === null ? "" : ttc > 0 ? `TTC ${ttc.toFixed(1)} s` : "contact") +
        (a.min_distance !== null ? ` · ${a.min_distance.toFixed(1)} m` : "");
      ctx.fillStyle = color;
      ctx.textBaseline = "middle";
      const lw = ctx.measureText(label).width, lx = mark[0] + r + 4;
      let ly = mark[1];
      for (let k = 0; k < 8 && placed.some((b) => lx < b[0] + b[2] && b[0] < lx + lw && Math.abs(ly - b[1]) < 14); k++) ly += 14;
      placed.push([lx, ly, lw]);
      ctx.fillText(label, lx, ly);
      if (!state.alertsShown[a.id]) {
        state.alertsShown[a.id] = { shownWall: Date.now() / 1000, pub: a.pub, severity: a.severity, a: a.a, b: a.b };
      }
    }
  }

  function drawHover() {
    const tip = $("tip");
    if (!hover || !frame) { tip.classList.add("hidden"); return; }
    const [ax, ay] = affine(frame);
    let best = -1, bestD = 12 * 12;
    for (let i = 0; i < frame.n; i++) {
      const dx = frame.x[i] * cam.s + ax - hover.x, dy = ay - frame.y[i] * cam.s - hover.y;
      const d = dx * dx + dy * dy;
      if (d < bestD) { bestD = d; best = i; }
    }
    if (best < 0) { tip.classList.add("hidden"); return; }
    const sig = frame.p > 0 ? frame.sigma[best * frame.p + frame.p - 1] : NaN;
    tip.textContent = frame.head.ids[best] + (isFinite(sig) ? ` · ±${sig.toFixed(1)} m at the horizon` : "");
    tip.style.left = hover.x + 14 + "px";
    tip.style.top = hover.y + 10 + "px";
    tip.classList.remove("hidden");
  }

  // -- panels ----------------------------------------------------------------------------

  function fmt(v, digits, unit) {
    return v === null || v === undefined || !isFinite(v) ? "–" : v.toFixed(digits) + (unit || "");
  }

  function updatePanels(f) {
    const st = f.head.stats || {};
    const rows = [];
    rows.push(["Vehicles", `${state.drawnVehicles.toLocaleString()} shown / ${f.head.total.toLocaleString()}`]);
    const rate = st.positions_per_s ?? st.map_positions_per_s;
    rows.push(["Positions/s", rate === undefined || rate === null ? "–" : Math.round(rate).toLocaleString()]);
    const lag = st.lag_s ?? st.map_lag_s;
    rows.push(["Event-time lag", fmt(lag, 2, " s") + (st.consumer_lag !== undefined ? ` · ${st.consumer_lag.toLocaleString()} rec` : "")]);
    const err = st.error_m || {};
    const model = st.model && err[st.model] ? st.model : Object.keys(err).find((m) => m !== "cv");
    for (const h of ["1", "4"]) {
      const m = model ? err[model]?.[h] : undefined, cv = err.cv?.[h];
      if (m === undefined && cv === undefined) continue;
      const cls = m !== undefined && cv !== undefined ? (m <= cv ? "better" : "worse") : "";
      rows.push([`Error at ${h} s`, `${model || "model"} ${fmt(m, 2, " m")} vs CV ${fmt(cv, 2, " m")}`, cls]);
    }
    rows.push(["Frames", `${state.frames} (${state.skipped} skipped here, ${st.dropped ?? 0} at the server)`]);
    const body = $("stats").tBodies[0];
    body.replaceChildren(...rows.map(([k, v, cls]) => {
      const tr = document.createElement("tr");
      const th = document.createElement("th"); th.textContent = k;
      const td = document.createElement("td"); td.textContent = v;
      if (cls) td.className = cls;
      tr.append(th, td);
      return tr;
    }));
    updateAlertList(f);
  }

  function updateAlertList(f) {
    const recent = f.head.recent || [];
    const openIds = new Set(f.head.open.map((a) => a.id));
    const key = recent.map((a) => a.id + (openIds.has(a.id) ? "+" : "")).join(",") + "|" + selectedAlert;
    $("open-count").textContent = openIds.size ? `(${openIds.size} open)` : "";
    $("no-alerts").classList.toggle("hidden", recent.length > 0);
    if (key === recentKey) return;
    recentKey = key;
    const list = $("alert-list");
    list.replaceChildren(...recent.map((a) => {
      const li = document.createElement("li");
      li.className = `${a.severity}${openIds.has(a.id) ? " open" : ""}${a.id === selectedAlert ? " selected" : ""}`;
      li.dataset.alertId = a.id;
      const when = new Date(a.ts * 1000).toLocaleTimeString([], { hour12: false });
      const sev = document.createElement("span"); sev.className = "sev"; sev.textContent = a.severity;
      const time = document.createElement("span"); time.className = "when"; time.textContent = when;
      const text = document.createElement("div");
      text.textContent = `${a.a} × ${a.b} · TTC ${fmt(a.ttc, 1, " s")} · ${fmt(a.min_distance, 1, " m")}`;
      li.append(sev, time, text);
      li.addEventListener("click", () => {
        selectedAlert = a.id;
        recentKey = "";
        const x = a.cpa && a.cpa[0] !== null ? a.cpa[0] : null;
        if (x !== null) centreOn(a.cpa[0], a.cpa[1], 4);
        else if (a.at && a.at[a.a]) centreOn(a.at[a.a][0], a.at[a.a][1], 4);
      });
      return li;
    }));
  }

  // -- input -----------------------------------------------------------------------------

  let drag = null;
  canvas.addEventListener("pointerdown", (e) => {
    drag = { x: e.clientX, y: e.clientY, cx: cam.cx, cy: cam.cy };
    canvas.setPointerCapture(e.pointerId);
    canvas.classList.add("dragging");
  });
  canvas.addEventListener("pointermove", (e) => {
    if (drag) {
      cam.cx = drag.cx - (e.clientX - drag.x) / cam.s;
      cam.cy = drag.cy + (e.clientY - drag.y) / cam.s;
      moved();
    } else {
      hover = { x: e.clientX, y: e.clientY };
      requestDraw();
    }
  });
  const endDrag = () => { drag = null; canvas.classList.remove("dragging"); };
  canvas.addEventListener("pointerup", endDrag);
  canvas.addEventListener("pointercancel", endDrag);
  canvas.addEventListener("pointerleave", () => { hover = null; requestDraw(); });
  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    zoomAt(e.clientX, e.clientY, Math.exp(-e.deltaY * 0.0015));
  }, { passive: false });
  canvas.addEventListener("dblclick", (e) => zoomAt(e.clientX, e.clientY, 2));
  $("fit").addEventListener("click", fit);
  $("zoom-in").addEventListener("click", () => zoomAt(W / 2, H / 2, 1.6));
  $("zoom-out").addEventListener("click", () => zoomAt(W / 2, H / 2, 1 / 1.6));
  $("bands").addEventListener("change", (e) => { showBands = e.target.checked; requestDraw(); });
  window.addEventListener("keydown", (e) => {
    if (e.key === "f" || e.key === "F") fit();
    else if (e.key === "+" || e.key === "=") zoomAt(W / 2, H / 2, 1.6);
    else if (e.key === "-") zoomAt(W / 2, H / 2, 1 / 1.6);
    else if (e.key === "b" || e.key === "B") $("bands").click();
  });
  window.addEventListener("resize", resize);
  state.fit = fit;
  state.centreOn = centreOn;

  resize();
  connect();
})();
