// Strata dashboard. Plain JS, no dependencies. Every value from the server
// is rendered with textContent or as a DOM property, never as HTML.
'use strict';
(function () {
  const KEY_STORE = 'strata.adminKey';
  const $ = (id) => document.getElementById(id);

  function fmtNum(v) {
    const a = Math.abs(v);
    if (a >= 1e6) return (v / 1e6).toFixed(1) + 'M';
    if (a >= 1e4) return (v / 1e3).toFixed(1) + 'k';
    if (a >= 100) return v.toFixed(0);
    if (a >= 10) return v.toFixed(1);
    return v.toFixed(2).replace(/\.?0+$/, '') || '0';
  }
  function fmtMs(v) {
    if (v >= 1000) return (v / 1000).toFixed(2) + ' s';
    if (v >= 100) return v.toFixed(0) + ' ms';
    if (v >= 10) return v.toFixed(1) + ' ms';
    return v.toFixed(2) + ' ms';
  }
  function fmtSecs(v) {
    if (v >= 60) return (v / 60).toFixed(1) + ' min';
    if (v >= 1) return v.toFixed(1) + ' s';
    return (v * 1000).toFixed(0) + ' ms';
  }
  const fmtPct = (v) => (v * 100).toFixed(1) + '%';
  const fmtInt = (v) => Math.round(v).toLocaleString('en-US');
  const str = (v) => String(v);

  // The columns of a tier's table, after the name. A column is shown when
  // some node of the tier has a value for it.
  const COLS = [
    { key: 'address', label: 'Address', cls: 'addr', fmt: str },
    { key: 'health', label: 'Health', pill: true, always: true },
    { key: 'breaker', label: 'Breaker', pill: true },
    { key: 'rps', label: 'Req/s', cls: 'num', fmt: fmtNum },
    { key: 'p99_ms', label: 'p99', cls: 'num', fmt: fmtMs },
    { key: 'hit_ratio', label: 'Cache hits', cls: 'num', fmt: fmtPct },
    { key: 'lag_s', label: 'Lag', cls: 'num', fmt: fmtSecs },
    { key: 'limited_per_s', label: 'Limited/s', cls: 'num', fmt: fmtNum },
    { key: 'writebehind', label: 'Write-behind', cls: 'num', fmt: fmtInt },
    { key: 'note', label: 'Note', cls: 'note', fmt: str },
  ];

  let cfg = { title: 'Strata', interval_ms: 1000, history_ms: 300000, chaos_url: '', actions: [] };
  const tiers = new Map(); // tier name -> {el, tbody, count, shown, rows: Map(node name -> row), order}
  let tierOrder = '';
  let points = []; // {t, rps, p99}
  let lastFrame = 0;

  function setText(el, s) { if (el.textContent !== s) el.textContent = s; }
  function setHidden(el, h) { if (el.hidden !== h) el.hidden = h; }
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // ---- tiers and nodes ----

  function tierFor(name) {
    let t = tiers.get(name);
    if (t) return t;
    const section = el('section', 'tier');
    section.dataset.tier = name;
    const h = el('h2');
    h.append(el('span', '', name));
    const count = el('span', 'count');
    h.append(count);
    const table = el('table');
    const thead = el('thead');
    const hr = el('tr');
    const ths = {};
    hr.append(el('th', '', 'Node'));
    for (const c of COLS) {
      const th = el('th', c.cls === 'num' ? 'num' : '', c.label);
      th.hidden = !c.always;
      ths[c.key] = th;
      hr.append(th);
    }
    const ath = el('th', '', 'Chaos');
    ath.hidden = true;
    hr.append(ath);
    thead.append(hr);
    const tbody = el('tbody');
    table.append(thead, tbody);
    section.append(h, table);
    t = { el: section, tbody, count, ths, ath, shown: {}, rows: new Map(), order: '', actionsShown: false };
    for (const c of COLS) t.shown[c.key] = !!c.always;
    tiers.set(name, t);
    return t;
  }

  function rowFor(t, node) {
    let r = t.rows.get(node.name);
    if (r) return r;
    const tr = el('tr', 'node');
    tr.dataset.name = node.name;
    const name = el('td', 'name');
    const nameText = el('span', '', node.name);
    const role = el('span', 'role');
    name.append(nameText, role);
    tr.append(name);
    const cells = {};
    for (const c of COLS) {
      const td = el('td', c.cls || '');
      if (c.pill) {
        const p = el('span', 'pill');
        td.append(p);
        td.pill = p;
      }
      td.hidden = !t.shown[c.key];
      cells[c.key] = td;
      tr.append(td);
    }
    const actions = el('td', 'actions');
    actions.hidden = !t.actionsShown;
    tr.append(actions);
    r = { tr, role, cells, actions, node, actionKey: null };
    name.title = node.name;
    t.rows.set(node.name, r);
    return r;
  }

  function renderActions(r) {
    const node = r.node;
    const list = cfg.actions.filter((a) => a.role === node.role && node.target);
    const key = list.map((a) => a.name).join(' ');
    if (key === r.actionKey) return list.length > 0;
    r.actionKey = key;
    r.actions.replaceChildren();
    for (const a of list) {
      const b = el('button', /kill|stop/.test(a.name) ? 'danger' : '', a.label);
      b.type = 'button';
      b.dataset.action = a.name;
      b.title = a.name + ' ' + node.name;
      b.addEventListener('click', () => chaos(a, r, b));
      r.actions.append(b);
    }
    return list.length > 0;
  }

  function updateTier(tier) {
    const t = tierFor(tier.name);
    const nodes = tier.nodes || [];
    const present = {};
    let anyActions = false;
    const seen = new Set();
    for (const n of nodes) {
      if (typeof n.name !== 'string' || seen.has(n.name)) continue;
      seen.add(n.name);
      const r = rowFor(t, n);
      r.node = n;
      setText(r.role, n.role || '');
      r.tr.dataset.role = n.role || '';
      r.tr.dataset.health = n.health || '';
      for (const c of COLS) {
        const v = n[c.key];
        const has = v !== undefined && v !== null && v !== '';
        if (has) present[c.key] = true;
        const td = r.cells[c.key];
        if (c.pill) {
          const s = has ? String(v) : '–';
          setText(td.pill, s);
          const cls = 'pill ' + (has ? s.replace(/[^a-z-]/g, '') : '');
          if (td.pill.className !== cls) td.pill.className = cls;
        } else {
          setText(td, has ? (typeof v === 'number' ? c.fmt(v) : String(v)) : '–');
        }
        if (c.key === 'note') td.title = has ? String(v) : '';
      }
      if (renderActions(r)) anyActions = true;
    }
    for (const [name, r] of t.rows) {
      if (!seen.has(name)) { r.tr.remove(); t.rows.delete(name); }
    }
    const order = JSON.stringify([...seen]);
    if (order !== t.order) {
      t.order = order;
      for (const name of seen) t.tbody.append(t.rows.get(name).tr);
    }
    for (const c of COLS) {
      const show = !!(c.always || present[c.key]);
      if (t.shown[c.key] === show) continue;
      t.shown[c.key] = show;
      t.ths[c.key].hidden = !show;
      for (const r of t.rows.values()) r.cells[c.key].hidden = !show;
    }
    if (anyActions !== t.actionsShown) t.actionsShown = anyActions;
    setHidden(t.ath, !anyActions);
    for (const r of t.rows.values()) setHidden(r.actions, !anyActions);
    const isShard = nodes.length > 0 && nodes.every((n) => n.role === 'primary' || n.role === 'replica');
    t.el.classList.toggle('shard', isShard);
    setText(t.count, nodes.length === 1 ? '1 node' : nodes.length + ' nodes');
    return nodes;
  }

  function render(s) {
    const list = Array.isArray(s.tiers) ? s.tiers : [];
    const seen = new Set();
    let up = 0, known = 0;
    for (const tier of list) {
      if (typeof tier.name !== 'string' || seen.has(tier.name)) continue;
      seen.add(tier.name);
      for (const n of updateTier(tier)) {
        if (n.health) { known++; if (n.health === 'up') up++; }
      }
    }
    for (const [name, t] of tiers) {
      if (!seen.has(name)) { t.el.remove(); tiers.delete(name); }
    }
    const order = JSON.stringify([...seen]);
    if (order !== tierOrder) {
      tierOrder = order;
      const box = $('tiers');
      for (const name of seen) box.append(tiers.get(name).el);
    }
    setText($('sum-rps'), typeof s.rps === 'number' ? fmtNum(s.rps) : '–');
    setText($('sum-p99'), typeof s.p99_ms === 'number' ? fmtMs(s.p99_ms) : '–');
    setText($('sum-up'), known ? up + ' / ' + known : '–');
    const err = $('error');
    setText(err, s.error ? 'Source error: ' + s.error : '');
    setHidden(err, !s.error);
    const t = new Date(s.time);
    setText($('updated'), isNaN(t) ? '' : 'updated ' + t.toLocaleTimeString());
  }

  // ---- chart ----

  function addPoint(t, rps, p99) {
    if (!isFinite(t)) return;
    if (points.length && t <= points[points.length - 1].t) return;
    points.push({ t, rps: typeof rps === 'number' ? rps : null, p99: typeof p99 === 'number' ? p99 : null });
    const cut = t - cfg.history_ms;
    let i = 0;
    while (i < points.length && points[i].t < cut) i++;
    if (i) points = points.slice(i);
  }

  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function drawChart() {
    const c = $('chart');
    const dpr = window.devicePixelRatio || 1;
    const w = c.clientWidth, h = c.clientHeight;
    if (!w || !h) return;
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
      c.width = Math.round(w * dpr);
      c.height = Math.round(h * dpr);
    }
    const g = c.getContext('2d');
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    const css = getComputedStyle(document.documentElement);
    const colRps = css.getPropertyValue('--rps').trim() || '#2f6fdb';
    const colP99 = css.getPropertyValue('--p99').trim() || '#e0782b';
    const L = 46, R = 56, T = 8, B = 20;
    const pw = w - L - R, ph = h - T - B;
    const now = points.length ? points[points.length - 1].t : Date.now();
    const t0 = now - cfg.history_ms;
    let maxR = 0, maxP = 0;
    for (const p of points) {
      if (p.rps !== null && p.rps > maxR) maxR = p.rps;
      if (p.p99 !== null && p.p99 > maxP) maxP = p.p99;
    }
    maxR = niceMax(maxR); maxP = niceMax(maxP);
    g.font = '11px system-ui, sans-serif';
    g.lineWidth = 1;
    g.strokeStyle = '#e2e6ee';
    g.fillStyle = '#6b7385';
    for (let i = 0; i <= 4; i++) {
      const y = T + ph - (ph * i) / 4 + 0.5;
      g.beginPath(); g.moveTo(L, y); g.lineTo(L + pw, y); g.stroke();
      g.textAlign = 'right'; g.textBaseline = 'middle';
      g.fillText(fmtNum((maxR * i) / 4), L - 6, y);
      g.textAlign = 'left';
      g.fillText(fmtMs((maxP * i) / 4).replace(' ', ''), L + pw + 6, y);
    }
    g.textAlign = 'center'; g.textBaseline = 'top';
    const spanS = cfg.history_ms / 1000;
    const step = [5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200].find((s) => spanS / s <= 6) || 7200;
    for (let ago = 0; ago <= spanS + 1e-9; ago += step) {
      const px = L + pw - (ago / spanS) * pw;
      const label = ago === 0 ? 'now' : '-' + (ago >= 60 ? +(ago / 60).toFixed(1) + 'm' : ago + 's');
      g.fillText(label, Math.max(L, Math.min(L + pw - 8, px)), T + ph + 5);
    }
    const mins = cfg.history_ms / 60000;
    const x = (t) => L + ((t - t0) / cfg.history_ms) * pw;
    function line(get, max, color, fill) {
      g.strokeStyle = color; g.lineWidth = 1.75; g.lineJoin = 'round';
      let open = false, first = 0, lastX = 0;
      const flush = () => {
        if (!open) return;
        g.stroke();
        if (fill) {
          g.lineTo(lastX, T + ph); g.lineTo(first, T + ph); g.closePath();
          g.globalAlpha = 0.08; g.fillStyle = color; g.fill(); g.globalAlpha = 1;
        }
        open = false;
      };
      for (const p of points) {
        const v = get(p);
        if (v === null || p.t < t0) { flush(); continue; }
        const px = x(p.t), py = T + ph - (Math.min(v, max) / max) * ph;
        if (!open) { g.beginPath(); g.moveTo(px, py); open = true; first = px; } else g.lineTo(px, py);
        lastX = px;
      }
      flush();
    }
    line((p) => p.rps, maxR, colRps, true);
    line((p) => p.p99, maxP, colP99, false);
    setText($('chart-span'), '· last ' + (mins >= 1 ? +mins.toFixed(1) + ' min' : Math.round(mins * 60) + ' s'));
  }

  // ---- chaos actions ----

  function adminKey() {
    try { return sessionStorage.getItem(KEY_STORE) || ''; } catch (e) { return ''; }
  }
  function showKeyState() {
    const f = $('keyform');
    const has = adminKey() !== '';
    f.classList.toggle('set', has);
    $('adminkey').placeholder = has ? 'key set for this tab' : 'needed for chaos actions';
    setHidden($('forget'), !has);
  }
  function status(msg, isError) {
    const s = $('action-status');
    s.className = isError ? 'banner error' : 'banner';
    setText(s, msg);
    setHidden(s, false);
  }

  async function chaos(a, r, button) {
    const key = adminKey();
    if (!key) {
      status('Enter the admin key (top right) to use chaos actions.', true);
      $('adminkey').focus();
      return;
    }
    const node = r.node;
    const base = cfg.chaos_url.replace(/\/+$/, '');
    const url = base + '/chaos/' + encodeURIComponent(a.name) + '?target=' + encodeURIComponent(node.target);
    button.disabled = true;
    try {
      const res = await fetch(url, {
        method: 'POST', cache: 'no-store', credentials: 'omit',
        headers: { Authorization: 'Bearer ' + key },
      });
      let body = '';
      try { body = (await res.text()).slice(0, 300); } catch (e) { /* no body */ }
      status(a.name + ' ' + node.name + ': ' + res.status + ' ' + res.statusText + (body && !res.ok ? ' – ' + body : ''), !res.ok);
    } catch (e) {
      status(a.name + ' ' + node.name + ': ' + e.message, true);
    } finally {
      button.disabled = false;
    }
  }

  // ---- connection ----

  function setConn(state) {
    const c = $('conn');
    if (c.dataset.state !== state) { c.dataset.state = state; c.textContent = state; }
  }

  function connect() {
    const es = new EventSource('events');
    es.onopen = () => setConn('live');
    es.onerror = () => setConn(es.readyState === EventSource.CLOSED ? 'disconnected' : 'reconnecting');
    es.addEventListener('history', (ev) => {
      let h;
      try { h = JSON.parse(ev.data); } catch (e) { return; }
      if (!Array.isArray(h)) return;
      points = [];
      for (const p of h) addPoint(p.t, p.rps, p.p99_ms);
      drawChart();
    });
    es.addEventListener('snapshot', (ev) => {
      let s;
      try { s = JSON.parse(ev.data); } catch (e) { return; }
      lastFrame = Date.now();
      setConn('live');
      render(s);
      if (!s.error) addPoint(Date.parse(s.time), s.rps, s.p99_ms);
      drawChart();
    });
    setInterval(() => {
      if (lastFrame && Date.now() - lastFrame > 3 * cfg.interval_ms && $('conn').dataset.state === 'live') setConn('stale');
    }, 1000);
  }

  async function start() {
    try {
      const res = await fetch('config.json', { cache: 'no-store' });
      if (res.ok) cfg = Object.assign(cfg, await res.json());
    } catch (e) { /* keep defaults */ }
    if (!Array.isArray(cfg.actions)) cfg.actions = [];
    document.title = cfg.title;
    setText($('title'), cfg.title);
    if (cfg.chaos_url) {
      const f = $('keyform');
      f.hidden = false;
      f.addEventListener('submit', (ev) => {
        ev.preventDefault();
        const v = $('adminkey').value.trim();
        $('adminkey').value = '';
        try { if (v) sessionStorage.setItem(KEY_STORE, v); } catch (e) { /* storage off */ }
        showKeyState();
      });
      $('forget').addEventListener('click', () => {
        try { sessionStorage.removeItem(KEY_STORE); } catch (e) { /* storage off */ }
        showKeyState();
      });
      showKeyState();
    }
    window.addEventListener('resize', drawChart);
    drawChart();
    connect();
  }

  start();
})();
