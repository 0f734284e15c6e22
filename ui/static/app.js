// discoverd's web page: the registry's services, instances, leaders and
// events, following the server's Server-Sent Event streams. Plain JavaScript
// with no dependencies: the page is embedded in the binary and must work on
// machines with no internet.
'use strict';

const TOKEN_KEY = 'discoverd.token';
const PAGE_SIZE = 100;        // instance rows shown at once
const SERVICE_ROWS = 500;     // service rows shown at once
const FEED_SIZE = 50;         // events kept in a service's feed
const BIG = 5000;             // above this many rows, render at most every BIG_RENDER_MS
const BIG_RENDER_MS = 400;
const CLUSTER_REFRESH_MS = 5000;
const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 5000;
const openedAt = Date.now();

// ---------------------------------------------------------------- helpers

const $ = (id) => document.getElementById(id);
const fmt = new Intl.NumberFormat('en');

// el builds an element; children are nodes or strings (always text, never
// HTML: instance ids and meta come from whoever registered them).
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v == null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else e.setAttribute(k, v === true ? '' : v);
    }
  }
  for (const c of children) {
    if (c == null) continue;
    e.append(typeof c === 'string' ? document.createTextNode(c) : c);
  }
  return e;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function plural(n, one, many) { return fmt.format(n) + ' ' + (n === 1 ? one : many); }

function ago(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return s + 's';
  const m = Math.floor(s / 60);
  if (m < 60) return m + 'm ' + (s % 60) + 's';
  const h = Math.floor(m / 60);
  if (h < 48) return h + 'h ' + (m % 60) + 'm';
  return Math.floor(h / 24) + 'd ' + (h % 24) + 'h';
}

function clock(t) {
  return new Date(t).toLocaleTimeString('en-GB', { hour12: false });
}

// ------------------------------------------------------- requests and auth

// Every request goes through authHeaders, so that once the server asks for a
// token, the one typed into the token field (kept in sessionStorage, so it
// lasts as long as the tab) goes with each of them.
function authHeaders(h) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) h.Authorization = 'Bearer ' + token;
  return h;
}

class HTTPError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function errorOf(resp) {
  let msg = resp.status + ' ' + resp.statusText;
  try {
    const body = await resp.json();
    if (body && body.message) msg = body.message;
  } catch (_) { /* not JSON */ }
  if (resp.status === 401 || resp.status === 403) askToken(resp.status, msg);
  return new HTTPError(resp.status, msg);
}

async function getJSON(path) {
  const resp = await fetch(path, { headers: authHeaders({ Accept: 'application/json' }), cache: 'no-store' });
  if (!resp.ok) throw await errorOf(resp);
  return resp.json();
}

function askToken(status, msg) {
  const note = status === 401
    ? 'This server asks for a token: ' + msg
    : 'The token may not do this: ' + msg;
  if ($('token-note').textContent === note) return;
  $('token-note').textContent = note;
  // Once per new request for a token: retries must not steal the focus.
  $('token').focus();
}

// ------------------------------------------------------------ SSE streams

// EventStream reads a Server-Sent Event stream with fetch rather than
// EventSource, which cannot send an Authorization header. After a drop it
// reconnects, with Last-Event-ID when the reader set resumeId, and reports
// its state ('connecting', 'live', 'reconnecting', 'error') to onState.
// Events are handed to onEvent as they are parsed; onChunk runs after each
// chunk read from the network, so the reader can render in batches.
class EventStream {
  constructor(path, handlers) {
    this.path = path;
    this.h = handlers;
    this.resumeId = null;
    this.stopped = false;
    this.ctrl = null;
  }

  start() { this.run(); return this; }

  stop() {
    this.stopped = true;
    if (this.ctrl) this.ctrl.abort();
  }

  restart() {
    if (this.ctrl) this.ctrl.abort();
  }

