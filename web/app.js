// kq monitor: the page's state and wiring. Jobs and agents arrive over one SSE stream (/api/events):
// a snapshot on connect, then changes as kq makes them; nothing is polled. The table is filtered and
// sorted here, in the browser, and drawn virtualised (jobs-table.js).

import { api, ApiError, stream } from './api.js';
import { el, STATES } from './format.js';
import { JobsTable } from './jobs-table.js';
import { JobDetail } from './detail.js';
import { AgentsPanel } from './agents.js';
import { QueueToggle, SubmitForm } from './queue-controls.js';
import { RemoteAgentsDialog } from './remote-agents.js';

const $ = (id) => document.getElementById(id);

const jobs = new Map();
/** Timings the page measures about itself (read by the browser tests; handy in the devtools console). */
const perf = (window.kqPerf = { snapshotJobs: 0, snapshotMs: 0, lastRecomputeMs: 0, maxRecomputeMs: 0 });
const view = { state: '', text: '', sort: { key: 'id', dir: 'desc' } };
let selected = null;

// ---------- dialogs and toasts ----------

const dialog = $('confirm');
function confirmAction(title, text, action) {
  $('confirm-title').textContent = title;
  $('confirm-text').textContent = text;
  $('confirm-ok').textContent = action;
  dialog.returnValue = '';
  dialog.showModal();
  $('confirm-cancel').focus();
  return new Promise((resolve) => dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true }));
}

function toast(text, kind = 'info') {
  const t = el('div', { class: `toast toast-${kind}`, role: kind === 'error' ? 'alert' : 'status' }, text);
  $('toasts').append(t);
  setTimeout(() => t.classList.add('leaving'), 3500);
  setTimeout(() => t.remove(), 4000);
}

// ---------- parts ----------

const table = new JobsTable($('jobs'), {
  onSelect: (id) => select(id),
  onSort: (key) => {
    view.sort = view.sort.key === key ? { key, dir: view.sort.dir === 'asc' ? 'desc' : 'asc' } : { key, dir: key === 'name' || key === 'state' ? 'asc' : 'desc' };
    table.setSort(view.sort.key, view.sort.dir);
    recompute();
  },
});
table.setSort(view.sort.key, view.sort.dir);
const detail = new JobDetail($('detail'), { confirm: confirmAction, toast });
const queueToggle = new QueueToggle($('queue-controls'), { toast });
new SubmitForm($('queue-controls'), { toast, onSubmitted: () => {} });
const agents = new AgentsPanel($('agents'), { onSelectJob: (id) => { select(id); table.reveal(id); } });
new RemoteAgentsDialog($('agents').querySelector('.panel-head'), { toast });

// State filter chips: All + one per state, with live counts.
const chips = new Map();
for (const state of ['', ...STATES]) {
  const count = el('b', {}, '0');
  const chip = el('button', { type: 'button', class: `chip${state ? ` chip-${state}` : ''}`, 'aria-pressed': String(state === view.state), dataset: { state } },
    state || 'All', count);
  chip.addEventListener('click', () => {
    view.state = state;
    for (const [s, c] of chips) c.chip.setAttribute('aria-pressed', String(s === state));
    recompute();
  });
  chips.set(state, { chip, count });
  $('state-filter').append(chip);
}

let searchTimer = null;
$('search').addEventListener('input', (e) => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => {
    view.text = e.target.value.trim().toLowerCase();
    recompute();
  }, 120);
});

// ---------- filtering and sorting ----------

const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: 'base' });
const STATE_RANK = { Running: 0, Waiting: 1, Blocked: 2, Failed: 3, Cancelled: 4, Completed: 5 };
const COMPARE = {
  id: (a, b) => a.id - b.id,
  name: (a, b) => collator.compare(a.name, b.name),
  state: (a, b) => STATE_RANK[a.state] - STATE_RANK[b.state],
  progress: (a, b) => a.progress - b.progress,
  submittedAt: (a, b) => (a.submittedAt < b.submittedAt ? -1 : a.submittedAt > b.submittedAt ? 1 : 0),
  completedAt: (a, b) => (a.completedAt ?? '') < (b.completedAt ?? '') ? -1 : (a.completedAt ?? '') > (b.completedAt ?? '') ? 1 : 0,
};

