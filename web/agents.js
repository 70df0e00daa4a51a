// The agents panel: host, state, current job and frames, last seen. Offline agents (ended local agents
// of earlier runs) are folded away behind a toggle.

import { ago, el, framesText } from './format.js';
import { api } from './api.js';

const ORDER = { busy: 0, idle: 1, lost: 2, offline: 3 };

export class AgentsPanel {
  /** @param {HTMLElement} root  @param {{onSelectJob(id:number):void}} handlers */
  constructor(root, handlers) {
    this.handlers = handlers;
    this.agents = [];
    this.showOffline = false;
    /** kq is not answering: no agent's state is known. */
    this.unknown = false;
    this.count = el('span', { class: 'muted' });
    this.toggle = el('button', { class: 'link-btn', type: 'button', hidden: true, onclick: () => { this.showOffline = !this.showOffline; this.render(); } });
    this.body = el('tbody');
    this.slurm = el('div', { class: 'muted slurm-status', hidden: true, 'aria-live': 'polite' });
    root.append(
      el('div', { class: 'panel-head' }, el('h2', {}, 'Agents'), this.count, el('span', { class: 'spacer-flex' }), this.toggle),
      this.slurm,
      el('div', { class: 'agents-scroll' },
        el('table', { class: 'agents-table', 'aria-label': 'Agents' },
          el('thead', {}, el('tr', {}, ['Host', 'Agent', 'State', 'Job', 'Frames', 'Last seen'].map((h) => el('th', { scope: 'col' }, h)))),
          this.body)));
    this.body.addEventListener('click', (e) => {
      const a = e.target.closest('[data-job]');
      if (a) {
        e.preventDefault();
        handlers.onSelectJob(Number(a.dataset.job));
      }
    });
    setInterval(() => this.tick(), 1000);
    this.pollSlurm();
  }

  /** kq --slurm-autoscale: its agent jobs, and Slurm's refusal if it refuses (until it works again). */
  async pollSlurm() {
    try {
      const s = await api('/api/slurm');
      this.slurm.hidden = !s;
      if (s) {
        const pending = s.pending ? `, ${s.pending} pending (${s.pendingReasons.join(', ')})` : '';
        this.slurm.textContent = s.error
          ? `Slurm autoscale failing: ${s.error} — kq keeps working with the agents it has`
          : `Slurm autoscale: ${s.agents} agent job(s)${pending} · min ${s.min}, max ${s.max}`;
        this.slurm.classList.toggle('slurm-error', Boolean(s.error));
      }
    } catch { /* the stream's status line reports a lost kq */ }
    setTimeout(() => this.pollSlurm(), 5000);
  }

  set(agents) {
    this.agents = [...agents].sort((a, b) => (ORDER[a.state] ?? 9) - (ORDER[b.state] ?? 9) || a.host.localeCompare(b.host) || a.id.localeCompare(b.id));
    this.render();
  }

  setUnknown(unknown) {
    if (this.unknown === unknown) return;
    this.unknown = unknown;
    this.render();
  }

  render() {
    const offline = this.agents.filter((a) => a.state === 'offline').length;
    const shown = this.showOffline ? this.agents : this.agents.filter((a) => a.state !== 'offline');
    const busy = this.agents.filter((a) => a.state === 'busy').length;
    const up = this.agents.length - offline - this.agents.filter((a) => a.state === 'lost').length;
    this.count.textContent = this.unknown ? 'unknown: kq is not answering' : `${up} up · ${busy} busy`;
    this.toggle.hidden = offline === 0;
    this.toggle.textContent = this.showOffline ? 'Hide offline' : `Show ${offline} offline`;
    const stateOf = (a) => (this.unknown && a.state !== 'offline' ? 'unknown' : a.state);
    this.body.replaceChildren(...(shown.length ? shown.map((a) => el('tr', { class: `agent-${stateOf(a)}` },
      el('td', {}, a.host, a.local ? el('span', { class: 'tag' }, 'local') : null,
        a.slurm ? el('span', { class: 'tag', title: 'Slurm job_task@node' }, `slurm ${slurmText(a.slurm)}`) : null),
      el('td', { class: 'mono' }, a.id),
      el('td', {}, el('span', { class: `badge agent-state-${stateOf(a)}`, title: this.unknown ? `last known: ${a.state}` : null }, stateOf(a))),
      el('td', {}, a.jobId === null ? '—' : el('a', { href: `#job=${a.jobId}`, class: 'link', dataset: { job: a.jobId } }, `#${a.jobId}`)),
      el('td', { class: 'mono' }, framesText(a.frames)),
      el('td', { class: 'last-seen', dataset: { at: a.lastSeen } }, a.state === 'offline' ? '—' : ago(a.lastSeen)),
    )) : [el('tr', {}, el('td', { colspan: 6, class: 'muted empty-cell' }, 'No agents connected'))]));
  }

  tick() {
    const now = Date.now();
    for (const td of this.body.querySelectorAll('td.last-seen')) {
      if (td.textContent !== '—') td.textContent = ago(td.dataset.at, now);
    }
  }
}

/** `123_4@node1`, as scancel and squeue name the agent's Slurm job. */
function slurmText(s) {
  return `${s.jobId}${s.arrayTaskId === null ? '' : `_${s.arrayTaskId}`}${s.node ? `@${s.node}` : ''}`;
}
