// Launch Remote Agents (issue 17), the seed's Katana shelf dialog: host, SSH user and key, number of agents,
// install root and data root. kq runs `kqctl remote start` with them; the dialog shows its steps as they
// happen and, when it fails, kqctl's own diagnosis. The new agents appear in the Agents table by themselves.
// Keyboard: "l" or the button opens it, Enter launches, Esc closes.

import { api } from './api.js';
import { el } from './format.js';

const POLL_MS = 300;

export class RemoteAgentsDialog {
  /** @param {HTMLElement} bar  @param {{toast(text:string, kind?:string):void}} ui */
  constructor(bar, ui) {
    this.ui = ui;
    this.polling = null;
    const field = (name, label, attrs = {}) => el('label', { class: 'field' }, el('span', {}, label),
      el('input', { name, id: `remote-${name}`, autocomplete: 'off', ...attrs }));
    this.error = el('p', { id: 'remote-error', class: 'form-error', role: 'alert', hidden: true });
    this.status = el('p', { id: 'remote-status', class: 'remote-status', role: 'status', 'aria-live': 'polite' });
    this.progress = el('ol', { id: 'remote-progress', class: 'remote-progress', 'aria-label': 'Launch progress' });
    this.diagnosis = el('pre', { id: 'remote-diagnosis', class: 'remote-diagnosis', hidden: true });
    this.launchButton = el('button', { class: 'btn primary', type: 'submit', id: 'remote-ok' }, 'Launch');
    this.form = el('form', { method: 'dialog', class: 'submit-form', novalidate: true },
      el('h2', { id: 'remote-title' }, 'Launch remote agents'),
      el('p', { class: 'muted' }, 'kq logs in over SSH and runs scripts/StartAgents.sh there (kqctl remote start); the agents dial back into kq.'),
      field('host', 'Host', { placeholder: 'render2 or 192.0.2.10', required: true, autocapitalize: 'off', spellcheck: 'false' }),
      field('sshPort', 'SSH port', { inputmode: 'numeric', placeholder: '22' }),
      field('user', 'SSH user', { autocapitalize: 'off', spellcheck: 'false' }),
      field('identity', 'SSH key', { placeholder: "default: kq's ssh-agent, then ~/.ssh/id_ed25519…", spellcheck: 'false' }),
      field('numAgents', 'Agents', { inputmode: 'numeric', value: '2' }),
      field('installRoot', 'Install root', { spellcheck: 'false' }),
      field('dataRoot', 'Data root', { placeholder: 'default: ~/.local/share/kq there', spellcheck: 'false' }),
      el('label', { class: 'check' }, el('input', { type: 'checkbox', name: 'acceptNewHostKey', id: 'remote-acceptNewHostKey' }),
        ' Trust a host key seen for the first time (a changed key is always refused)'),
      this.error, this.status, this.progress, this.diagnosis,
      el('div', { class: 'dialog-buttons' },
        el('button', { class: 'btn', type: 'button', id: 'remote-close', onclick: () => this.dialog.close() }, 'Close'),
        this.launchButton));
    this.form.addEventListener('submit', (e) => {
      e.preventDefault();
      void this.launch();
    });
    this.dialog = el('dialog', { id: 'remote-dialog', class: 'confirm submit-dialog remote-dialog', 'aria-labelledby': 'remote-title' }, this.form);
    document.body.append(this.dialog);
    this.button = el('button', { id: 'remote-open', class: 'btn', type: 'button', title: 'Launch agents on another machine over SSH (l)',
      'aria-haspopup': 'dialog', onclick: () => this.open() }, 'Launch remote agents…');
    bar.append(this.button);
    document.addEventListener('keydown', (e) => {
      if (e.key === 'l' && !e.ctrlKey && !e.metaKey && !e.altKey && !(e.target instanceof HTMLInputElement) && !document.querySelector('dialog[open]')) {
        e.preventDefault();
        this.open();
      }
    });
    this.defaultsLoaded = false;
  }

  async open() {
    this.error.hidden = true;
    this.dialog.showModal();
    this.form.elements.host.focus();
    if (!this.defaultsLoaded) {
      try {
        const { defaults } = await api('/api/remote-agents');
        const f = this.form.elements;
        if (!f.user.value) f.user.value = defaults.user;
        if (!f.installRoot.value) f.installRoot.value = defaults.installRoot;
        this.defaultsLoaded = true;
      } catch (err) {
        this.fail(`cannot read the defaults: ${err.message}`);
      }
    }
  }

  /** The form's values → the body of POST /api/remote-agents (kq checks every field). */
  body() {
    const f = this.form.elements;
    const number = (v) => (v.trim() === '' ? undefined : /^\d+$/.test(v.trim()) ? Number(v.trim()) : v.trim());
    return {
      host: f.host.value.trim(), sshPort: number(f.sshPort.value), user: f.user.value.trim(), identity: f.identity.value.trim(),
      numAgents: number(f.numAgents.value) ?? 2, installRoot: f.installRoot.value.trim(), dataRoot: f.dataRoot.value.trim(),
      acceptNewHostKey: f.acceptNewHostKey.checked,
    };
  }

  async launch() {
    if (this.polling) return this.fail('a launch is running: wait for it to end');
    this.error.hidden = true;
    // The last launch's outcome goes at once: what shows from now on is this one's.
    this.show({ id: null, state: 'running', numAgents: this.body().numAgents, host: this.body().host, progress: [], messages: '' });
    let launch;
    try {
      launch = await api('/api/remote-agents', { method: 'POST', body: this.body() });
    } catch (err) {
      this.status.textContent = ''; // nothing was started
      return this.fail(err.message);
    }
    this.launchButton.disabled = true;
    this.show(launch);
    this.polling = setInterval(() => void this.poll(launch.id), POLL_MS);
  }

  async poll(id) {
    let launch;
    try {
      launch = await api(`/api/remote-agents/${id}`);
    } catch (err) {
      this.stopPolling();
      return this.fail(`lost the launch: ${err.message}`);
    }
    this.show(launch);
    if (launch.state !== 'running') {
      this.stopPolling();
      if (launch.state === 'succeeded') this.ui.toast(`Started ${launch.numAgents} agent(s) on ${launch.host}`, 'ok');
    }
  }

  stopPolling() {
    clearInterval(this.polling);
    this.polling = null;
    this.launchButton.disabled = false;
  }

  show(launch) {
    this.dialog.dataset.state = launch.state;
    this.status.textContent = launch.state === 'running' ? `Launching ${launch.numAgents} agent(s) on ${launch.host}…`
      : launch.state === 'succeeded' ? `Started ${launch.numAgents} agent(s) on ${launch.result?.machine ?? launch.host}: all registered with kq.`
        : `Failed (exit ${launch.exitCode ?? '—'}: ${launch.reason}).`;
    if (this.shown !== launch.id || this.progress.childElementCount !== launch.progress.length) {
      this.shown = launch.id;
      this.progress.replaceChildren(...launch.progress.map((p) => el('li', {}, p)));
      this.progress.scrollTop = this.progress.scrollHeight; // the latest step in view
    }
    const text = launch.messages.trim();
    this.diagnosis.textContent = text;
    this.diagnosis.hidden = text === '';
    this.diagnosis.classList.toggle('failed', launch.state === 'failed');
  }

  fail(message) {
    this.error.textContent = message;
    this.error.hidden = false;
  }
}
