// Bulkhead console: one page, routed after the # (so no URL the server
// sees ever carries an id's data or a secret). Every text from the API is
// put in the page as text (textContent, text nodes), never as markup.
// The session token lives in this tab's sessionStorage only and travels in
// the Authorization header: no cookie, so no other site can forge a
// request with it.
'use strict';

(function () {
  const store = window.sessionStorage;
  const $ = (id) => document.getElementById(id);
  let session = null; // {token, expires_at, principal}
  let expiryTimer = null;

  // el builds an element; strings and numbers among children become text
  // nodes; attrs never take event handlers as strings.
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'on') { for (const [ev, fn] of Object.entries(v)) e.addEventListener(ev, fn); }
      else if (k === 'class') e.className = v;
      else if (k === 'dataset') Object.assign(e.dataset, v);
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  class APIError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function api(method, path, body, extraHeaders) {
    const headers = Object.assign({ 'Accept': 'application/json' }, extraHeaders || {});
    if (session) headers['Authorization'] = 'Bearer ' + session.token;
    const init = { method, headers, credentials: 'omit', cache: 'no-store', redirect: 'error' };
    if (body !== undefined) { headers['Content-Type'] = 'application/json'; init.body = JSON.stringify(body); }
    const r = await fetch(path, init);
    let data = null;
    try { data = await r.json(); } catch (_) { data = null; }
    if (r.status === 401 && session && path !== '/admin/v1/session') {
      endSession('Your session has ended. Log in again.');
      throw new APIError(401, 'session ended');
    }
    if (!r.ok) throw new APIError(r.status, (data && data.error && data.error.message) || ('HTTP ' + r.status));
    return data;
  }

  function showError(msg) {
    const e = $('error');
    if (!msg) { e.hidden = true; e.textContent = ''; return; }
    e.textContent = msg; e.hidden = false;
  }

  function endSession(msg) {
    session = null;
    store.removeItem('bh_session');
    if (expiryTimer) clearTimeout(expiryTimer);
    renderHeader();
    renderLogin(msg);
  }

  function startSession(s) {
    session = s;
    store.setItem('bh_session', JSON.stringify(s));
    const ms = new Date(s.expires_at).getTime() - Date.now();
    if (expiryTimer) clearTimeout(expiryTimer);
    expiryTimer = setTimeout(() => endSession('Your session expired. Log in again.'), Math.max(ms, 0));
    renderHeader();
  }

  function isOperator() { return session && session.principal.kind === 'operator'; }

  function renderHeader() {
    const who = $('who');
    who.textContent = '';
    $('logout').hidden = !session;
    $('nav').hidden = !session;
    if (!session) return;
    const p = session.principal;
    const what = p.kind === 'operator' ? 'operator (' + p.scope + ')' : 'tenant administrator of ' + p.organization_id;
    who.append(el('span', { id: 'who-kind' }, what), ' · ', el('span', { class: 'muted' }, p.actor),
      ' · until ', new Date(session.expires_at).toLocaleTimeString());
  }

  function main(...children) {
    const m = $('main');
    m.replaceChildren(...children);
  }

  // ---- login ----

  function renderLogin(msg) {
    const cred = el('textarea', { id: 'login-credential', autocomplete: 'off', spellcheck: 'false',
      placeholder: 'bhadm_… or a JWT (eyJ…)' });
    const form = el('form', { id: 'login-form', on: { submit: async (ev) => {
      ev.preventDefault();
      showError('');
      const credential = cred.value.trim();
      cred.value = '';
      try {
        const s = await api('POST', '/admin/v1/session', { credential });
        startSession(s);
        location.hash = homeHash();
        route();
      } catch (e) { showError('Login refused: ' + e.message); }
    } } },
    el('label', { for: 'login-credential' }, 'Operator token or tenant administrator\'s JWT'), cred,
    el('p', {}, el('button', { id: 'login-submit', type: 'submit' }, 'Log in')));
    main(el('section', { class: 'login' }, el('h1', {}, 'Log in'), msg ? el('p', { id: 'login-message' }, msg) : null, form,
      el('p', { class: 'muted' }, 'The credential is exchanged for a session of this tab; it is not kept.')));
  }

  function homeHash() {
    return isOperator() ? '#/orgs' : '#/orgs/' + session.principal.organization_id;
  }

  // ---- organizations ----

  async function renderOrgs() {
    const list = el('tbody', { id: 'org-list' });
    const more = el('button', { id: 'orgs-more', class: 'secondary', type: 'button', hidden: true }, 'More');
    let cursor = null;
    async function page() {
      const q = cursor ? '?after=' + encodeURIComponent(cursor) : '';
      const r = await api('GET', '/admin/v1/organizations' + q);
      for (const o of r.data) {
        list.append(el('tr', { class: 'clickable', dataset: { orgId: o.id }, on: { click: () => { location.hash = '#/orgs/' + o.id; } } },
          el('td', {}, el('a', { href: '#/orgs/' + o.id }, o.name)), el('td', { class: 'muted' }, o.id),
          el('td', {}, o.capture_mode), el('td', {}, new Date(o.created_at).toLocaleString())));
      }
      cursor = r.next_cursor;
      more.hidden = !r.has_more;
    }
    more.addEventListener('click', () => page().catch((e) => showError(e.message)));
    // The form above the list: the list fills in after the page is shown,
    // and must not move the form's button under the pointer.
    const sections = [el('section', {}, el('h1', {}, 'Organizations'))];
    if (isOperator() && session.principal.scope === 'write') {
      const name = el('input', { id: 'org-name', required: true, maxlength: 200, placeholder: 'acme' });
      sections.push(el('section', {}, el('h2', {}, 'New organization'), el('form', { class: 'inline', on: { submit: async (ev) => {
        ev.preventDefault();
        try {
          const o = await api('POST', '/admin/v1/organizations', { name: name.value }, { 'Idempotency-Key': crypto.randomUUID() });
          location.hash = '#/orgs/' + o.id;
        } catch (e) { showError(e.message); }
      } } }, el('label', {}, 'Name', name), el('button', { id: 'org-create', type: 'submit' }, 'Create'))));
    }
    sections.push(el('section', {},
      el('table', {}, el('thead', {}, el('tr', {}, el('th', {}, 'Name'), el('th', {}, 'Id'), el('th', {}, 'Capture'), el('th', {}, 'Created'))), list), more));
    if (isOperator()) {
      const usage = el('tbody', { id: 'usage-by-org' });
      sections.push(el('section', {}, el('h2', {}, 'Usage by organization, last 30 days'),
        el('table', {}, el('thead', {}, el('tr', {}, el('th', {}, 'Organization'), el('th', {}, 'Requests'), el('th', {}, 'Tokens'))), usage)));
      api('GET', '/admin/v1/usage').then((r) => {
        for (const u of r.data) {
          usage.append(el('tr', {}, el('td', {}, el('a', { href: '#/orgs/' + u.organization_id }, u.name)),
            el('td', {}, u.requests), el('td', {}, u.total_tokens)));
        }
      }).catch((e) => showError(e.message));
    }
    main(...sections);
    await page();
  }

  // ---- one organization: keys and usage ----

  function notFound() {
    main(el('section', {}, el('h1', { id: 'notfound', class: 'notfound' }, 'Not found'),
      el('p', {}, 'There is no such organization, or you may not see it.')));
  }

  function secretBox(title, created) {
    const box = el('div', { id: 'secret', class: 'secret' },
      el('strong', {}, title), el('code', { id: 'secret-key' }, created.key),
      el('span', {}, 'This is the only time the key is shown: store it now.'), ' ',
      el('button', { type: 'button', class: 'secondary', id: 'secret-dismiss', on: { click: () => box.remove() } }, 'Done'));
    return box;
  }

  // armed is a button that acts on its second click: the first only arms
  // it ("Confirm …"), so that a stray click changes nothing.
  function armed(label, id, fn, cls = 'danger') {
    const b = el('button', { type: 'button', class: cls, dataset: { action: id } }, label);
    b.addEventListener('click', async () => {
      if (!b.classList.contains('armed')) { b.classList.add('armed'); b.textContent = 'Confirm ' + label.toLowerCase(); return; }
      b.disabled = true;
      try { await fn(); } catch (e) { showError(e.message); b.disabled = false; }
    });
    return b;
  }

  async function renderOrg(id) {
    let org;
    try { org = await api('GET', '/admin/v1/organizations/' + encodeURIComponent(id)); } catch (e) {
      if (e.status === 404) return notFound();
      throw e;
    }
    const keysBody = el('tbody', { id: 'keys' });
    const secretSlot = el('div', { id: 'secret-slot' });
    const keys = new Map();
    async function loadKeys() {
      const r = await api('GET', '/admin/v1/organizations/' + org.id + '/keys');
      keysBody.replaceChildren();
      keys.clear();
      for (const k of r.data) {
        keys.set(k.id, k);
        const state = k.revoked_at ? 'revoked' : (k.expires_at && new Date(k.expires_at) < new Date() ? 'expired' : (k.expires_at ? 'expires ' + new Date(k.expires_at).toLocaleString() : 'active'));
        const canWrite = session.principal.scope === 'write';
        const actions = el('td', {});
        if (canWrite && !k.revoked_at) {
          // Rotating ends the old key's life in an hour: as deliberate
          // as revoking it.
          actions.append(armed('Rotate', 'rotate', async () => {
            const c = await api('POST', '/admin/v1/keys/' + k.id + '/rotate', { overlap_seconds: 3600 });
            secretSlot.replaceChildren(secretBox('New key for ' + c.name + ' (the old one works for another hour):', c));
            await loadKeys();
          }, 'secondary'), ' ', armed('Revoke', 'revoke', async () => {
            await api('POST', '/admin/v1/keys/' + k.id + '/revoke');
            await loadKeys();
          }));
        }
        keysBody.append(el('tr', { dataset: { keyId: k.id, keyName: k.name, state } },
          el('td', {}, k.name), el('td', { class: 'muted' }, k.display_prefix + '…'), el('td', {}, k.rate_limit_per_minute),
          el('td', {}, k.tokens_per_minute || '—'), el('td', { class: 'state' }, state), actions));
      }
    }
    const sections = [el('section', {}, el('h1', { id: 'org-title' }, org.name),
      el('p', { class: 'muted' }, org.id, ' · capture ', org.capture_mode, ' · ',
        el('a', { href: '#/orgs/' + org.id + '/logs', id: 'logs-link' }, 'Request log'))),
    // The key form above the keys: they fill in after the page is shown,
    // and must not move the form's button (or put Rotate) under the
    // pointer.
    el('section', {}, el('h2', {}, 'API keys'), secretSlot)];
    if (session.principal.scope === 'write') {
      const name = el('input', { id: 'key-name', required: true, maxlength: 200, placeholder: 'production' });
      const rpm = el('input', { id: 'key-rpm', type: 'number', min: 1, value: 600, required: true });
      sections[1].append(el('form', { class: 'inline', on: { submit: async (ev) => {
        ev.preventDefault();
        try {
          const c = await api('POST', '/admin/v1/organizations/' + org.id + '/keys',
            { name: name.value, rate_limit_per_minute: Number(rpm.value) }, { 'Idempotency-Key': crypto.randomUUID() });
          secretSlot.replaceChildren(secretBox('New key ' + c.name + ':', c));
          name.value = '';
          await loadKeys();
        } catch (e) { showError(e.message); }
      } } }, el('label', {}, 'Name', name), el('label', {}, 'Requests per minute', rpm),
      el('button', { id: 'key-create', type: 'submit' }, 'Create key')));
    }
    sections[1].append(el('table', {}, el('thead', {}, el('tr', {}, el('th', {}, 'Name'), el('th', {}, 'Key'), el('th', {}, 'Requests/min'),
      el('th', {}, 'Tokens/min'), el('th', {}, 'State'), el('th', {}, ''))), keysBody));
    const plots = el('div', { class: 'plots', id: 'plots' });
    const range = el('select', { id: 'range' }, [1, 7, 30, 90].map((d) => el('option', { value: d, selected: d === 30 }, d === 1 ? 'Last day' : 'Last ' + d + ' days')));
    range.addEventListener('change', () => drawUsage(org.id, Number(range.value), plots, keys).catch((e) => showError(e.message)));
    sections.push(el('section', {}, el('h2', {}, 'Usage'), el('form', { class: 'inline' }, el('label', {}, 'Range', range)), plots));
    main(...sections);
    await loadKeys();
    await drawUsage(org.id, 30, plots, keys);
  }

  // ---- plots ----

  const palette = ['#2457c5', '#e07b39', '#3a9d5d', '#a23fb5', '#c9a227', '#d64550', '#1c9ca8', '#7a6a53'];
  const DAY = 86400;

  async function drawUsage(orgID, days, into, keys) {
    const until = new Date();
    const since = new Date(Math.floor(until.getTime() / 1000 / DAY) * DAY * 1000 - (days - 1) * DAY * 1000);
    const q = '?since=' + encodeURIComponent(since.toISOString()) + '&until=' + encodeURIComponent(until.toISOString());
    const base = '/admin/v1/organizations/' + orgID + '/usage/series' + q;
    const [byModel, byKey, byStatus] = await Promise.all([api('GET', base + '&by=model'), api('GET', base + '&by=key'), api('GET', base + '&by=status')]);
    const xs = [];
    for (let t = since.getTime() / 1000; t <= until.getTime() / 1000; t += DAY) xs.push(t);
    const dayIndex = new Map(xs.map((t, i) => [new Date(t * 1000).toISOString().slice(0, 10), i]));
    const keyName = (g) => (keys.get(g) ? keys.get(g).name : (g === 'jwt' ? 'JWT callers' : g.slice(0, 8)));
    into.replaceChildren(
      stacked('plot-requests', 'Requests per day, by model', xs, dayIndex, byModel.data, (r) => r.requests, (g) => g),
      stacked('plot-tokens', 'Tokens per day, by model', xs, dayIndex, byModel.data, (r) => r.total_tokens, (g) => g),
      stacked('plot-cost', 'Cost per day (USD), by model', xs, dayIndex, byModel.data, (r) => (r.cost_usd ? Number(r.cost_usd) : 0), (g) => g),
      stacked('plot-keys', 'Requests per day, by key', xs, dayIndex, byKey.data, (r) => r.requests, keyName),
      latency('plot-latency', 'Latency and errors per day', xs, dayIndex, byStatus.data));
  }

  function collect(xs, dayIndex, rows, value, label) {
    const groups = new Map();
    for (const r of rows) {
      const name = label(r.group);
      if (!groups.has(name)) groups.set(name, new Array(xs.length).fill(0));
      const i = dayIndex.get(r.day);
      if (i !== undefined) groups.get(name)[i] += value(r);
    }
    return groups;
  }

  function plotBox(id, title, summary) {
    const box = el('div', { class: 'plot', id });
    box.append(el('h3', {}, title));
    const holder = el('div', { class: 'plot-canvas' });
    box.append(holder, el('div', { class: 'summary', id: id + '-summary' }, summary));
    return [box, holder];
  }

  // stacked draws one bar per day, each group's share stacked on the
  // others'; uPlot draws series in order, so the tallest (the sum) first.
  function stacked(id, title, xs, dayIndex, rows, value, label) {
    const groups = collect(xs, dayIndex, rows, value, label);
    const names = [...groups.keys()];
    const totals = names.map((n) => groups.get(n).reduce((a, b) => a + b, 0));
    const summary = names.length === 0 ? 'No requests in this range.' :
      names.map((n, i) => n + ': ' + totals[i]).join(' · ');
    const [box, holder] = plotBox(id, title, summary);
    const cum = [];
    let acc = new Array(xs.length).fill(0);
    for (const n of names) { acc = acc.map((v, i) => v + groups.get(n)[i]); cum.push(acc); }
    const data = [xs];
    const series = [{}];
    for (let i = names.length - 1; i >= 0; i--) {
      data.push(cum[i]);
      const c = palette[i % palette.length];
      series.push({ label: names[i], stroke: c, fill: c + 'cc', width: 1, paths: uPlot.paths.bars({ size: [0.7, 40] }),
        value: ((raw) => (u, v, si, di) => (di == null ? '—' : String(raw[di])))(groups.get(names[i])) });
    }
    if (names.length === 0) { data.push(new Array(xs.length).fill(0)); series.push({ label: 'none', stroke: '#ccc' }); }
    draw(holder, series, data);
    return box;
  }

  function latency(id, title, xs, dayIndex, rows) {
    const p50 = new Array(xs.length).fill(null), p95 = new Array(xs.length).fill(null);
    const errors = new Array(xs.length).fill(0), reqs = new Array(xs.length).fill(0);
    const statuses = new Map();
    for (const r of rows) {
      const i = dayIndex.get(r.day);
      if (i === undefined) continue;
      // Every status row of a day carries the day's percentiles (of all its
      // requests, to the latency bucket: store.UsageSeries).
      p50[i] = Math.max(p50[i] || 0, r.latency_p50_ms);
      p95[i] = Math.max(p95[i] || 0, r.latency_p95_ms);
      errors[i] += r.errors;
      reqs[i] += r.requests;
      statuses.set(r.group, (statuses.get(r.group) || 0) + r.requests);
    }
    const summary = statuses.size === 0 ? 'No requests in this range.' :
      [...statuses.entries()].map(([s, n]) => 'status ' + s + ': ' + n).join(' · ');
    const [box, holder] = plotBox(id, title, summary);
    draw(holder, [{}, { label: 'p50 ms', stroke: palette[0], scale: 'ms' },
      { label: 'p95 ms', stroke: palette[1], scale: 'ms' },
      { label: 'errors', stroke: palette[5], fill: palette[5] + '55', scale: 'n', paths: uPlot.paths.bars({ size: [0.5, 30] }) }],
    [xs, p50, p95, errors], [{ scale: 'ms', label: 'ms' }, { scale: 'n', side: 1, grid: { show: false } }]);
    return box;
  }

  function draw(holder, series, data, axes) {
    const opts = { width: 540, height: 220, series, scales: { x: { time: true } },
      axes: [{}].concat(axes || [{}]), legend: { live: true } };
    // eslint-disable-next-line no-new
    new uPlot(opts, data, holder);
  }

  // ---- request log ----

  // promptText shows a stored prompt: chat messages (the JSON the gateway
  // records) as "role: content" lines, anything else as it is. Text only.
  function promptText(raw) {
    if (raw === null || raw === undefined) return '(not captured)';
    try {
      const m = JSON.parse(raw);
      if (Array.isArray(m)) {
        return m.map((x) => (x && x.role ? x.role + ': ' : '') +
          (x && typeof x.content === 'string' ? x.content : JSON.stringify(x && x.content !== undefined ? x.content : x))).join('\n\n');
      }
    } catch (_) { /* not JSON: shown as stored */ }
    return raw;
  }

  async function renderLogs(orgID) {
    let org;
    try { org = await api('GET', '/admin/v1/organizations/' + encodeURIComponent(orgID)); } catch (e) {
      if (e.status === 404) return notFound();
      throw e;
    }
    const f = {
      model: el('input', { id: 'f-model', placeholder: 'any' }),
      key: el('input', { id: 'f-key', placeholder: 'key id' }),
      status: el('input', { id: 'f-status', type: 'number', min: 100, max: 599, placeholder: 'any' }),
      since: el('input', { id: 'f-since', type: 'datetime-local' }),
      until: el('input', { id: 'f-until', type: 'datetime-local' }),
    };
    const rows = el('tbody', { id: 'logs' });
    const detail = el('div', { id: 'log-detail' });
    const more = el('button', { id: 'logs-more', type: 'button', class: 'secondary', hidden: true }, 'Older');
    let cursor = null;
    function query() {
      const p = new URLSearchParams();
      if (f.model.value) p.set('model', f.model.value);
      if (f.key.value) p.set('key', f.key.value.trim());
      if (f.status.value) p.set('status', f.status.value);
      if (f.since.value) p.set('since', new Date(f.since.value).toISOString());
      if (f.until.value) p.set('until', new Date(f.until.value).toISOString());
      p.set('limit', '20');
      if (cursor) p.set('cursor', cursor);
      return p.toString();
    }
    async function load(reset) {
      if (reset) { cursor = null; rows.replaceChildren(); detail.replaceChildren(); }
      const r = await api('GET', '/admin/v1/organizations/' + org.id + '/prompts?' + query());
      for (const p of r.data) {
        rows.append(el('tr', { class: 'clickable', dataset: { promptId: p.id }, on: { click: () => show(p) } },
          el('td', {}, new Date(p.created_at).toLocaleString()), el('td', {}, p.model), el('td', {}, p.endpoint),
          el('td', {}, p.status), el('td', {}, p.total_tokens), el('td', {}, p.latency_ms + ' ms'),
          el('td', { class: 'muted' }, promptText(p.prompt).slice(0, 60))));
      }
      cursor = r.next_cursor;
      more.hidden = !r.has_more;
      if (r.data.length === 0 && reset) rows.append(el('tr', {}, el('td', { colspan: 7, class: 'muted' }, 'No requests match.')));
    }
    function show(p) {
      // Text, never markup: a prompt that holds <script> or <img onerror>
      // is shown as those characters.
      detail.replaceChildren(el('h2', {}, 'Request ', p.request_id),
        el('p', { class: 'muted' }, p.model, ' · status ', p.status, ' · ', p.prompt_tokens, ' + ', p.completion_tokens, ' tokens (', p.usage_source, ')'),
        el('h3', {}, 'Prompt'), el('pre', { class: 'text', id: 'log-detail-prompt' }, promptText(p.prompt)),
        el('h3', {}, 'Response'), el('pre', { class: 'text', id: 'log-detail-response' }, p.response === null ? '(not captured)' : p.response));
    }
    more.addEventListener('click', () => load(false).catch((e) => showError(e.message)));
    const form = el('form', { class: 'inline', id: 'log-filter', on: { submit: (ev) => { ev.preventDefault(); load(true).catch((e) => showError(e.message)); } } },
      el('label', {}, 'Model', f.model), el('label', {}, 'Key', f.key), el('label', {}, 'Status', f.status),
      el('label', {}, 'Since', f.since), el('label', {}, 'Until', f.until), el('button', { type: 'submit', id: 'log-apply' }, 'Filter'));
    main(el('section', {}, el('h1', {}, 'Request log of ', el('a', { href: '#/orgs/' + org.id, id: 'log-org' }, org.name)), form,
      el('table', {}, el('thead', {}, el('tr', {}, ['Time', 'Model', 'Endpoint', 'Status', 'Tokens', 'Latency', 'Prompt'].map((h) => el('th', {}, h)))), rows), more),
    el('section', {}, detail));
    await load(true);
  }

  // ---- routing ----

  async function route() {
    showError('');
    if (!session) return renderLogin();
    const parts = location.hash.replace(/^#\/?/, '').split('/').filter(Boolean);
    try {
      if (parts[0] === 'orgs' && parts.length === 1) return await renderOrgs();
      if (parts[0] === 'orgs' && parts.length === 2) return await renderOrg(parts[1]);
      if (parts[0] === 'orgs' && parts.length === 3 && parts[2] === 'logs') return await renderLogs(parts[1]);
      location.hash = homeHash();
    } catch (e) {
      if (e.status !== 401) showError(e.message);
    }
  }

  $('logout').addEventListener('click', async () => {
    try { await api('DELETE', '/admin/v1/session'); } catch (_) { /* ending anyway */ }
    endSession('Logged out.');
  });
  window.addEventListener('hashchange', route);

  const saved = store.getItem('bh_session');
  if (saved) {
    try {
      const s = JSON.parse(saved);
      if (new Date(s.expires_at) > new Date()) startSession(s);
      else store.removeItem('bh_session');
    } catch (_) { store.removeItem('bh_session'); }
  }
  renderHeader();
  route();
}());
