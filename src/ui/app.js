// The agent's status page: the fleet, a server's rollouts and health, runs per commit and
// the event log, kept live by the agent's own SSE stream. Everything it shows comes from
// the agent's API on this origin; nothing is loaded from anywhere else.
'use strict';

const KEY = 'mcp-orchestration-key';
const state = {
  key: sessionStorage.getItem(KEY),
  // Per server: [time, calls, errors] samples of the gateway's counters, for the rates.
  samples: new Map(),
  lastEventId: null,
  refresh: null,
  render: null,
  // The newest events, for the event log view (live ones are prepended).
  events: [],
  // Rollout cards the operator opened (the newest is open by default).
  opened: new Set(),
};

class Problem extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// ---- the API ----

function headers(extra) {
  const h = Object.assign({ accept: 'application/json' }, extra || {});
  if (state.key) h.authorization = 'Bearer ' + state.key;
  return h;
}

async function api(path, options) {
  const opts = options || {};
  const r = await fetch(path, { method: opts.method || 'GET', headers: headers(opts.headers), body: opts.body });
  const text = await r.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = null; }
  if (r.status === 401) {
    askKey(state.key ? 'The agent did not accept this key.' : null);
    throw new Problem(401, 'UNAUTHORIZED', (body && body.error && body.error.message) || 'an API key is needed');
  }
  if (!r.ok) {
    const e = body && body.error;
    throw new Problem(r.status, e ? e.code : String(r.status), e ? e.message : text || r.statusText);
  }
  return body;
}

// ---- small DOM helpers (text only: nothing the agent says is parsed as HTML) ----

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const SVG = 'http://www.w3.org/2000/svg';
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  for (const c of children.flat()) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

function ago(ts) {
  if (!ts) return '—';
  const secs = Math.max(0, (Date.now() - Date.parse(ts)) / 1000);
  if (secs < 60) return Math.round(secs) + ' s ago';
  if (secs < 3600) return Math.round(secs / 60) + ' min ago';
  if (secs < 86400) return Math.round(secs / 3600) + ' h ago';
  return Math.round(secs / 86400) + ' d ago';
}

function when(ts) {
  return ts ? h('time', { datetime: ts, title: new Date(ts).toLocaleString() }, ago(ts)) : '—';
}

function duration(from, to) {
  if (!from || !to) return '';
  const ms = Date.parse(to) - Date.parse(from);
  return ms < 1000 ? ms + ' ms' : (ms / 1000).toFixed(1) + ' s';
}

// Colour and word, and a shape per state, so colour is never the only signal.
function health(word) {
  const w = word || 'none';
  return h('span', { class: 'health ' + w, 'data-health': w }, word || 'not monitored');
}

function short(commit) {
  return commit ? commit.slice(0, 10) : '—';
}

function failure(e) {
  return h('div', { class: 'error-box', role: 'alert' }, e instanceof Problem ? `${e.code}: ${e.message}` : String(e));
}

// ---- the API key ----

function askKey(why) {
  const dialog = document.getElementById('key-dialog');
  if (dialog.open) return;
  if (why) document.getElementById('key-why').textContent = why;
  document.getElementById('key-input').value = '';
  dialog.showModal();
}

function setupKey() {
  const form = document.getElementById('key-form');
  form.addEventListener('submit', () => {
    const key = document.getElementById('key-input').value.trim();
    if (!key) return;
    state.key = key;
    sessionStorage.setItem(KEY, key);
    restartStream();
    route();
  });
  document.getElementById('key-cancel').addEventListener('click', () => document.getElementById('key-dialog').close());
  document.getElementById('key-button').addEventListener('click', () => askKey(null));
}

// ---- live updates: the agent's SSE stream, read with fetch so the key goes in a header ----

let streamAbort = null;

function setLive(on, text) {
  const el = document.getElementById('live');
  el.className = 'live ' + (on ? 'on' : 'off');
  el.textContent = text;
}

function restartStream() {
  if (streamAbort) streamAbort.abort();
  stream();
}