  async run() {
    let delay = RETRY_MIN_MS;
    let state;
    this.h.onState('connecting', '');
    while (!this.stopped) {
      this.ctrl = new AbortController();
      const headers = authHeaders({ Accept: 'text/event-stream' });
      const resuming = this.resumeId != null;
      if (resuming) headers['Last-Event-ID'] = String(this.resumeId);
      try {
        const resp = await fetch(this.path, { headers, signal: this.ctrl.signal, cache: 'no-store' });
        if (!resp.ok) throw await errorOf(resp);
        this.h.onOpen(resuming);
        this.h.onState('live', '');
        delay = RETRY_MIN_MS;
        await this.read(resp.body);
        state = 'reconnecting';
      } catch (e) {
        if (this.stopped) return;
        if (e instanceof HTTPError) {
          state = 'error';
          this.h.onState('error', e.message, e.status);
        } else {
          state = 'reconnecting';
        }
      }
      if (this.stopped) return;
      if (state === 'reconnecting') this.h.onState('reconnecting', '');
      await sleep(delay);
      delay = Math.min(delay * 2, RETRY_MAX_MS);
    }
  }

  async read(body) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done || this.stopped) return;
      buf += decoder.decode(value, { stream: true });
      let start = 0;
      let end;
      while ((end = buf.indexOf('\n\n', start)) >= 0) {
        this.dispatch(buf.slice(start, end));
        start = end + 2;
      }
      buf = buf.slice(start);
      this.h.onChunk();
    }
  }

  dispatch(block) {
    let id = null;
    let event = 'message';
    let data = '';
    for (const line of block.split('\n')) {
      if (line === '' || line[0] === ':') continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value[0] === ' ') value = value.slice(1);
      if (field === 'id') id = value;
      else if (field === 'event') event = value;
      else if (field === 'data') data = data ? data + '\n' + value : value;
    }
    if (!data) return;
    let obj;
    try { obj = JSON.parse(data); } catch (_) { return; }
    if (event === 'error') {
      // The server ends the stream after this (a reader that fell behind,
      // a node shutting down): the loop reconnects.
      this.h.onState('reconnecting', obj.message || '');
      return;
    }
    this.h.onEvent(obj, id);
  }
}

// ---------------------------------------------------- connection indicator

function showConn(state, detail) {
  const c = $('conn');
  c.dataset.state = state;
  const words = { connecting: 'connecting…', live: 'live', reconnecting: 'reconnecting…', error: 'error' };
  c.textContent = (words[state] || state) + (detail ? ': ' + detail : '');
}

// ------------------------------------------------------------ render pacing

// Renderer runs fn at most once per animation frame, and at most every
// BIG_RENDER_MS while the view is big, so a burst of thousands of events is
// drawn as a few batches rather than one frame each.
class Renderer {
  constructor(fn) { this.fn = fn; this.pending = false; this.last = 0; this.big = false; }
  schedule() {
    if (this.pending) return;
    this.pending = true;
    const wait = this.big ? Math.max(0, this.last + BIG_RENDER_MS - Date.now()) : 0;
    const go = () => requestAnimationFrame(() => {
      this.pending = false;
      this.last = Date.now();
      this.fn();
    });
    if (wait > 0) setTimeout(go, wait); else go();
  }
}

// -------------------------------------------------------- the service list

const list = {
  stream: null,
  services: new Map(), // name -> summary
  fresh: null,         // names seen since the stream (re)opened
  synced: false,
  renderer: null,
};

function openServiceList() {
  list.renderer = list.renderer || new Renderer(renderServices);
  list.stream = new EventStream('/services', {
    onState: (state, detail) => showConn(state, detail),
    onOpen: () => { list.fresh = new Set(); },
    onEvent: (s) => {
      switch (s.kind) {
        case 'service':
          list.services.set(s.service, s);
          if (list.fresh) list.fresh.add(s.service);
          break;
        case 'removed':
          list.services.delete(s.service);
          break;
        case 'current':
          // The opening list is complete: what it did not name is gone.
          if (list.fresh) {
            for (const name of list.services.keys()) if (!list.fresh.has(name)) list.services.delete(name);
            list.fresh = null;
          }
          list.synced = true;
          break;
      }
    },
    onChunk: () => list.renderer.schedule(),
  }).start();
  list.renderer.schedule();
}

function leaderText(inst) {
  return inst ? inst.id + ' (' + inst.addr + ')' : '—';
}

