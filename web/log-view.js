// A job's render log, live: the last part of the file, then every new line as kq writes it (SSE).
// Errors and warnings are highlighted, kq's own lines set apart; the view follows new lines unless the
// reader scrolled up. At most MAX_LINES lines are kept in the page; the full log is a download away.

import { stream, withToken } from './api.js';
import { el } from './format.js';

const TAIL_BYTES = 256 * 1024;
const MAX_LINES = 5000;
const ERROR = /(^|[^\w-])(error|errors|fatal|exception|traceback|segmentation fault|core dumped|aborted|failed|failure|cannot|could not|no such file|permission denied)([^\w-]|$)/i;
const WARNING = /(^|[^\w-])(warning|warn|deprecated|lost|blocklisted|retry)([^\w-]|$)/i;
/** POV-Ray's option summary names its streams ("Fatal Stream to console...On"): not errors. */
const NOT_AN_ERROR = /Stream to console|Warning Stream|^\s*(Possible )?Parse Error:\s*none/i;

export function lineKind(text) {
  if (NOT_AN_ERROR.test(text)) return '';
  const kq = text.startsWith('[kq]');
  if (kq && / completed( |$)/.test(text)) return 'kq';
  if (ERROR.test(text)) return kq ? 'kq err' : 'err';
  if (WARNING.test(text)) return kq ? 'kq warn' : 'warn';
  return kq ? 'kq' : '';
}

/** What a terminal would show for a line with carriage returns (progress meters): the last non-empty part. */
function visible(line) {
  if (!line.includes('\r')) return line;
  const parts = line.split('\r').filter((p) => p !== '');
  return parts.length ? parts[parts.length - 1] : '';
}

export class LogView {
  /** @param {HTMLElement} root  @param {{onExpand?(expanded:boolean):void}} [handlers] */
  constructor(root, handlers = {}) {
    this.body = el('div', { class: 'log-body', role: 'log', 'aria-live': 'off', tabindex: 0 });
    this.follow = el('input', { type: 'checkbox', checked: true, id: 'log-follow' });
    this.download = el('a', { class: 'link', target: '_blank', rel: 'noopener' }, 'Full log');
    this.status = el('span', { class: 'muted log-status' });
    // The log can take the whole panel (the job's other parts fold away) and give it back.
    this.expanded = false;
    this.expand = el('button', { type: 'button', class: 'link-btn', title: 'Give the log the whole panel', onclick: () => {
      this.expanded = !this.expanded;
      this.expand.textContent = this.expanded ? 'Collapse' : 'Expand';
      this.expand.title = this.expanded ? 'Show the job\'s details again' : 'Give the log the whole panel';
      handlers.onExpand?.(this.expanded);
      if (this.follow.checked) this.scrollDown();
    } }, 'Expand');
    root.append(
      el('div', { class: 'log-head' },
        el('h3', {}, 'Render log'), this.status,
        el('span', { class: 'spacer-flex' }),
        el('label', { class: 'toggle', for: 'log-follow' }, this.follow, 'Follow'),
        this.expand,
        this.download),
      this.body);
    this.source = null;
    this.partial = null; // the element of a line still being written
    this.partialText = '';
    this.lines = 0;
    this.body.addEventListener('scroll', () => {
      const atBottom = this.body.scrollHeight - this.body.scrollTop - this.body.clientHeight < 24;
      if (this.follow.checked !== atBottom) this.follow.checked = atBottom;
    }, { passive: true });
    this.follow.addEventListener('change', () => { if (this.follow.checked) this.scrollDown(); });
  }

  open(jobId) {
    this.close();
    this.jobId = jobId;
    this.body.replaceChildren();
    this.partial = null;
    this.partialText = '';
    this.lines = 0;
    this.follow.checked = true;
    this.download.href = withToken(`/api/jobs/${jobId}/log?format=text`);
    this.status.textContent = 'connecting…';
    let first = true;
    this.source = stream(`/api/jobs/${jobId}/log/stream?tail=${TAIL_BYTES}`, {
      meta: (m) => {
        if (first && m.from > 0) {
          this.body.append(el('div', { class: 'line note' }, `… ${formatBytes(m.from)} of earlier output not shown here: see the full log`));
        }
        first = false;
      },
      log: (m) => this.append(m.text),
    }, (state) => {
      this.status.textContent = state === 'open' ? 'live' : state === 'closed' ? 'closed' : 'reconnecting…';
      this.status.dataset.state = state;
    });
  }

  close() {
    this.source?.close();
    this.source = null;
  }

  append(text) {
    if (!text) return;
    const pieces = (this.partialText + text).split('\n');
    const last = pieces.pop(); // '' when the text ended with a newline
    const frag = document.createDocumentFragment();
    if (this.partial) {
      // The first piece completes the line that was still being written.
      const done = pieces.length ? pieces.shift() : null;
      if (done !== null) {
        this.fillLine(this.partial, done);
        this.partial = null;
      }
    }
    for (const line of pieces) {
      frag.append(this.fillLine(el('div', { class: 'line' }), line));
      this.lines++;
    }
    this.partialText = last;
    if (last !== '') {
      if (!this.partial) {
        this.partial = el('div', { class: 'line' });
        frag.append(this.partial);
        this.lines++;
      }
      this.fillLine(this.partial, last);
    } else if (this.partial) {
      this.partial = null;
    }
    this.body.append(frag);
    while (this.lines > MAX_LINES && this.body.firstChild) {
      this.body.firstChild.remove();
      this.lines--;
    }
    if (this.follow.checked) this.scrollDown();
  }

  fillLine(node, raw) {
    const text = visible(raw);
    node.textContent = text === '' ? '\u200b' : text;
    node.className = `line ${lineKind(text)}`.trimEnd();
    return node;
  }

  scrollDown() {
    this.body.scrollTop = this.body.scrollHeight;
  }
}

function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}