async function stream() {
  const abort = new AbortController();
  streamAbort = abort;
  let wait = 500;
  while (!abort.signal.aborted) {
    try {
      const path = state.lastEventId === null ? '/events' : '/events?after=' + state.lastEventId;
      const r = await fetch(path, { headers: headers({ accept: 'text/event-stream' }), signal: abort.signal });
      if (r.status === 401) { setLive(false, 'needs a key'); askKey(null); return; }
      if (!r.ok || !r.body) throw new Error('HTTP ' + r.status);
      setLive(true, 'live');
      wait = 500;
      const reader = r.body.getReader();
      const decoder = new TextDecoder();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, '\n');
        let cut;
        while ((cut = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const data = block.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).replace(/^ /, '')).join('\n');
          const id = block.split('\n').find((l) => l.startsWith('id:'));
          if (id) state.lastEventId = Number(id.slice(3).trim());
          if (data) {
            try { onEvent(JSON.parse(data)); } catch (_) { /* a keep-alive or a foreign line */ }
          }
        }
      }
    } catch (e) {
      if (abort.signal.aborted) return;
    }
    setLive(false, 'reconnecting…');
    await new Promise((done) => setTimeout(done, wait));
    wait = Math.min(wait * 2, 8000);
  }
}

function onEvent(event) {
  state.events.unshift(event);
  state.events.length = Math.min(state.events.length, 500);
  scheduleRefresh();
}

// Many events come in bursts (a rollout's steps): one refresh for a burst.
function scheduleRefresh() {
  if (state.refresh) return;
  state.refresh = setTimeout(() => {
    state.refresh = null;
    if (state.render) state.render(false);
  }, 150);
}

// ---- views ----