function renderServices() {
  const filter = $('services-filter').value.trim().toLowerCase();
  const names = [...list.services.keys()].sort();
  const shown = filter ? names.filter((n) => n.includes(filter)) : names;
  const body = $('services-body');
  const frag = document.createDocumentFragment();
  for (const name of shown.slice(0, SERVICE_ROWS)) {
    const s = list.services.get(name);
    frag.append(el('tr', { 'data-service': name },
      el('th', { scope: 'row' }, el('a', { href: '#/services/' + encodeURIComponent(name) }, name)),
      el('td', { class: 'num' }, fmt.format(s.instances)),
      el('td', { class: 'addr' }, leaderText(s.leader))));
  }
  body.replaceChildren(frag);

  let count = plural(names.length, 'service', 'services');
  if (filter) count += ', ' + fmt.format(shown.length) + ' matching';
  if (shown.length > SERVICE_ROWS) count += ' (the first ' + SERVICE_ROWS + ' shown: narrow the filter)';
  $('services-count').textContent = list.synced ? count : 'loading…';

  const empty = $('services-empty');
  if (list.synced && names.length === 0) {
    const host = location.host;
    empty.replaceChildren(
      el('p', null, el('strong', null, 'No services yet.'), ' Register one, and it appears here at once:'),
      el('p', null, el('code', null, 'curl -X PUT http://' + host + '/services/web')),
      el('p', null, el('code', null, 'curl -X PUT http://' + host + '/services/web/instances/web-1 -d \'{"addr": "127.0.0.1:8080", "proto": "http"}\'')),
      el('p', null, 'or, heartbeating until you stop it: ', el('code', null, 'discoverctl --server http://' + host + ' register web 127.0.0.1:8080')));
    empty.hidden = false;
  } else if (list.synced && shown.length === 0) {
    empty.replaceChildren(el('p', null, 'No service matches “' + filter + '”. Clear the filter to see all ' + plural(names.length, 'service', 'services') + '.'));
    empty.hidden = false;
  } else {
    empty.hidden = true;
  }
  $('services-table').hidden = shown.length === 0;
}

// ------------------------------------------------------- one service's page

function newServiceState(name) {
  return {
    name,
    stream: null,
    instances: new Map(), // id -> {inst, seen}: seen is when this page saw it come up, 0 if before
    pending: null,        // the instances of an opening prelude, until "current"
    pendingLeader: null,  // and its leader and meta (none unless it holds them)
    pendingMeta: null,
    synced: false,
    leader: null,
    meta: null,
    feed: [],
    version: 0,           // bumps on every change of instances
    sorted: null,         // cache: instances sorted by index, for version sortedVersion
    sortedVersion: -1,
    filtered: null,
    filterKey: '',
    page: 0,
    missing: '',
    renderer: null,
  };
}

let svc = null;

function openService(name) {
  svc = newServiceState(name);
  const st = svc;
  st.renderer = new Renderer(() => renderService(st));
  $('service-title').textContent = name;
  $('instances-filter').value = '';
  $('meta').textContent = '';
  $('events-body').replaceChildren();
  $('instances-body').replaceChildren();
  st.stream = new EventStream('/services/' + encodeURIComponent(name), {
    onState: (state, detail, status) => {
      showConn(state, detail);
      st.missing = status === 404 ? detail : '';
      if (state === 'error' || state === 'reconnecting') st.renderer.schedule();
    },
    onOpen: (resuming) => {
      st.missing = '';
      if (!resuming) {
        // A fresh stream opens with the whole state: gather it aside and
        // swap it in at "current", so the table never shows half of it.
        st.pending = new Map();
        st.pendingLeader = st.pendingMeta = null;
        st.synced = false;
      }
    },
    onEvent: (ev, id) => applyServiceEvent(st, ev, id),
    onChunk: () => st.renderer.schedule(),
  }).start();
  st.renderer.schedule();
}

