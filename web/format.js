// Small DOM and formatting helpers shared by the page's parts.

export const STATES = ['Waiting', 'Blocked', 'Running', 'Completed', 'Failed', 'Cancelled'];

/** Create an element: el('span', {class: 'badge', title: 'x'}, 'text', childNode…). Text is never parsed as HTML. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k === 'dataset') Object.assign(node.dataset, v);
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

const pad = (n) => String(n).padStart(2, '0');

/** `2026-11-25 12:34:56` in local time, like `kqctl list`; an em dash for none. */
export function when(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '—';
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function ago(iso, now = Date.now()) {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return '—';
  const s = Math.max(0, Math.round((now - t) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

export function framesText(frames) {
  if (!frames || frames.length === 0) return '—';
  return frames.length === 1 ? String(frames[0]) : `${frames[0]}–${frames[frames.length - 1]}`;
}

/** `3/12 · 31%`, or tasks for a job without frames: `0/1 task · 40%`. */
export function progressText(job) {
  const pct = `${Math.floor(job.progress ?? 0)}%`;
  if (job.framesTotal > 0) return `${job.framesDone}/${job.framesTotal} · ${pct}`;
  const t = job.tasks;
  if (!t) return pct;
  const total = t.waiting + t.running + t.completed + t.failed + t.cancelled;
  return `${t.completed}/${total} ${total === 1 ? 'task' : 'tasks'} · ${pct}`;
}

export function badge(state) {
  return el('span', { class: `badge state-${state}` }, state);
}

/** A progress bar element whose fill and label `setProgress` keeps up to date. */
export function progressBar() {
  const fill = el('div', { class: 'fill' });
  const label = el('span', { class: 'label' });
  return el('div', { class: 'progress', role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': 100 }, el('div', { class: 'track' }, fill), label);
}

export function setProgress(bar, job) {
  const pct = Math.max(0, Math.min(100, job.progress ?? 0));
  bar.firstChild.firstChild.style.width = `${pct}%`;
  bar.dataset.state = job.state;
  bar.setAttribute('aria-valuenow', String(Math.floor(pct)));
  bar.lastChild.textContent = progressText(job);
}