let recomputeScheduled = false;
const afterRecompute = [];
function recompute() {
  if (recomputeScheduled) return;
  recomputeScheduled = true;
  requestAnimationFrame(() => {
    recomputeScheduled = false;
    const started = performance.now();
    const counts = Object.fromEntries(['', ...STATES].map((s) => [s, 0]));
    const rows = [];
    const text = view.text;
    const idText = text.replace(/^#/, '');
    for (const j of jobs.values()) {
      counts[''] += 1;
      counts[j.state] += 1;
      if (view.state && j.state !== view.state) continue;
      if (text && !j.name.toLowerCase().includes(text) && String(j.id) !== idText) continue;
      rows.push(j);
    }
    const cmp = COMPARE[view.sort.key];
    const sign = view.sort.dir === 'asc' ? 1 : -1;
    rows.sort((a, b) => sign * cmp(a, b) || b.id - a.id);
    for (const [s, c] of chips) c.count.textContent = counts[s].toLocaleString();
    const filtered = view.state || text;
    table.setRows(rows, jobs.size === 0 ? 'No jobs yet — submit one with kqctl submit' : 'No jobs match the filter');
    const info = $('jobs-count');
    info.dataset.total = String(jobs.size);
    info.dataset.shown = String(rows.length);
    const noun = jobs.size === 1 ? 'job' : 'jobs';
    info.textContent = filtered ? `${rows.length.toLocaleString()} of ${jobs.size.toLocaleString()} ${noun}` : `${jobs.size.toLocaleString()} ${noun}`;
    table.render();
    perf.lastRecomputeMs = performance.now() - started;
    perf.maxRecomputeMs = Math.max(perf.maxRecomputeMs, perf.lastRecomputeMs);
    for (const fn of afterRecompute.splice(0)) fn();
  });
}

// ---------- selection ----------

function select(id) {
  if (id !== null && !jobs.has(id) && jobs.size > 0) id = null;
  selected = id;
  table.setSelected(id);
  detail.select(id, id === null ? null : jobs.get(id));
  const hash = id === null ? '' : `#job=${id}`;
  if (location.hash !== hash) history.replaceState(null, '', hash || location.pathname + location.search);
}

function selectFromHash() {
  const m = /^#job=(\d+)$/.exec(location.hash);
  if (m) {
    select(Number(m[1]));
    table.reveal(Number(m[1]));
  }
}
window.addEventListener('hashchange', selectFromHash);

// ---------- live data ----------

let awaySince = null;
function setConnection(state) {
  const c = $('conn');
  c.dataset.state = state;
  c.textContent = state === 'open' ? 'live' : state === 'closed' ? 'disconnected' : 'reconnecting…';
  // While kq does not answer, what the page shows is only the last thing it heard: say so, loudly.
  if (state === 'open') {
    awaySince = null;
    agents.setUnknown(false);
    hideBanner('outage');
  } else if (document.body.dataset.ready && awaySince === null) {
    awaySince = new Date();
    agents.setUnknown(true);
    showBanner(`kq is not answering (since ${awaySince.toLocaleTimeString()}): jobs and agents below are as last seen, and may have changed. ` +
      'The page reconnects by itself; if kq stopped, start it again.', 'outage');
  }
}

let events = null;
function connect() {
  perf.connectAt ??= Math.round(performance.now());
  events?.close();
  events = stream('/api/events', {
    snapshot: (s, e) => {
      const received = performance.now();
      perf.snapshotAt ??= Math.round(received);
      perf.snapshotJobs = s.jobs.length;
      afterRecompute.push(() => { perf.snapshotMs = performance.now() - received + (e.parseMs ?? 0); });
      jobs.clear();
      for (const j of s.jobs) jobs.set(j.id, j);
      queueToggle.set(s.queuePaused);
      agents.set(s.agents);
      recompute();
      if (!document.body.dataset.ready) {
        document.body.dataset.ready = 'true';
        selectFromHash();
      } else if (selected !== null && jobs.has(selected)) {
        detail.update(jobs.get(selected));
      }
    },
    jobs: (list) => {
      for (const j of list) {
        jobs.set(j.id, j);
        if (j.id === selected) detail.update(j);
      }
      recompute();
    },
    agents: (list) => agents.set(list),
    queue: (q) => queueToggle.set(q.paused),
    removed: ({ jobIds }) => {
      for (const id of jobIds) jobs.delete(id);
      if (selected !== null && jobIds.includes(selected)) select(null);
      recompute();
    },
  }, async (state) => {
    if (state === 'open') perf.eventsOpenAt ??= Math.round(performance.now());
    setConnection(state);
    if (state !== 'closed') return;
    // The server refused the stream: find out why, then try again later.
    try {
      await api('/api/info');
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) {
        showBanner('This kq needs its monitor token. Open the page as …/?token=<token>; the token is in <data root>/http-token on the kq host.');
        return;
      }
    }
    setTimeout(connect, 3000);
  });
}

function showBanner(text, kind = 'error') {
  const b = $('banner');
  b.textContent = text;
  b.dataset.kind = kind;
  b.hidden = false;
}

function hideBanner(kind) {
  const b = $('banner');
  if (b.dataset.kind === kind) b.hidden = true;
}

api('/api/info').then((info) => {
  $('host').textContent = `${info.host}:${info.requestPort} · ${info.dataRoot}`;
  document.title = `kq monitor · ${info.host}`;
  showDisk(info.disk);
}).catch(() => {});

/** kq says when its disk is full (it then hands out no work): a banner until there is room again. */
let diskBanner = false;
function showDisk(disk) {
  if (disk?.full) {
    showBanner(`kq's disk is full since ${new Date(disk.since).toLocaleString()} (${disk.reason}): no new work is handed out and tasks whose output cannot be kept fail. Free space on ${disk.dataRoot}; kq resumes by itself.`, 'disk');
    diskBanner = true;
  } else if (diskBanner) {
    hideBanner('disk');
    diskBanner = false;
  }
}
setInterval(() => api('/api/info').then((info) => showDisk(info.disk), () => {}), 5000);

recompute();
connect();