function applyServiceEvent(st, ev, id) {
  const live = st.synced;
  const target = st.pending || st.instances;
  switch (ev.kind) {
    case 'up':
    case 'update': {
      const old = target.get(ev.instance.id);
      target.set(ev.instance.id, { inst: ev.instance, seen: old ? old.seen : (live ? Date.now() : 0) });
      if (!st.pending) st.version++;
      break;
    }
    case 'down':
      target.delete(ev.instance.id);
      if (!st.pending) st.version++;
      break;
    case 'leader':
      // An opening state holds a leader event only when there is a leader
      // (and service_meta only when there is meta): gathered aside like
      // the instances, and taken at "current".
      if (st.pending) st.pendingLeader = ev.instance || null;
      else st.leader = ev.instance || null;
      break;
    case 'service_meta':
      if (st.pending) st.pendingMeta = ev.service_meta || null;
      else st.meta = ev.service_meta || null;
      break;
    case 'resync':
      // Events were missed: the current state follows, as on a fresh stream.
      st.pending = new Map();
      st.pendingLeader = st.pendingMeta = null;
      st.synced = false;
      st.stream.resumeId = null;
      addFeed(st, ev);
      return;
    case 'current':
      if (st.pending) {
        st.instances = st.pending;
        st.pending = null;
        st.leader = st.pendingLeader;
        st.meta = st.pendingMeta;
        st.pendingLeader = st.pendingMeta = null;
        st.version++;
      }
      st.synced = true;
      break;
  }
  // Resume from this event only once the opening state is complete: a
  // stream dropped halfway through it must start over.
  if (st.synced && id != null && id !== '') st.stream.resumeId = id;
  if (live && ev.kind !== 'current') addFeed(st, ev);
}

function addFeed(st, ev) {
  st.feed.push({ t: Date.now(), kind: ev.kind, id: ev.instance ? ev.instance.id : '', index: ev.index });
  if (st.feed.length > FEED_SIZE * 4) st.feed.splice(0, st.feed.length - FEED_SIZE);
}

function sortedInstances(st) {
  if (st.sortedVersion !== st.version) {
    st.sorted = [...st.instances.values()].sort((a, b) => a.inst.index - b.inst.index);
    st.sortedVersion = st.version;
    st.filtered = null;
  }
  return st.sorted;
}

function metaText(meta) {
  if (!meta) return '';
  return Object.keys(meta).sort().map((k) => k + '=' + meta[k]).join(' ');
}

function filteredInstances(st) {
  const all = sortedInstances(st);
  const filter = $('instances-filter').value.trim().toLowerCase();
  if (!filter) return all;
  if (st.filtered && st.filterKey === filter) return st.filtered;
  st.filterKey = filter;
  st.filtered = all.filter(({ inst }) =>
    inst.id.toLowerCase().includes(filter) || inst.addr.toLowerCase().includes(filter) ||
    inst.proto.toLowerCase().includes(filter) || metaText(inst.meta).toLowerCase().includes(filter));
  return st.filtered;
}

