// Queue control on the page (issue 17): pause/resume the whole queue (top bar), pause/resume and remove
// the selected job (detail panel), and a Submit form validated as kqctl submit validates. Every action is
// the same request kqctl sends, through the JSON API.

import { api } from './api.js';
import { el } from './format.js';

/** The top bar's queue state and its Pause/Resume button. */
export class QueueToggle {
  /** @param {HTMLElement} root  @param {{toast(text:string, kind?:string):void}} ui */
  constructor(root, ui) {
    this.ui = ui;
    this.paused = false;
    this.label = el('span', { id: 'queue-state', class: 'queue-state', role: 'status', hidden: true }, 'Queue paused: no new tasks start');
    this.button = el('button', { id: 'queue-toggle', class: 'btn', type: 'button', onclick: () => this.toggle() }, 'Pause queue');
    root.append(this.label, this.button);
  }

  set(paused) {
    this.paused = !!paused;
    this.label.hidden = !this.paused;
    this.button.textContent = this.paused ? 'Resume queue' : 'Pause queue';
    this.button.setAttribute('aria-pressed', String(this.paused));
    document.body.dataset.queuePaused = String(this.paused);
  }

  async toggle() {
    const verb = this.paused ? 'resume' : 'pause';
    try {
      const r = await api(`/api/${verb}`, { method: 'POST', body: {} });
      this.set(r.queuePaused);
      this.ui.toast(r.queuePaused ? 'Queue paused: running renders go on, nothing new starts' : 'Queue resumed', 'ok');
    } catch (err) {
      this.ui.toast(`${verb === 'pause' ? 'Pause' : 'Resume'} failed: ${err.message}`, 'error');
    }
  }
}

const ENDED = ['Completed', 'Failed', 'Cancelled'];

/** Pause/Resume and Remove for the selected job, beside Stop and Restart. */
export class JobQueueActions {
  /** @param {HTMLElement} actions  @param {{confirm(title:string, text:string, action:string):Promise<boolean>, toast(text:string, kind?:string):void}} ui */
  constructor(actions, ui) {
    this.ui = ui;
    this.summary = null;
    this.pause = el('button', { class: 'btn', type: 'button', dataset: { action: 'pause' }, onclick: () => this.togglePause() }, 'Pause');
    this.remove = el('button', { class: 'btn danger', type: 'button', dataset: { action: 'remove' }, onclick: () => this.removeJob() }, 'Remove');
    actions.append(this.pause, this.remove);
  }

  update(summary) {
    this.summary = summary;
    this.pause.textContent = summary.paused ? 'Resume' : 'Pause';
    this.pause.disabled = ENDED.includes(summary.state) && !summary.paused;
    this.remove.disabled = !ENDED.includes(summary.state);
    this.remove.title = this.remove.disabled ? 'Only ended jobs can be removed: stop it first' : 'Remove the job and its log (its rendered frames stay on disk)';
  }

  async togglePause() {
    const s = this.summary;
    if (!s) return;
    const verb = s.paused ? 'resume' : 'pause';
    try {
      await api(`/api/jobs/${s.id}/${verb}`, { method: 'POST' });
      this.ui.toast(`${verb === 'pause' ? 'Paused' : 'Resumed'} job ${s.id}`, 'ok');
    } catch (err) {
      this.ui.toast(`${verb === 'pause' ? 'Pause' : 'Resume'} failed: ${err.message}`, 'error');
    }
  }

  async removeJob() {
    const s = this.summary;
    if (!s) return;
    if (!(await this.ui.confirm('Remove job', `Remove job ${s.id} “${s.name}” and its log? Its rendered frames stay on disk.`, 'Remove job'))) return;
    try {
      await api(`/api/jobs/${s.id}`, { method: 'DELETE' });
      this.ui.toast(`Removed job ${s.id}`, 'ok');
    } catch (err) {
      this.ui.toast(`Remove failed: ${err.message}`, 'error');
    }
  }
}

/**
 * Split a command line as a POSIX shell would split plain words and quotes ('…', "…", \x), without
 * expanding anything: the page has no shell, and kq runs argv as is.
 */
export function splitCommand(text) {
  const argv = [];
  let word = null;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === "'") {
      const end = text.indexOf("'", i + 1);
      if (end < 0) throw new Error('unterminated \' quote in the command');
      word = (word ?? '') + text.slice(i + 1, end);
      i = end;
    } else if (c === '"') {
      let j = i + 1;
      let part = '';
      for (; j < text.length && text[j] !== '"'; j++) part += text[j] === '\\' && /["\\$`]/.test(text[j + 1] ?? '') ? text[++j] : text[j];
      if (j >= text.length) throw new Error('unterminated " quote in the command');
      word = (word ?? '') + part;
      i = j;
    } else if (c === '\\' && i + 1 < text.length) {
      word = (word ?? '') + text[++i];
    } else if (/\s/.test(c)) {
      if (word !== null) argv.push(word);
      word = null;
    } else {
      word = (word ?? '') + c;
    }
  }
  if (word !== null) argv.push(word);
  return argv;
}

