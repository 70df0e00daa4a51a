// The jobs table, virtualised: only the rows in view (plus a few) exist in the DOM, so 10,000 jobs or more
// scroll and update as fast as 20. Rows are a fixed height; their elements are reused as the view moves.

import { el, progressBar, setProgress, when } from './format.js';

const ROW_HEIGHT = 34;
const OVERSCAN = 8;

export const COLUMNS = [
  { key: 'id', label: 'Id' },
  { key: 'name', label: 'Name' },
  { key: 'state', label: 'State' },
  { key: 'progress', label: 'Progress' },
  { key: 'submittedAt', label: 'Submitted' },
  { key: 'completedAt', label: 'Completed' },
];

export class JobsTable {
  /** @param {HTMLElement} root  @param {{onSelect(id:number):void, onSort(key:string):void}} handlers */
  constructor(root, handlers) {
    this.handlers = handlers;
    this.rows = [];
    this.selected = null;
    this.pool = [];
    this.scheduled = false;
    this.head = el('div', { class: 'thead', role: 'row' }, COLUMNS.map((c) =>
      el('div', { class: `th col-${c.key}`, role: 'columnheader', tabindex: 0, dataset: { key: c.key },
        onclick: () => handlers.onSort(c.key), onkeydown: (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); handlers.onSort(c.key); } } },
      c.label, el('span', { class: 'sort-mark', 'aria-hidden': 'true' }))));
    this.spacer = el('div', { class: 'spacer' });
    this.window = el('div', { class: 'rows', role: 'rowgroup' });
    this.viewport = el('div', { class: 'viewport', tabindex: 0, 'aria-label': 'Jobs' }, this.spacer, this.window);
    this.empty = el('div', { class: 'table-empty', hidden: true });
    root.append(el('div', { class: 'table', role: 'grid', 'aria-label': 'Jobs', 'aria-rowcount': 0 }, this.head, this.viewport, this.empty));
    this.grid = root.lastChild;
    this.viewport.addEventListener('scroll', () => this.schedule(), { passive: true });
    this.viewport.addEventListener('click', (e) => {
      const row = e.target.closest('.row');
      if (row?.dataset.id) handlers.onSelect(Number(row.dataset.id));
    });
    this.viewport.addEventListener('keydown', (e) => this.onKey(e));
    new ResizeObserver(() => this.schedule()).observe(this.viewport);
  }

  /** The jobs to show, already filtered and sorted. */
  setRows(rows, emptyText = 'No jobs') {
    this.rows = rows;
    this.spacer.style.height = `${rows.length * ROW_HEIGHT}px`;
    this.grid.setAttribute('aria-rowcount', String(rows.length));
    this.empty.hidden = rows.length > 0;
    this.empty.textContent = emptyText;
    this.schedule();
  }

  setSort(key, dir) {
    for (const th of this.head.children) {
      const on = th.dataset.key === key;
      th.setAttribute('aria-sort', on ? (dir === 'asc' ? 'ascending' : 'descending') : 'none');
      th.lastChild.textContent = on ? (dir === 'asc' ? '▲' : '▼') : '';
    }
  }

  setSelected(id) {
    this.selected = id;
    this.schedule();
  }

  /** Scroll so the job is in view (if it is in the table). */
  reveal(id) {
    const i = this.rows.findIndex((j) => j.id === id);
    if (i < 0) return;
    const top = i * ROW_HEIGHT;
    const vp = this.viewport;
    if (top < vp.scrollTop) vp.scrollTop = top;
    else if (top + ROW_HEIGHT > vp.scrollTop + vp.clientHeight) vp.scrollTop = top + ROW_HEIGHT - vp.clientHeight;
  }

  schedule() {
    if (this.scheduled) return;
    this.scheduled = true;
    requestAnimationFrame(() => {
      this.scheduled = false;
      this.render();
    });
  }

  render() {
    const vp = this.viewport;
    const first = Math.max(0, Math.floor(vp.scrollTop / ROW_HEIGHT) - OVERSCAN);
    const count = Math.min(this.rows.length - first, Math.ceil(vp.clientHeight / ROW_HEIGHT) + 2 * OVERSCAN);
    while (this.pool.length < count) this.pool.push(this.makeRow());
    this.window.style.transform = `translateY(${first * ROW_HEIGHT}px)`;
    this.window.replaceChildren(...this.pool.slice(0, Math.max(0, count)));
    for (let i = 0; i < count; i++) this.fillRow(this.pool[i], this.rows[first + i], first + i);
  }

  makeRow() {
    const cells = {
      id: el('div', { class: 'td col-id', role: 'gridcell' }),
      name: el('div', { class: 'td col-name', role: 'gridcell' }),
      state: el('div', { class: 'td col-state', role: 'gridcell' }, el('span', { class: 'badge' })),
      progress: el('div', { class: 'td col-progress', role: 'gridcell' }, progressBar()),
      submittedAt: el('div', { class: 'td col-submittedAt', role: 'gridcell' }),
      completedAt: el('div', { class: 'td col-completedAt', role: 'gridcell' }),
    };
    const row = el('div', { class: 'row', role: 'row' }, Object.values(cells));
    row.cells = cells;
    return row;
  }

  fillRow(row, job, index) {
    const { cells } = row;
    if (row.job === job && row.selectedState === (job.id === this.selected)) return; // unchanged
    row.job = job;
    row.selectedState = job.id === this.selected;
    row.dataset.id = String(job.id);
    row.setAttribute('aria-rowindex', String(index + 1));
    row.setAttribute('aria-selected', String(job.id === this.selected));
    row.classList.toggle('selected', job.id === this.selected);
    cells.id.textContent = String(job.id);
    cells.name.textContent = job.name;
    cells.name.title = job.name;
    const b = cells.state.firstChild;
    b.className = `badge state-${job.state}`;
    b.textContent = job.paused ? `${job.state} · paused` : job.state;
    setProgress(cells.progress.firstChild, job);
    cells.submittedAt.textContent = when(job.submittedAt);
    cells.completedAt.textContent = when(job.completedAt);
  }

  onKey(e) {
    if (!['ArrowDown', 'ArrowUp', 'j', 'k', 'Home', 'End'].includes(e.key) || this.rows.length === 0) return;
    e.preventDefault();
    let i = this.rows.findIndex((j) => j.id === this.selected);
    if (e.key === 'Home') i = 0;
    else if (e.key === 'End') i = this.rows.length - 1;
    else i = Math.max(0, Math.min(this.rows.length - 1, i + (e.key === 'ArrowDown' || e.key === 'j' ? 1 : -1)));
    this.handlers.onSelect(this.rows[i].id);
    this.reveal(this.rows[i].id);
  }
}
