// cellbench lab page: the grid of channels (lab.grid) and one channel (lab.channel).
// Live updates come as server-sent events from /api/events (no polling); the API is
// documented at /api/openapi.json. No build step: plain JS, uPlot from npm as shipped.
"use strict";
const lab = (() => {
  const stats = { latencies_s: [], messages: 0 };  // read by the benchmark (make bench)

  async function api(method, path, body) {
    const headers = { "Content-Type": "application/json" };
    const token = localStorage.getItem("cellbench-token");
    if (token) headers.Authorization = "Bearer " + token;
    const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    if (r.status === 401) {
      const t = prompt("This lab needs its token (the file 'token' in its data directory):");
      if (t) { localStorage.setItem("cellbench-token", t.trim()); return api(method, path, body); }
    }
    const data = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(data.error || r.statusText);
    return data;
  }

  const esc = (s) => String(s ?? "").replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
  function hms(s) {
    if (s === null || s === undefined || !isFinite(s)) return "–";
    s = Math.max(0, Math.round(s));
    const h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60, x = s % 60;
    return `${h}:${String(m).padStart(2, "0")}:${String(x).padStart(2, "0")}`;
  }
  const num = (x, d) => (x === null || x === undefined ? "–" : Number(x).toFixed(d));

  function cardClass(ch) {
    const live = ch.live || {};
    if (ch.error) return "unreachable";
    if (live.fault || (ch.job && ch.job.state === "fault")) return "fault";
    return ch.job ? ch.job.state : "idle";
  }

  function cardBody(ch) {
    const j = ch.job, l = ch.live || {};
    const soc = l.soc === null || l.soc === undefined ? null : l.soc;
    const band = soc === null ? "" : `<div class="socbar" title="SoC ± 2σ">
        <div class="band" style="left:${Math.max(0, soc - 2 * l.soc_std) * 100}%;width:${Math.min(1, 4 * l.soc_std) * 100}%"></div>
        <div class="mid" style="left:${soc * 100}%"></div></div>`;
    // The estimator's slow states (issue 14), when its model tracks them: ± 2σ as for SoC.
    const cap = l.cap_mAh === null || l.cap_mAh === undefined ? "" :
      `<dt>capacity</dt><dd class="cap" title="estimated capacity ± 2σ (% of the model's)">${num(l.cap_mAh, 4)} mAh${
        l.cap_pct === null || l.cap_pct === undefined ? "" : ` (${num(l.cap_pct, 1)} %)`} ± ${num(2 * l.cap_std_mAh, 4)}</dd>`;
    const rct = l.r_ohm === null || l.r_ohm === undefined ? "" :
      `<dt>R<sub>ct</sub></dt><dd class="rct" title="estimated charge-transfer resistance ± 2σ">${num(l.r_ohm, 1)} Ω ± ${num(2 * l.r_std_ohm, 1)}</dd>`;
    const fault = l.fault ? `<div class="fault-text">FAULT ${esc(l.fault_text)}</div>` :
      (j && j.state === "fault" ? `<div class="fault-text">FAULT ${esc(j.stop_reason)}</div>` : "");
    return `<h3><span>${esc(ch.id)}${j ? " · " + esc(j.cell_name) : ""}</span>
        <span class="state">${esc(j ? j.state : (ch.error ? "unreachable" : "idle"))}${ch.held ? " (held)" : ""}</span></h3>
      ${ch.error ? `<div class="fault-text">${esc(ch.error)}</div>` : ""}${fault}
      <dl>
        <dt>job</dt><dd>${j ? `#${j.id} ${esc(j.protocol_name)}` : "–"}${ch.queued.length ? ` (+${ch.queued.length} queued)` : ""}</dd>
        <dt>step</dt><dd>${l.step_type ? `${esc(l.step_type)} ${l.step_no + 1}/${l.steps} (#${l.step_count})` : "–"}</dd>
        <dt>cycle</dt><dd class="cycle">${l.cycle ?? "–"}</dd>
        <dt>V</dt><dd class="v">${num(l.v_V, 4)} V</dd>
        <dt>I</dt><dd class="i">${num(l.i_mA, 4)} mA</dd>
        <dt>SoC</dt><dd class="soc">${soc === null ? "–" : `${(soc * 100).toFixed(1)} % ± ${(2 * l.soc_std * 100).toFixed(1)}`}</dd>${cap}${rct}
        <dt>elapsed</dt><dd class="elapsed">${hms(l.t_s)}</dd>
        <dt>left</dt><dd>${j && j.state === "running" ? "~" + hms(l.remaining_s) : "–"}</dd>
      </dl>${band}`;
  }

  function renderEvent(list, ev) {
    const li = document.createElement("li");
    li.textContent = `${new Date(ev.unix_s * 1000).toLocaleTimeString()} ${ev.channel_id ? ev.channel_id + ": " : ""}${ev.text}`;
    if (ev.kind === "fault") li.style.color = "#d62828";
    list.prepend(li);
  }

  function stream(query, handlers) {
    const link = document.getElementById("link");
    const es = new EventSource("/api/events" + query);
    es.onopen = () => { link.textContent = "live"; link.classList.remove("down"); handlers.open && handlers.open(); };
    es.onerror = () => { link.textContent = "reconnecting…"; link.classList.add("down"); };
    es.onmessage = (m) => {
      const msg = JSON.parse(m.data);
      stats.messages++;
      if (msg.type === "state" && msg.state.live && msg.state.live.rx_unix_s) {
        stats.latencies_s.push(Date.now() / 1000 - msg.state.live.rx_unix_s);
      }
      (handlers[msg.type] || (() => {}))(msg);
    };
    return es;
  }

  // ------------------------------------------------------------ the grid
  async function grid() {
    const root = document.getElementById("grid");
    const cards = {};
    function show(ch) {
      let a = cards[ch.id];
      if (!a) {
        a = cards[ch.id] = document.createElement("a");
        a.href = "/channel/" + encodeURIComponent(ch.id);
        a.dataset.channel = ch.id;
        root.appendChild(a);
      }
      a.className = "card " + cardClass(ch);
      a.innerHTML = cardBody(ch);
    }
    // A reload's answer may be older than a state pushed while it was on its way: a card
    // that got one meanwhile keeps it (every change is pushed, so the newest push wins).
    const pushed = {};
    async function reload() {
      const seen = Object.assign({}, pushed);
      const chans = await api("GET", "/api/channels");
      chans.forEach((ch) => { if (pushed[ch.id] === seen[ch.id]) show(ch); });
      const faults = chans.filter((c) => cardClass(c) === "fault").length;
      document.getElementById("summary").textContent = `${chans.length} channels, ${chans.filter((c) => c.job && c.job.state === "running").length} running, ${faults} faulted`;
      document.body.dataset.loaded = String(chans.length);
    }
    const list = document.getElementById("events");
    (await api("GET", "/api/history?limit=30")).reverse().forEach((e) => renderEvent(list, e));
    const push = (m) => { pushed[m.state.id] = (pushed[m.state.id] || 0) + 1; show(m.state); };
    stream("", { open: reload, resync: reload, state: push, event: (m) => renderEvent(list, m.event) });
    await reload();
  }

  // ------------------------------------------------------------ one channel
  function plot(el, title, labels, opts = {}) {
    const series = [{ label: opts.x || "t / h" }].concat(labels.map((l, k) => ({
      label: l, stroke: opts.colors ? opts.colors[k] : ["#1f5fa8", "#d62828", "#2a9d4b"][k],
      width: 1.5, points: { show: !!opts.points }, ...(opts.series ? opts.series[k] : {}) })));
    const u = new uPlot({ title, width: el.clientWidth - 10, height: 230, series,
      scales: { x: { time: false } }, bands: opts.bands || [],
      axes: [{ label: opts.x || "test time / h" }, { label: opts.y || "" }] },
      [[]].concat(labels.map(() => [])), el);
    return u;
  }

  async function channel(cid) {
    document.getElementById("title").textContent = cid;
    document.title = "cellbench lab: " + cid;
    const card = document.getElementById("card");
    const said = document.getElementById("said");
    const list = document.getElementById("events");
    const pv = plot(document.getElementById("plot-v"), "Voltage", ["V / V"], { y: "V" });
    const pi = plot(document.getElementById("plot-i"), "Current", ["I / mA"], { y: "mA" });
    const ps = plot(document.getElementById("plot-soc"), "State of charge (± 2σ)", ["SoC", "+2σ", "−2σ"],
      { y: "SoC", colors: ["#1f5fa8", "#9cc3ee", "#9cc3ee"], bands: [{ series: [2, 3], fill: "rgba(156,195,238,.35)" }] });
    const pc = plot(document.getElementById("plot-cap"), "Capacity per cycle: measured, and the board's estimate",
      ["charge", "discharge", "estimated"], { x: "cycle", y: "mAh", points: true });
    const pr = plot(document.getElementById("plot-rct"), "Charge-transfer resistance per cycle, estimated (± 2σ)",
      ["R_ct / Ω", "+2σ", "−2σ"], { x: "cycle", y: "Ω", points: true, colors: ["#2a9d4b", "#a8dbb5", "#a8dbb5"],
        bands: [{ series: [2, 3], fill: "rgba(168,219,181,.35)" }] });
    const pe = plot(document.getElementById("plot-ce"), "Coulombic efficiency", ["CE"], { x: "cycle", y: "CE", points: true });
    let state = null, job = null, mass = null, lastSeq = -1;
    const d = { t: [], v: [], i: [], soc: [], hi: [], lo: [], cyc: [], chg: [], dch: [], ce: [],
      cap: [], r: [], rhi: [], rlo: [] };
    let dirty = false;
    function draw() {
      dirty = false;
      pv.setData([d.t, d.v]); pi.setData([d.t, d.i]); ps.setData([d.t, d.soc, d.hi, d.lo]);
      pc.setData([d.cyc, d.chg, d.dch, d.cap]); pe.setData([d.cyc, d.ce]);
      pr.setData([d.cyc, d.r, d.rhi, d.rlo]);
      document.body.dataset.points = String(d.t.length);
      document.body.dataset.cycles = String(d.cyc.length);
    }
    const later = () => { if (!dirty) { dirty = true; requestAnimationFrame(draw); } };
    const perG = (x) => (mass ? x / (mass / 1000) : x);
    function addCycle(row) {
      d.cyc.push(row.cycle); d.chg.push(perG(row.chg_mAh)); d.dch.push(perG(row.dch_mAh)); d.ce.push(row.ce);
      const r = row.r_ohm ?? null, e = row.r_std_ohm ?? 0;
      d.cap.push(row.cap_mAh === null || row.cap_mAh === undefined ? null : perG(row.cap_mAh));
      d.r.push(r); d.rhi.push(r === null ? null : r + 2 * e); d.rlo.push(r === null ? null : r - 2 * e);
      document.body.dataset.estimates = String(d.cap.filter((x) => x !== null).length);
    }
    async function loadSeries() {
      const s = await api("GET", `/api/channels/${encodeURIComponent(cid)}/series`);
      job = s.job;
      const j = state && state.jobs ? state.jobs.find((x) => x.id === job) : null;
      mass = j ? j.mass_mg : null;
      pc.axes[1].label = mass ? "mAh/g" : "mAh";
      Object.keys(d).forEach((k) => (d[k] = []));
      s.t_s.forEach((t, k) => {
        d.t.push(t / 3600); d.v.push(s.v_V[k]); d.i.push(s.i_mA[k]);
        const z = s.soc[k], e = s.soc_std[k];
        d.soc.push(z); d.hi.push(z === null ? null : z + 2 * e); d.lo.push(z === null ? null : z - 2 * e);
      });
      s.cycles.forEach(addCycle);
      lastSeq = s.last_seq;
      later();
    }
    function showJobs(jobs) {
      document.querySelector("#jobs tbody").innerHTML = jobs.slice().reverse().map((j) => `<tr>
        <td>#${j.id}</td><td>${esc(j.cell_name)}</td><td>${esc(j.protocol_name)}</td>
        <td class="job-state" data-job="${j.id}">${esc(j.state)}</td><td>${esc(j.stop_reason || "")}</td>
        <td>${j.has_log ? `<a href="/api/jobs/${j.id}/log">log</a> · <a href="/api/jobs/${j.id}/sidecar">sidecar</a>` : ""}</td></tr>`).join("");
    }
    function showState(st) {
      card.className = "card wide " + cardClass(st);
      card.innerHTML = cardBody(st);
      const running = st.job && st.job.state === "running";
      const waiting = st.job && ["paused", "interrupted"].includes(st.job.state);
      document.getElementById("pause").disabled = !running;
      document.getElementById("resume").disabled = !waiting;
      document.getElementById("stop").disabled = !(running || waiting);
      document.getElementById("release").disabled = !st.held;
    }
    let pushed = 0;  // states pushed so far: as on the grid, a reload never shows an older one
    async function reload() {
      const seen = pushed;
      const fresh = await api("GET", `/api/channels/${encodeURIComponent(cid)}`);
      if (pushed === seen) showState(fresh);
      state = pushed === seen ? fresh : Object.assign(fresh, state, { jobs: fresh.jobs });
      showJobs(state.jobs);
      await loadSeries();
    }
    async function act(path) {
      said.textContent = "";
      try { await api("POST", path); } catch (e) { said.textContent = e.message; }
    }
    const jobPath = (a) => () => state.job && act(`/api/jobs/${state.job.id}/${a}`);
    document.getElementById("pause").onclick = jobPath("pause");
    document.getElementById("resume").onclick = jobPath("resume");
    document.getElementById("stop").onclick = jobPath("stop");
    document.getElementById("release").onclick = () => act(`/api/channels/${encodeURIComponent(cid)}/release`);
    const form = document.getElementById("queue");
    (await api("GET", "/api/protocols")).forEach((n) => form.protocol_file.add(new Option(n, n)));
    (await api("GET", "/api/models")).forEach((n) => form.model_file.add(new Option(n, n)));
    form.onsubmit = async (ev) => {
      ev.preventDefault();
      said.textContent = "";
      const req = { cell_name: form.cell_name.value };
      try {
        const file = form.protocol_upload.files[0];
        if (file) req.protocol = JSON.parse(await file.text());
        else if (form.protocol_file.value) req.protocol_file = form.protocol_file.value;
        if (form.mass_mg.value) req.mass_mg = Number(form.mass_mg.value);
        if (form.model_file.value) req.model_file = form.model_file.value;
        const j = await api("POST", `/api/channels/${encodeURIComponent(cid)}/jobs`, req);
        said.textContent = `job ${j.id} queued`;
        said.style.color = "#2a9d4b";
      } catch (e) { said.textContent = e.message; said.style.color = ""; }
    };
    (await api("GET", `/api/history?channel=${encodeURIComponent(cid)}&limit=50`)).reverse().forEach((e) => renderEvent(list, e));
    stream("?channel=" + encodeURIComponent(cid), {
      open: reload,
      resync: reload,
      state: async (m) => {
        const st = m.state;
        pushed++;
        state = Object.assign(state || {}, st);
        showState(st);
        const l = st.live;
        if (st.job && st.job.id !== job && l && l.seq !== undefined) { await reload(); return; }
        if (l && l.seq !== undefined && l.seq > lastSeq && st.job && st.job.id === job) {
          lastSeq = l.seq;
          d.t.push(l.t_s / 3600); d.v.push(l.v_V); d.i.push(l.i_mA);
          d.soc.push(l.soc); d.hi.push(l.soc === null ? null : l.soc + 2 * l.soc_std);
          d.lo.push(l.soc === null ? null : l.soc - 2 * l.soc_std);
          later();
        }
      },
      cycle: (m) => { if (m.job === job) { addCycle(m.row); later(); } },
      event: async (m) => {
        renderEvent(list, m.event);
        state = await api("GET", `/api/channels/${encodeURIComponent(cid)}`);
        showJobs(state.jobs);
      },
    });
  }

  return { grid, channel, api, stats };
})();