/** kqctl's own checks and messages (src/common/cli.ts intArg, src/kqctl/connect.ts jobIds). */
function wholeNumber(value, min, max, flag) {
  const n = Number(value);
  if (!/^-?\d+$/.test(value.trim()) || n < min || n > max) throw new Error(`option '${flag}' argument '${value}' is invalid. expected a whole number from ${min} to ${max}, got "${value}"`);
  return n;
}

/** The values of the Submit form → the body of POST /api/jobs, or an Error with kqctl's message. */
export function jobFromForm(values) {
  const argv = splitCommand(values.command ?? '');
  if (argv.length === 0 || argv[0].trim() === '') throw new Error('empty command: give the program to run after --');
  const job = { argv };
  if (values.name?.trim()) job.name = values.name.trim();
  if (values.frames?.trim()) job.frames = values.frames.trim();
  if (values.chunk?.trim()) job.chunk = wholeNumber(values.chunk, 1, 1_000_000, '--chunk <n>');
  if (values.priority?.trim()) job.priority = wholeNumber(values.priority, -1000, 1000, '--priority <n>');
  if (values.cwd?.trim()) job.cwd = values.cwd.trim();
  if (values.after?.trim()) {
    job.after = values.after.split(',').map((v) => v.trim()).map((v) => {
      if (!/^\d+$/.test(v)) throw new Error(`not a job id: "${v}"`);
      return Number(v);
    });
  }
  return job;
}

/** The Submit dialog: opened from the top bar (or with the "n" key), Esc closes it. */
export class SubmitForm {
  /** @param {HTMLElement} bar  @param {{toast(text:string, kind?:string):void, onSubmitted(id:number):void}} ui */
  constructor(bar, ui) {
    this.ui = ui;
    const field = (name, label, attrs = {}) => el('label', { class: 'field' }, el('span', {}, label),
      el('input', { name, id: `submit-${name}`, autocomplete: 'off', ...attrs }));
    this.error = el('p', { class: 'form-error', role: 'alert', hidden: true });
    this.form = el('form', { method: 'dialog', class: 'submit-form', novalidate: true },
      el('h2', {}, 'Submit a job'),
      field('command', 'Command', { placeholder: 'povray +Ishot.pov +SF{start} +EF{end}' }),
      field('name', 'Name', { placeholder: 'default: the command' }),
      field('frames', 'Frames', { placeholder: '1-100, 120, 200-300x2' }),
      field('chunk', 'Chunk', { inputmode: 'numeric', placeholder: '1' }),
      field('priority', 'Priority', { inputmode: 'numeric', placeholder: '0 (-1000..1000, higher first)' }),
      field('cwd', 'Working directory', { placeholder: '/absolute/path on the agents' }),
      field('after', 'After jobs', { placeholder: 'e.g. 3,4: start once they have Completed' }),
      this.error,
      el('div', { class: 'dialog-buttons' },
        el('button', { class: 'btn', type: 'button', value: 'cancel', onclick: () => this.dialog.close() }, 'Cancel'),
        el('button', { class: 'btn primary', type: 'submit', id: 'submit-ok' }, 'Submit')));
    this.form.addEventListener('submit', (e) => {
      e.preventDefault();
      void this.submit();
    });
    this.dialog = el('dialog', { id: 'submit-dialog', class: 'confirm submit-dialog', 'aria-labelledby': 'submit-title' }, this.form);
    document.body.append(this.dialog);
    this.button = el('button', { id: 'submit-open', class: 'btn primary', type: 'button', title: 'Submit a job (n)', onclick: () => this.open() }, 'Submit…');
    bar.append(this.button);
    document.addEventListener('keydown', (e) => {
      if (e.key === 'n' && !e.ctrlKey && !e.metaKey && !e.altKey && !(e.target instanceof HTMLInputElement) && !document.querySelector('dialog[open]')) {
        e.preventDefault();
        this.open();
      }
    });
  }

  open() {
    this.error.hidden = true;
    this.dialog.showModal();
    this.form.elements.command.focus();
  }

  async submit() {
    const values = Object.fromEntries(new FormData(this.form).entries());
    let job;
    try {
      job = jobFromForm(values);
    } catch (err) {
      return this.fail(err.message);
    }
    try {
      const created = await api('/api/jobs', { method: 'POST', body: job });
      this.dialog.close();
      this.form.reset();
      this.ui.toast(`Submitted job ${created.id}`, 'ok');
      this.ui.onSubmitted(created.id);
    } catch (err) {
      this.fail(err.message);
    }
  }

  fail(message) {
    this.error.textContent = message;
    this.error.hidden = false;
  }
}