function show(...content) {
  const main = document.getElementById('main');
  main.replaceChildren(...content.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
}

function nav(which) {
  for (const a of document.querySelectorAll('nav a')) {
    if (a.dataset.nav === which) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

function rates(server) {
  const c = server.gateway_calls;
  if (!c) return null;
  const now = Date.now();
  const list = state.samples.get(server.id) || [];
  list.push([now, c.calls, c.errors]);
  while (list.length > 2 && now - list[1][0] >= 60000) list.shift();
  state.samples.set(server.id, list);
  const [t0, calls0, errors0] = list[0];
  const minutes = (now - t0) / 60000;
  if (minutes < 1 / 60) return { calls: null, errors: null, total: c };
  return { calls: (c.calls - calls0) / minutes, errors: (c.errors - errors0) / minutes, total: c };
}

function rateCell(server) {
  const r = rates(server);
  if (!r) return '—';
  if (r.calls === null) return h('span', { class: 'muted', title: `${r.total.calls} calls since the agent started` }, '…');
  const text = `${r.calls.toFixed(1)}/min`;
  return h('span', { title: `${r.total.calls} calls, ${r.total.errors} errors since the agent started` },
    text, r.errors > 0 ? h('span', { class: 'tag bad' }, `${r.errors.toFixed(1)} err/min`) : null);
}

function notes(server) {
  const out = [];
  if (server.update_available) out.push(h('span', { class: 'tag warn' }, `update ${server.update_available} available`));
  if (server.pinned_version) out.push(h('span', { class: 'tag warn' }, `held at ${server.pinned_version}`));
  if (server.blocked_by && server.blocked_by.length) out.push(h('span', { class: 'tag warn' }, `waits for ${server.blocked_by.join(', ')}`));
  if (server.state === 'stopped') out.push(h('span', { class: 'tag warn' }, 'stopped by an operator'));
  if (server.state === 'failed') out.push(h('span', { class: 'tag bad' }, 'failed'));
  if (server.state === 'pending') out.push(h('span', { class: 'tag' }, 'pending'));
  return out.length ? out : '—';
}

function versions(server) {
  const running = server.running_version || '—';
  if (server.running_version === server.desired_version) return h('span', { class: 'mono' }, running);
  return h('span', { class: 'mono', title: 'running → desired' }, `${running} → ${server.desired_version}`);
}

// A view's data: `title` says Loading on a first render; a failure is shown under it
// (and gives null).
async function load(title, first, path) {
  if (first) show(h('h1', {}, title), h('p', { class: 'muted' }, 'Loading…'));
  try {
    return await api(path);
  } catch (e) {
    show(h('h1', {}, title), failure(e));
    return null;
  }
}

async function fleetView(first) {
  nav('fleet');
  const fleet = await load('Fleet', first, '/servers');
  if (!fleet) return;
  const counts = {};
  for (const srv of fleet.servers) counts[srv.health || 'none'] = (counts[srv.health || 'none'] || 0) + 1;
  const problems = [
    fleet.source_error && h('div', { class: 'error-box' }, 'Repository: ' + fleet.source_error),
    fleet.runtime_error && h('div', { class: 'error-box' }, 'Runtime: ' + fleet.runtime_error),
    fleet.store_error && h('div', { class: 'error-box' }, 'State database: ' + fleet.store_error),
  ];
  const rows = fleet.servers.map((srv) => h('tr', { 'data-server': srv.id },
    h('td', { 'data-label': 'Server' }, h('a', { href: '#/servers/' + encodeURIComponent(srv.id) }, srv.id),
      srv.name ? h('div', { class: 'muted' }, srv.name) : null),
    h('td', { 'data-label': 'Health' }, health(srv.health)),
    h('td', { 'data-label': 'Version' }, versions(srv)),
    h('td', { 'data-label': 'Endpoint' }, srv.endpoint ? h('span', { class: 'mono' }, srv.endpoint) : '—'),
    h('td', { 'data-label': 'Since' }, when(srv.health_since || srv.since)),
    h('td', { 'data-label': 'Notes' }, notes(srv)),
    h('td', { 'data-label': 'Tools', class: 'num' }, srv.gateway_tools === undefined || srv.gateway_tools === null ? '—' : srv.gateway_tools),
    h('td', { 'data-label': 'Calls', class: 'num' }, rateCell(srv)),
  ));
  show(
    h('h1', {}, 'Fleet'),
    h('p', { class: 'muted', id: 'fleet-summary' },
      `${fleet.servers.length} servers · `,
      Object.entries(counts).map(([k, v]) => `${v} ${k === 'none' ? 'not monitored' : k}`).join(', '),
      ' · commit ', h('span', { class: 'mono' }, short(fleet.applied_revision)),
      ' · synced ', when(fleet.last_sync)),
    problems,
    h('table', { class: 'fleet' },
      h('thead', {}, h('tr', {}, ['Server', 'Health', 'Version', 'Endpoint', 'Since', 'Notes', 'Tools', 'Calls'].map((t) => h('th', {}, t)))),
      h('tbody', {}, rows)),
  );
  // For the render benchmark (tests/it/status_page.rs): when each fleet render finished.
  performance.mark('fleet-rendered');
}

// ---- a server ----

const ACTIONS = [
  { id: 'rollback', label: 'Roll back', text: 'Roll back to the previous good version (or the one you name) and hold it there; automatic updates pause until resumed.', method: 'POST', path: (id) => `/servers/${id}/rollback`, version: true },
  { id: 'resume', label: 'Resume', text: 'Lift the rollback hold: automatic updates take over again.', method: 'POST', path: (id) => `/servers/${id}/rollout/resume` },
  { id: 'restart', label: 'Restart', text: 'Start a new instance of the running version beside the old one, then switch.', method: 'POST', path: (id) => `/servers/${id}/restart` },
  { id: 'stop', label: 'Stop', text: 'Stop the server and keep it stopped until it is deployed again.', method: 'DELETE', path: (id) => `/servers/${id}` },
  { id: 'deploy', label: 'Deploy', text: 'Lift a stop, retry a failed version, and converge now.', method: 'POST', path: (id) => `/servers/${id}/deploy` },
];

function confirmAction(action, server) {
  return new Promise((resolve) => {
    const dialog = document.getElementById('confirm-dialog');
    document.getElementById('confirm-title').textContent = `${action.label} ${server}?`;
    document.getElementById('confirm-text').textContent = action.text;
    const label = document.getElementById('confirm-version-label');
    const input = document.getElementById('confirm-version');
    label.hidden = !action.version;
    input.value = '';
    dialog.returnValue = '';
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok' ? { version: input.value.trim() } : null), { once: true });
    dialog.showModal();
  });
}

function outcomeText(action, answer) {
  if (!answer) return 'done';
  if (action.id === 'rollback') return `rolling back to ${answer.rollback_to}; automatic updates ${answer.auto_update}`;
  if (action.id === 'resume') return answer.resumed ? 'automatic updates resumed' : 'no rollback held this server';
  if (action.id === 'stop') return `stopped (${answer.stopped_instances} instance(s)); held until deployed`;
  if (action.id === 'restart') return 'restart requested';
  if (action.id === 'deploy') return 'deploy requested';
  return 'done';
}

async function act(action, id, out) {
  const chosen = await confirmAction(action, id);
  if (!chosen) return;
  out.replaceChildren(h('span', { class: 'muted' }, `${action.label}…`));
  const body = action.version && chosen.version ? JSON.stringify({ to: chosen.version }) : undefined;
  try {
    const answer = await api(action.path(encodeURIComponent(id)), {
      method: action.method,
      body,
      headers: body ? { 'content-type': 'application/json' } : {},
    });
    out.replaceChildren(h('div', { class: 'note', role: 'status', 'data-outcome': 'ok' }, `${action.label}: ${outcomeText(action, answer)}`));
  } catch (e) {
    out.replaceChildren(h('div', { class: 'error-box', role: 'alert', 'data-outcome': 'error' }, `${action.label} failed: ${e.code}: ${e.message}`));
  }
  scheduleRefresh();
}

// Health-gate probes of a rollout: one bar per probe, its height the latency, its colour
// (and a mark under failed ones) the verdict.
function probeChart(probes) {
  if (!probes.length) return null;
  const width = 600, height = 90, pad = 18;
  const max = Math.max(...probes.map((p) => p.latency_ms), 1);
  const step = (width - pad) / probes.length;
  const bars = probes.map((p, i) => {
    const bh = Math.max(2, (p.latency_ms / max) * (height - pad - 6));
    const ok = p.outcome === 'healthy';
    const color = ok ? 'var(--healthy)' : p.outcome === 'degraded' ? 'var(--degraded)' : 'var(--unhealthy)';
    return s('g', {},
      s('rect', { x: pad + i * step + 1, y: height - pad - bh, width: Math.max(1, step - 2), height: bh, fill: color },
        s('title', {}, `${p.outcome}, ${p.latency_ms.toFixed(1)} ms: ${p.detail}`)),
      ok ? null : s('text', { x: pad + i * step + step / 2 - 3, y: height - 4 }, '×'));
  });
  return s('svg', { class: 'chart', viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': `${probes.length} health-gate probes, up to ${max.toFixed(0)} ms` },
    s('text', { x: 0, y: 10 }, `${max.toFixed(0)} ms`), bars);
}

function toolDiff(diff) {
  if (!diff) return null;
  const parts = [];
  for (const t of diff.added) parts.push(h('span', { class: 'tag good' }, '+ ' + t));
  for (const t of diff.removed) parts.push(h('span', { class: 'tag bad' }, '− ' + t));
  for (const c of diff.changed) parts.push(h('span', { class: 'tag ' + (c.breaking ? 'bad' : 'warn'), title: c.why.join('; ') }, '~ ' + c.name));
  return parts.length ? h('p', {}, 'Tools: ', parts) : null;
}

async function rolloutDetail(rollout, into) {
  try {
    const d = await api('/rollouts/' + rollout.id);
    into.replaceChildren(
      h('ol', { class: 'timeline' }, d.steps.map((st) => h('li', { class: st.step },
        h('strong', {}, st.step), ' ', h('span', { class: 'muted' }, duration(rollout.started_at, st.at)),
        st.detail ? h('div', { class: 'muted' }, st.detail) : null))),
      probeChart(d.probes),
      toolDiff(d.tool_diff),
    );
  } catch (e) {
    into.replaceChildren(failure(e));
  }
}

function rolloutCard(r, open) {
  const body = h('div', {}, h('span', { class: 'muted' }, 'Loading…'));
  const outcomeClass = { succeeded: 'good', failed: 'bad', rolled_back: 'bad', interrupted: 'warn' }[r.outcome] || '';
  const details = h('details', { class: 'rollout', 'data-rollout': r.id, open: open || null,
    ontoggle: (ev) => {
      if (ev.target.open) { state.opened.add(r.id); rolloutDetail(r, body); } else state.opened.delete(r.id);
    } },
  h('summary', {},
    h('strong', {}, `#${r.id} ${r.action}`), ' ',
    h('span', { class: 'mono' }, `${r.from_version || '∅'} → ${r.to_version || '∅'}`), ' ',
    h('span', { class: 'tag ' + outcomeClass }, r.outcome.replace('_', ' ')), ' ',
    h('span', { class: 'muted' }, r.trigger, ' · ', when(r.started_at), r.finished_at ? ' · took ' + duration(r.started_at, r.finished_at) : '')),
  r.reason ? h('div', { class: 'error-box' }, r.reason) : null,
  r.rolled_back_to ? h('p', {}, `Rolled back to ${r.rolled_back_to}.`) : null,
  body);
  if (open) rolloutDetail(r, body);
  return details;
}

const BAND = { healthy: 'var(--healthy)', degraded: 'var(--degraded)', unhealthy: 'var(--unhealthy)', failed: 'var(--unhealthy)', starting: 'var(--starting)', unknown: 'var(--unknown)' };

// The last hour (or the server's life, when shorter) as bands of health state from the
// transitions, and the slowest probe of each 5 s window, failed ones marked.
function healthChart(events, current, history) {
  const width = 600, height = 70, now = Date.now(), hour = now - 3600 * 1000;
  const transitions = events.filter((e) => e.kind === 'transition' && e.to_state).map((e) => [Date.parse(e.at), e.to_state]).sort((a, b) => a[0] - b[0]);
  const earliest = Math.min(
    transitions.length ? transitions[0][0] : Infinity,
    history.samples.length ? Date.parse(history.samples[0].at) : Infinity);
  const first = Number.isFinite(earliest) ? earliest : now - 60 * 1000;
  const from = Math.min(Math.max(hour, first), now - 10 * 1000);
  const x = (t) => ((Math.max(t, from) - from) / (now - from)) * width;
  // Before its first transition of the hour, the state it was in then (nothing to draw
  // when the server is newer than that).
  let before = null;
  const inside = [];
  for (const [t, st] of transitions) {
    if (t < from) before = st; else inside.push([t, st]);
  }
  const bands = [];
  let start = before ? from : (inside.length ? inside[0][0] : now), st = before;
  for (const [t, next] of inside) { if (st) bands.push([start, t, st]); start = t; st = next; }
  bands.push([start, now, current || st || 'unknown']);
  const samples = history.samples.map((p) => [Date.parse(p.at), p.latency_ms, p.failures]).filter((p) => p[0] >= from);
  const max = Math.max(1, ...samples.map((p) => p[1]));
  const y = (ms) => (40 - (ms / max) * 36).toFixed(1);
  const line = samples.map((p) => `${x(p[0]).toFixed(1)},${y(p[1])}`).join(' ');
  const failed = samples.filter((p) => p[2] > 0).map((p) => s('circle', { cx: x(p[0]).toFixed(1), cy: y(p[1]), r: 2.5, fill: 'var(--unhealthy)' },
    s('title', {}, `${p[2]} failed probe(s) from ${new Date(p[0]).toLocaleTimeString()}`)));
  return s('svg', { class: 'chart', viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': 'health over the last hour' },
    bands.map(([a, b, word]) => s('rect', { x: x(a), y: 46, width: Math.max(1, x(b) - x(a)), height: 12, fill: BAND[word] || 'var(--unknown)' }, s('title', {}, `${word} from ${new Date(a).toLocaleTimeString()}`))),
    line ? s('polyline', { points: line, fill: 'none', stroke: 'var(--accent)', 'stroke-width': 1.5 }) : null,
    failed,
    s('text', { x: 0, y: 68 }, from === hour ? '1 h ago' : ago(new Date(from).toISOString())), s('text', { x: width - 22, y: 68 }, 'now'),
    s('text', { x: 0, y: 10 }, line ? `slowest probe per ${history.sample_seconds} s, up to ${max.toFixed(0)} ms` : 'no probes yet'));
}

async function serverView(id, first) {
  nav('fleet');
  if (first) show(h('h1', {}, id), h('p', { class: 'muted' }, 'Loading…'));
  let srv, rollouts, events, history;
  try {
    [srv, rollouts, events, history] = await Promise.all([
      api('/servers/' + encodeURIComponent(id)),
      api(`/servers/${encodeURIComponent(id)}/rollouts?limit=20`),
      api(`/servers/${encodeURIComponent(id)}/health/events?limit=200`),
      api(`/servers/${encodeURIComponent(id)}/health/history`),
    ]);
  } catch (e) {
    show(h('p', {}, h('a', { href: '#/' }, '← Fleet')), h('h1', {}, id), failure(e));
    return;
  }
  const keep = document.querySelector('.outcome');
  const out = keep && keep.dataset.server === id ? keep : h('div', { class: 'outcome', 'data-server': id });
  const recovery = events.events.filter((e) => e.kind === 'recovery');
  show(
    h('p', {}, h('a', { href: '#/' }, '← Fleet')),
    h('h1', {}, srv.id, ' ', health(srv.health)),
    h('dl', { class: 'facts' },
      h('dt', {}, 'Version'), h('dd', {}, versions(srv)),
      h('dt', {}, 'State'), h('dd', {}, srv.state, srv.reason ? h('div', { class: 'muted' }, srv.reason) : null),
      h('dt', {}, 'Health'), h('dd', {}, srv.health || 'not monitored', srv.health_reason ? h('div', { class: 'muted' }, srv.health_reason) : null),
      h('dt', {}, 'Since'), h('dd', {}, when(srv.health_since || srv.since)),
      h('dt', {}, 'Endpoint'), h('dd', { class: 'mono' }, srv.endpoint || '—'),
      h('dt', {}, 'Notes'), h('dd', {}, notes(srv)),
      h('dt', {}, 'Tools'), h('dd', {}, srv.gateway_tools === undefined || srv.gateway_tools === null ? '—' : String(srv.gateway_tools)),
      srv.tasks && srv.tasks.length ? [h('dt', {}, 'Tasks'), h('dd', {}, srv.tasks.map((t) => h('div', { class: 'mono' },
        `${t.node.slice(0, 12)} ${t.endpoint || '-'} ${t.state} `, t.health ? health(t.health) : null)))] : null),
    h('div', { class: 'actions' }, ACTIONS.map((a) => h('button', { type: 'button', 'data-action': a.id, class: a.id === 'stop' || a.id === 'rollback' ? 'danger' : 'quiet', onclick: () => act(a, id, out) }, a.label))),
    out,
    h('h2', {}, 'Health', h('span', { class: 'muted' }, ' · the last hour')),
    healthChart(events.events, srv.health, history),
    recovery.length ? h('ul', {}, recovery.slice(0, 10).map((e) => h('li', {}, when(e.at), ' ', e.detail || ''))) : h('p', { class: 'muted' }, 'No recovery attempts.'),
    h('h2', {}, 'Rollouts'),
    rollouts.rollouts.length ? rollouts.rollouts.map((r, i) => rolloutCard(r, i === 0 || state.opened.has(r.id))) : h('p', { class: 'muted' }, 'No rollouts yet.'),
  );
}

// ---- runs per commit ----

function pipeline(run) {
  return h('div', { class: 'pipeline' }, run.stages.map((st) => h('span', { class: 'stage ' + st.status, title: st.detail || '' },
    `${st.stage} ${st.status === 'skipped' ? '–' : duration(st.started_at, st.finished_at)}`)));
}

// What the run's plan stage decided (`deploy alpha, update beta`), when it got that far,
// and each change it made (the plan the run kept).
function planned(run) {
  const plan = run.stages.find((st) => st.stage === 'plan' && st.status === 'succeeded');
  if (!plan || !plan.detail) return null;
  const lines = (run.plan || []).filter((l) => l.changes).map((l) => h('li', { class: 'mono' },
    `${l.action} ${l.server_id}: ${l.from_version || '–'} → ${l.to_version || '–'}`
      + (l.changed_fields && l.changed_fields.length ? ` (${l.changed_fields.join(', ')})` : '')));
  return h('div', {}, h('div', { class: 'plan' }, h('span', { class: 'muted' }, 'plan: '), plan.detail),
    lines.length ? h('ul', { class: 'plan-lines' }, lines) : null);
}

async function runsView(first) {
  nav('runs');
  const page = await load('Runs', first, '/revisions?limit=50');
  if (!page) return;
  show(
    h('h1', {}, 'Runs'),
    h('p', { class: 'muted' }, 'Each commit the agent saw, its stages and their timings.'),
    page.revisions.length ? h('table', {},
      h('thead', {}, h('tr', {}, ['Commit', 'Result', 'Stages', 'Seen'].map((t) => h('th', {}, t)))),
      h('tbody', {}, page.revisions.map((run) => h('tr', { 'data-run': run.id },
        h('td', {}, h('span', { class: 'mono' }, short(run.commit_id)), run.message ? h('div', {}, run.message.split('\n')[0]) : null,
          run.author ? h('div', { class: 'muted' }, run.author) : null),
        h('td', {}, h('span', { class: 'tag ' + ({ applied: 'good', rejected: 'bad', failed: 'bad' }[run.result] || '') }, run.result),
          run.reason ? h('div', { class: 'muted' }, run.reason) : null),
        h('td', {}, pipeline(run), planned(run), run.errors.length ? h('ul', { class: 'errors' }, run.errors.map((d) =>
          h('li', { class: 'mono' }, `${d.file}:${d.line}:${d.column}: ${d.path ? d.path + ': ' : ''}${d.message}`))) : null),
        h('td', {}, when(run.seen_at), h('div', { class: 'muted' }, run.trigger)),
      )))) : h('p', { class: 'muted' }, 'No runs yet.'),
  );
}

// ---- the event log ----

async function eventsView(first) {
  nav('events');
  const params = new URLSearchParams(location.hash.split('?')[1] || '');
  const server = params.get('server') || '';
  const kind = params.get('kind') || '';
  if (first) {
    show(h('h1', {}, 'Events'), h('p', { class: 'muted' }, 'Loading…'));
    const q = new URLSearchParams({ limit: '200' });
    if (server) q.set('server', server);
    if (kind) q.set('kind', kind);
    try {
      const page = await api('/events/history?' + q);
      state.events = page.events.slice().sort((a, b) => b.id - a.id);
    } catch (e) {
      show(h('h1', {}, 'Events'), failure(e));
      return;
    }
  }
  const filter = (e) => (!server || e.server_id === server) && (!kind || e.kind.startsWith(kind));
  const apply = () => {
    const q = new URLSearchParams();
    const sv = document.getElementById('filter-server').value.trim();
    const kv = document.getElementById('filter-kind').value;
    if (sv) q.set('server', sv);
    if (kv) q.set('kind', kv);
    location.hash = '#/events' + (q.toString() ? '?' + q : '');
  };
  const kinds = ['', 'run', 'rollout', 'health', 'health.transition', 'health.recovery', 'hold'];
  const seen = new Set();
  const shown = state.events.filter((e) => filter(e) && !seen.has(e.id) && seen.add(e.id));
  show(
    h('h1', {}, 'Events'),
    h('div', { class: 'filters' },
      h('label', {}, 'Server ', h('input', { id: 'filter-server', value: server, placeholder: 'any', onchange: apply })),
      h('label', {}, 'Kind ', h('select', { id: 'filter-kind', onchange: apply }, kinds.map((k) => h('option', { value: k, selected: k === kind || null }, k || 'any'))))),
    h('table', {},
      h('thead', {}, h('tr', {}, ['When', 'Kind', 'Server', 'What'].map((t) => h('th', {}, t)))),
      h('tbody', { id: 'event-rows' }, shown.map((e) => h('tr', { 'data-event': e.id, 'data-kind': e.kind },
        h('td', {}, when(e.at)), h('td', { class: 'mono' }, e.kind),
        h('td', {}, e.server_id ? h('a', { href: '#/servers/' + encodeURIComponent(e.server_id) }, e.server_id) : '—'),
        h('td', {}, e.summary))))),
  );
}

// ---- routing ----

function route() {
  const hash = location.hash || '#/';
  const path = hash.slice(1).split('?')[0];
  let render;
  const server = path.match(/^\/servers\/(.+)$/);
  if (server) {
    const id = decodeURIComponent(server[1]);
    render = (first) => serverView(id, first);
  } else if (path === '/runs') {
    render = runsView;
  } else if (path === '/events') {
    render = eventsView;
  } else {
    render = fleetView;
  }
  state.render = render;
  render(true);
}

window.addEventListener('hashchange', route);
setupKey();
route();
stream();
// Relative times and rates move on even when nothing happens.
setInterval(() => { if (state.render && !document.querySelector('dialog[open]')) state.render(false); }, 10000);