function renderService(st) {
  if (st !== svc) return;
  const missing = $('service-missing');
  if (st.missing) {
    missing.replaceChildren('Service “' + st.name + '” does not exist (yet): ' + st.missing + '. This page keeps trying; create it with ',
      el('code', null, 'curl -X PUT http://' + location.host + '/services/' + st.name), '.');
    missing.hidden = false;
  } else {
    missing.hidden = true;
  }

  const all = sortedInstances(st);
  st.renderer.big = all.length > BIG;
  const rows = filteredInstances(st);
  const pages = Math.max(1, Math.ceil(rows.length / PAGE_SIZE));
  if (st.page >= pages) st.page = pages - 1;
  const from = st.page * PAGE_SIZE;
  const now = Date.now();
  const leaderKey = st.leader ? st.leader.id + '@' + st.leader.index : '';
  const frag = document.createDocumentFragment();
  let unknownAge = false;
  for (const { inst, seen } of rows.slice(from, from + PAGE_SIZE)) {
    if (!seen) unknownAge = true;
    const isLeader = leaderKey === inst.id + '@' + inst.index;
    const meta = el('td', { class: 'meta' });
    if (inst.meta) for (const k of Object.keys(inst.meta).sort()) meta.append(el('code', null, k + '=' + inst.meta[k]));
    frag.append(el('tr', { 'data-id': inst.id, class: isLeader ? 'leader' : null, 'aria-current': isLeader ? 'true' : null },
      el('th', { scope: 'row', class: 'id' }, inst.id, isLeader ? el('span', { class: 'badge' }, 'leader') : null),
      el('td', { class: 'addr' }, inst.addr),
      el('td', null, inst.proto),
      meta,
      el('td', { class: 'num' }, String(inst.index)),
      el('td', { title: seen ? 'registered at ' + clock(seen) : 'registered before this page opened' },
        seen ? ago(now - seen) : '≥ ' + ago(now - openedAt))));
  }
  $('instances-body').replaceChildren(frag);
  $('age-note').hidden = !unknownAge;
  $('instances-table').hidden = rows.length === 0;

  let count = st.synced || all.length ? plural(all.length, 'instance', 'instances') : 'loading…';
  if (rows !== all) count += ', ' + fmt.format(rows.length) + ' matching the filter';
  if (rows.length > PAGE_SIZE) count += '; showing ' + fmt.format(from + 1) + '–' + fmt.format(Math.min(from + PAGE_SIZE, rows.length));
  count += '. Leader: ' + (st.leader ? st.leader.id : 'none') + '.';
  $('instances-count').textContent = count;
  $('page-info').textContent = 'page ' + fmt.format(st.page + 1) + ' of ' + fmt.format(pages);
  $('page-prev').disabled = st.page === 0;
  $('page-next').disabled = st.page >= pages - 1;
  $('page-prev').closest('nav').hidden = pages === 1;

  const empty = $('instances-empty');
  if (st.synced && all.length === 0) {
    empty.replaceChildren(el('p', null, el('strong', null, 'No instances.'), ' Register one and it appears here at once:'),
      el('p', null, el('code', null, 'curl -X PUT http://' + location.host + '/services/' + st.name + '/instances/' + st.name + '-1 -d \'{"addr": "127.0.0.1:8080", "proto": "http"}\'')));
    empty.hidden = false;
  } else if (st.synced && rows.length === 0) {
    empty.replaceChildren(el('p', null, 'No instance matches the filter.'));
    empty.hidden = false;
  } else {
    empty.hidden = true;
  }

  if (st.meta) {
    let text;
    try { text = JSON.stringify(st.meta.data, null, 2); } catch (_) { text = String(st.meta.data); }
    $('meta').textContent = text + '\n\n(index ' + st.meta.index + ')';
    $('meta-empty').hidden = true;
  } else {
    $('meta').textContent = '';
    $('meta-empty').replaceChildren(el('p', null, st.synced ? 'This service has no meta. Set it with ' : 'loading…'),
      st.synced ? el('p', null, el('code', null, 'curl -X PUT http://' + location.host + '/services/' + st.name + '/meta -d \'{"data": {"owner": "team-a"}, "index": 0}\'')) : null);
    $('meta-empty').hidden = false;
  }

  const feed = st.feed.slice(-FEED_SIZE).reverse();
  const ef = document.createDocumentFragment();
  for (const e of feed) {
    ef.append(el('tr', { 'data-kind': e.kind },
      el('td', null, clock(e.t)), el('td', null, e.kind), el('td', { class: 'id' }, e.id || '—'), el('td', { class: 'num' }, String(e.index))));
  }
  $('events-body').replaceChildren(ef);
  $('events-table').hidden = feed.length === 0;
  $('events-empty').replaceChildren(el('p', null, 'No events since this page opened. Changes to the service show here as they happen.'));
  $('events-empty').hidden = feed.length !== 0;
}

// ------------------------------------------------------------------ cluster

const cluster = { timer: 0 };

