// The selected job: its state and progress, Stop / Restart / Restart failed (each confirmed first),
// what it runs, thumbnails of its finished frames when it declared an image output, and its live log.

import { api, withToken } from './api.js';
import { badge, el, framesText, progressBar, setProgress, when } from './format.js';
import { LogView } from './log-view.js';
import { JobQueueActions } from './queue-controls.js';

const IMAGE = /\.(png|jpe?g|gif|webp|bmp|avif)$/i;
/** Thumbnails per page: Earlier/Later page through every finished frame. */
const THUMBS_PER_PAGE = 24;
/** Failed tasks explained at most (the rest are counted). */
const MAX_FAILURES = 5;

export class JobDetail {
  /** @param {HTMLElement} root  @param {{confirm(title:string, text:string, action:string):Promise<boolean>, toast(text:string, kind?:string):void}} ui */
  constructor(root, ui) {
    this.root = root;
    this.ui = ui;
    this.jobId = null;
    this.summary = null;
    this.detail = null;
    this.refreshTimer = null;
    this.placeholder = el('div', { class: 'detail-empty' },
      el('p', {}, 'Select a job to see its progress, frames and render log.'),
      el('p', { class: 'muted' }, 'Tip: ↑/↓ move through the table.'));
    this.title = el('h2', { class: 'job-title' });
    this.badge = el('span');
    this.bar = progressBar();
    this.bar.classList.add('big');
    this.buttons = {
      stop: el('button', { class: 'btn danger', type: 'button', onclick: () => this.act('stop') }, 'Stop'),
      restart: el('button', { class: 'btn', type: 'button', onclick: () => this.act('restart') }, 'Restart'),
      restartFailed: el('button', { class: 'btn', type: 'button', onclick: () => this.act('restart-failed') }, 'Restart failed'),
    };
    this.meta = el('dl', { class: 'meta' });
    this.thumbs = el('div', { class: 'thumbs', hidden: true });
    /** The thumbnail page shown: null follows the latest frames. */
    this.thumbPage = null;
    this.failures = el('div', { class: 'failures', hidden: true });
    const logRoot = el('div', { class: 'log' });
    this.log = new LogView(logRoot, { onExpand: (on) => this.content.classList.toggle('log-expanded', on) });
    const actions = el('div', { class: 'actions' }, Object.values(this.buttons));
    this.queueActions = new JobQueueActions(actions, ui); // Pause/Resume, Remove (queue-controls.js)
    this.content = el('div', { class: 'detail-content', hidden: true },
      el('div', { class: 'detail-head' }, this.title, this.badge),
      this.bar,
      actions,
      this.meta, this.failures, this.thumbs, logRoot);
    root.append(this.placeholder, this.content);
  }

  select(jobId, summary) {
    if (jobId === this.jobId) return;
    this.jobId = jobId;
    this.detail = null;
    this.placeholder.hidden = jobId !== null;
    this.content.hidden = jobId === null;
    if (jobId === null) {
      this.log.close();
      return;
    }
    this.meta.replaceChildren();
    this.thumbs.replaceChildren();
    this.thumbs.hidden = true;
    this.thumbPage = null;
    this.thumbsKey = null;
    this.failures.replaceChildren();
    this.failures.hidden = true;
    if (summary) this.update(summary);
    this.log.open(jobId);
    this.refresh();
  }

  /** A new summary of the selected job arrived (SSE): show it now, fetch the details soon. */
  update(summary) {
    if (summary.id !== this.jobId) return;
    this.summary = summary;
    this.title.textContent = `#${summary.id} ${summary.name}`;
    this.title.title = summary.name;
    this.badge.replaceChildren(badge(summary.state));
    setProgress(this.bar, summary);
    const t = summary.tasks;
    this.buttons.stop.disabled = summary.state !== 'Waiting' && summary.state !== 'Running' && summary.state !== 'Blocked';
    this.queueActions.update(summary);
    this.buttons.restartFailed.disabled = t.failed + t.cancelled === 0;
    clearTimeout(this.refreshTimer);
    this.refreshTimer = setTimeout(() => this.refresh(), 400);
  }