async function refreshCluster() {
  try {
    const view = await getJSON('/ui/cluster');
    const frag = document.createDocumentFragment();
    for (const n of view.nodes) {
      const st = n.status || {};
      frag.append(el('tr', { 'data-addr': n.addr },
        el('th', { scope: 'row', class: 'id' }, n.addr, n.self ? el('span', { class: 'badge' }, 'this node') : null),
        el('td', null, n.role),
        el('td', null, st.version || '—'),
        el('td', { title: n.error || null }, n.answers ? el('span', { class: 'yes' }, 'yes') : el('span', { class: 'no' }, 'no'),
          n.answers && st.healthy === false ? ' (unhealthy: knows no leader)' : null,
          !n.answers && n.error ? ' (' + n.error + ')' : null),
        el('td', { class: 'num' }, st.applied_index != null && n.role !== 'proxy' ? String(st.applied_index) : '—')));
    }
    $('cluster-body').replaceChildren(frag);
    $('cluster-note').textContent = view.leader
      ? 'Raft leader: ' + view.leader + '. Checked ' + clock(Date.now()) + '.'
      : 'No Raft leader is known: the cluster cannot take writes until one is elected.';
    showConn('live', '');
  } catch (e) {
    $('cluster-note').textContent = 'Could not read the cluster: ' + e.message;
    showConn('reconnecting', '');
  }
}

// ------------------------------------------------------------------ routing

function closeStreams() {
  if (list.stream) { list.stream.stop(); list.stream = null; }
  if (svc && svc.stream) { svc.stream.stop(); }
  svc = null;
  clearInterval(cluster.timer);
  cluster.timer = 0;
}

function route() {
  closeStreams();
  const hash = location.hash.replace(/^#/, '') || '/';
  for (const v of ['services', 'service', 'cluster']) $('view-' + v).hidden = true;
  $('nav-services').removeAttribute('aria-current');
  $('nav-cluster').removeAttribute('aria-current');
  const m = hash.match(/^\/services\/([^/]+)$/);
  if (m) {
    $('view-service').hidden = false;
    document.title = decodeURIComponent(m[1]) + ' · discoverd';
    openService(decodeURIComponent(m[1]));
  } else if (hash === '/cluster') {
    $('view-cluster').hidden = false;
    $('nav-cluster').setAttribute('aria-current', 'page');
    document.title = 'Cluster · discoverd';
    refreshCluster();
    cluster.timer = setInterval(refreshCluster, CLUSTER_REFRESH_MS);
  } else {
    $('view-services').hidden = false;
    $('nav-services').setAttribute('aria-current', 'page');
    document.title = 'Services · discoverd';
    openServiceList();
  }
}

function setup() {
  $('services-filter').addEventListener('input', () => list.renderer && list.renderer.schedule());
  $('instances-filter').addEventListener('input', () => {
    if (!svc) return;
    svc.page = 0;
    svc.renderer.schedule();
  });
  $('page-prev').addEventListener('click', () => { if (svc && svc.page > 0) { svc.page--; svc.renderer.schedule(); } });
  $('page-next').addEventListener('click', () => { if (svc) { svc.page++; svc.renderer.schedule(); } });
  $('token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const t = $('token').value.trim();
    if (t) sessionStorage.setItem(TOKEN_KEY, t); else sessionStorage.removeItem(TOKEN_KEY);
    $('token').value = '';
    $('token-note').textContent = t ? 'Token kept for this tab.' : '';
    route();
  });
  $('token-forget').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    $('token-note').textContent = 'Token forgotten.';
    route();
  });
  // "/" jumps to the filter of the page, as on many sites.
  document.addEventListener('keydown', (e) => {
    if (e.key !== '/' || e.ctrlKey || e.metaKey || e.altKey) return;
    const t = e.target;
    if (t instanceof HTMLInputElement || t instanceof HTMLTextAreaElement) return;
    const f = !$('view-service').hidden ? $('instances-filter') : !$('view-services').hidden ? $('services-filter') : null;
    if (f) { e.preventDefault(); f.focus(); swallowSlash = true; }
  });
  // Some input paths deliver the character after the key press anyway (as
  // a separate keypress, now aimed at the filter): it must not land there.
  let swallowSlash = false;
  document.addEventListener('keypress', (e) => {
    if (swallowSlash && e.key === '/') e.preventDefault();
    swallowSlash = false;
  }, true);
  document.addEventListener('keyup', () => { swallowSlash = false; });
  // Ages move on without events.
  setInterval(() => { if (svc) svc.renderer.schedule(); }, 10000);
  window.addEventListener('hashchange', () => { route(); $('main').focus({ preventScroll: true }); });
  if (sessionStorage.getItem(TOKEN_KEY)) $('token-note').textContent = 'Token kept for this tab.';
  route();
}

setup();