  async refresh() {
    const id = this.jobId;
    if (id === null) return;
    try {
      const d = await api(`/api/jobs/${id}`);
      if (id !== this.jobId) return;
      this.detail = d;
      if (!this.summary || this.summary.id !== id) this.update(d);
      this.renderMeta(d);
      this.renderFailures(d);
      this.renderThumbs(d);
    } catch (err) {
      if (id === this.jobId) this.ui.toast(`Cannot load job ${id}: ${err.message}`, 'error');
    }
  }

  renderMeta(d) {
    const t = d.tasks;
    const counts = Object.entries(t).filter(([, n]) => n > 0).map(([s, n]) => `${n} ${s}`).join(' · ') || 'none';
    const rows = [
      ['Command', el('code', {}, d.argv.map(quote).join(' '))],
      ['Frames', d.frameSpec ? `${d.frameSpec} (chunks of ${d.chunk})` : '—'],
      ['Tasks', counts],
      ['Priority', String(d.priority)],
      ['Cwd', d.cwd ?? '—'],
      ['Output', d.output ?? '—'],
      ['Submitted', when(d.submittedAt)],
      ['Completed', when(d.completedAt)],
      ['Log file', el('code', {}, d.logFile)],
    ];
    if (d.blocklist.length) rows.push(['Blocklist', d.blocklist.join(', ')]);
    this.meta.replaceChildren(...rows.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
  }

  /** Each failed task: how its last run ended, where, and the last lines it wrote to stderr. */
  renderFailures(d) {
    const failed = d.taskList.filter((t) => t.state === 'failed');
    this.failures.hidden = failed.length === 0;
    if (failed.length === 0) return this.failures.replaceChildren();
    const items = failed.slice(0, MAX_FAILURES).map((t) => {
      const frames = t.frames.length === 0 ? '' : t.frames.length === 1 ? ` (frame ${t.frames[0]})` : ` (frames ${framesText(t.frames)})`;
      const how = t.reason ?? (t.signal ? `killed by ${t.signal}` : `exit code ${t.exitCode}`);
      const where = `${t.host ? ` on ${t.host}` : ''}, after ${t.attempts} ${t.attempts === 1 ? 'run' : 'runs'}`;
      const tail = t.stderrTail ?? [];
      return el('li', {},
        el('div', { class: 'failure-head' }, el('b', {}, `Task ${t.number ?? t.seq + 1}${frames} failed: `), how, el('span', { class: 'muted' }, where)),
        tail.length ? el('pre', { class: 'stderr-tail', title: 'the last lines it wrote to stderr' }, tail.join('\n')) : el('div', { class: 'muted' }, 'It wrote nothing to stderr.'));
    });
    const more = failed.length > MAX_FAILURES ? el('li', { class: 'muted' }, `… and ${failed.length - MAX_FAILURES} more failed tasks (kqctl show ${d.id})`) : null;
    this.failures.replaceChildren(el('h3', {}, 'Failures'), el('ul', {}, items, more));
  }

  renderThumbs(d) {
    if (!d.output || !IMAGE.test(d.output)) {
      this.thumbs.hidden = true;
      return;
    }
    // Finished frames in frame order, a page at a time; the image URL changes when a task is rendered again.
    const done = d.taskList.filter((t) => t.state === 'completed')
      .flatMap((t) => (t.frames.length ? t.frames : [null]).map((f) => ({ frame: f, at: t.finishedAt })))
      .sort((a, b) => (a.frame ?? 0) - (b.frame ?? 0));
    const total = d.framesTotal || 1;
    const pages = Math.max(1, Math.ceil(done.length / THUMBS_PER_PAGE));
    const page = this.thumbPage === null ? pages - 1 : Math.min(this.thumbPage, pages - 1);
    const shown = done.slice(page * THUMBS_PER_PAGE, (page + 1) * THUMBS_PER_PAGE);
    const key = `${page}/${pages}:` + shown.map((s) => `${s.frame}@${s.at}`).join(',');
    if (key === this.thumbsKey && !this.thumbs.hidden) return;
    this.thumbsKey = key;
    this.thumbs.hidden = false;
    const items = shown.map(({ frame, at }) => {
      const query = new URLSearchParams(frame === null ? { v: at ?? '' } : { frame: String(frame), v: at ?? '' });
      const src = withToken(`/api/jobs/${d.id}/output?${query}`);
      const img = el('img', { src, alt: frame === null ? 'output' : `frame ${frame}`, loading: 'lazy', decoding: 'async' });
      const item = el('a', { class: 'thumb', href: src, target: '_blank', rel: 'noopener', title: frame === null ? d.output : `frame ${frame}` },
        img, el('span', {}, frame === null ? 'output' : String(frame)));
      // A frame can be briefly unreadable (being written, a network blip): try again a few times.
      let tries = 0;
      img.addEventListener('error', () => {
        if (++tries > 3) return item.classList.add('missing');
        setTimeout(() => { img.src = `${src}&retry=${tries}`; }, 500 * tries);
      });
      return item;
    });
    const go = (p) => {
      this.thumbPage = p >= pages - 1 ? null : p; // the last page keeps following new frames
      this.renderThumbs(d);
    };
    const range = shown.length && shown[0].frame !== null ? ` · frames ${shown[0].frame}–${shown[shown.length - 1].frame}` : '';
    const nav = pages > 1 ? el('span', { class: 'thumbs-nav' },
      el('button', { type: 'button', class: 'btn small', disabled: page === 0, onclick: () => go(page - 1) }, 'Earlier'),
      el('span', { class: 'muted' }, `page ${page + 1} of ${pages}`),
      el('button', { type: 'button', class: 'btn small', disabled: page >= pages - 1, onclick: () => go(page + 1) }, 'Later')) : null;
    this.thumbs.replaceChildren(
      el('div', { class: 'thumbs-head' }, el('h3', {}, 'Frames'),
        el('span', { class: 'muted' }, done.length === 0 ? 'none finished yet' : `${done.length} of ${total} finished${pages > 1 ? range : ''}`),
        el('span', { class: 'spacer-flex' }), nav),
      el('div', { class: 'thumbs-grid' }, items));
  }

  async act(kind) {
    const s = this.summary;
    if (!s) return;
    const what = {
      stop: ['Stop job', `Stop job ${s.id} “${s.name}”? Its running renders are killed and its waiting tasks cancelled.`, 'Stop job', `Stopped job ${s.id}`],
      restart: ['Restart job', `Restart job ${s.id} “${s.name}”? Every task goes back to the queue${s.state === 'Running' ? ' (running renders are killed first)' : ''} and renders again.`, 'Restart job', `Restarted job ${s.id}`],
      'restart-failed': ['Restart failed tasks', `Requeue the failed and cancelled tasks of job ${s.id} “${s.name}”? Finished frames are kept.`, 'Restart failed', `Requeued the failed tasks of job ${s.id}`],
    }[kind];
    if (!(await this.ui.confirm(what[0], what[1], what[2]))) return;
    try {
      const path = kind === 'stop' ? `/api/jobs/${s.id}/stop` : `/api/jobs/${s.id}/restart`;
      await api(path, { method: 'POST', body: kind === 'restart-failed' ? { failedOnly: true } : {} });
      this.ui.toast(what[3], 'ok');
    } catch (err) {
      this.ui.toast(`${what[0]} failed: ${err.message}`, 'error');
    }
  }
}

function quote(arg) {
  return /^[\w@%+=:,./{}-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}
