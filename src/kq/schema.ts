/** The job table's SQL schema. Only the daemon opens the database. */
export const SCHEMA_VERSION = 1;

export const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  name TEXT NOT NULL,
  argv TEXT NOT NULL,
  frame_spec TEXT,
  chunk INTEGER NOT NULL,
  priority INTEGER NOT NULL,
  cwd TEXT,
  env TEXT NOT NULL,
  max_attempts INTEGER NOT NULL,
  timeout_ms INTEGER,
  shell INTEGER NOT NULL,
  state TEXT NOT NULL,
  submitted_at TEXT NOT NULL,
  completed_at TEXT,
  frames_total INTEGER NOT NULL,
  frames_done INTEGER NOT NULL DEFAULT 0,
  n_waiting INTEGER NOT NULL DEFAULT 0,
  n_running INTEGER NOT NULL DEFAULT 0,
  n_completed INTEGER NOT NULL DEFAULT 0,
  n_failed INTEGER NOT NULL DEFAULT 0,
  n_cancelled INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS tasks (
  -- a task id is never used twice, even after the job holding the highest ones is removed (an agent
  -- repeats its last outcome by task id and attempt: a reused id would let it end a newer task).
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  job_id INTEGER NOT NULL REFERENCES jobs(id),
  seq INTEGER NOT NULL,
  frames TEXT NOT NULL,
  n_frames INTEGER NOT NULL,
  priority INTEGER NOT NULL,
  state TEXT NOT NULL,
  -- attempts counts dispatches: it is the assignment's epoch, so stale messages can be told apart.
  attempts INTEGER NOT NULL DEFAULT 0,
  -- fails counts failed runs: the retry limit applies to it.
  fails INTEGER NOT NULL DEFAULT 0,
  -- the host this task last failed on: a retry goes elsewhere while another host can take it.
  last_failed_host TEXT,
  agent_id TEXT,
  host TEXT,
  pid INTEGER,
  exit_code INTEGER,
  reason TEXT,
  started_at TEXT,
  finished_at TEXT
);
CREATE INDEX IF NOT EXISTS tasks_queue ON tasks (state, priority DESC, job_id, seq);
CREATE INDEX IF NOT EXISTS tasks_by_job ON tasks (job_id, seq);
CREATE INDEX IF NOT EXISTS tasks_by_agent ON tasks (agent_id) WHERE state = 'running';
CREATE TABLE IF NOT EXISTS agents (
  id TEXT PRIMARY KEY,
  host TEXT NOT NULL,
  pid INTEGER NOT NULL,
  local INTEGER NOT NULL,
  state TEXT NOT NULL,
  task_id INTEGER,
  epoch TEXT NOT NULL,
  registered_at TEXT NOT NULL,
  last_seen INTEGER NOT NULL
);
-- The items of --each jobs: task frames are indices into them.
CREATE TABLE IF NOT EXISTS job_items (
  job_id INTEGER NOT NULL,
  idx INTEGER NOT NULL,
  item TEXT NOT NULL,
  PRIMARY KEY (job_id, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS failures (
  job_id INTEGER NOT NULL,
  host TEXT NOT NULL,
  count INTEGER NOT NULL,
  PRIMARY KEY (job_id, host)
);
-- submit --after: job_id waits until after_id has Completed (kept after that, for show).
CREATE TABLE IF NOT EXISTS job_deps (
  job_id INTEGER NOT NULL,
  after_id INTEGER NOT NULL,
  PRIMARY KEY (job_id, after_id)
);
CREATE INDEX IF NOT EXISTS job_deps_by_parent ON job_deps (after_id);
CREATE TABLE IF NOT EXISTS blocklist (
  job_id INTEGER NOT NULL,
  host TEXT NOT NULL,
  PRIMARY KEY (job_id, host)
);
`;

/**
 * Columns added after SCHEMA_VERSION 1, for databases created before them: [table, column, declaration].
 * Each is nullable, so old rows need no rewrite.
 */
const ADDED_COLUMNS: Array<[string, string, string]> = [
  ['jobs', 'items', 'INTEGER'], // --each: how many items (in job_items); NULL for other jobs
  ['jobs', 'output', 'TEXT'], // the job's output pattern (the monitor's thumbnails)
  ['tasks', 'progress', 'REAL'], // percent done of the current attempt, parsed from its log
  // tasks of a big job not inserted yet: they are counted as waiting and inserted in batches (store.continueJob)
  ['jobs', 'tasks_unqueued', 'INTEGER'],
  // a stop or restart whose task rows are still being changed in batches: 'stop', 'restart', 'restart-failed'
  ['jobs', 'bulk_change', 'TEXT'],
  ['agents', 'session', 'TEXT'], // the current registration: updates must carry it
  ['agents', 'confirmed', 'INTEGER NOT NULL DEFAULT 0'], // 1 once a heartbeat carried the session: only then is work dispatched
  ['agents', 'slurm', 'TEXT'], // JSON SlurmPlacement of an agent running as a Slurm job
  // queue control (issue 17): parents not Completed yet (>0: Blocked), paused by kqctl pause, the parent whose end cancelled it
  ['jobs', 'waiting_for', 'INTEGER NOT NULL DEFAULT 0'],
  ['jobs', 'paused', 'INTEGER NOT NULL DEFAULT 0'],
  ['jobs', 'cancelled_by', 'INTEGER'],
  // 1 while the task's job is paused or blocked: the claim query skips it (a copy, like priority, so it is indexed)
  ['tasks', 'held', 'INTEGER NOT NULL DEFAULT 0'],
  // hex of the ROUTER routing id of the connection that registered (kq-generated: a peer cannot choose it):
  // assignments go there, so no other connection can take an agent's work by claiming its id
  ['agents', 'route', 'TEXT'],
  ['tasks', 'signal', 'TEXT'], // the signal that ended the last failed run
  ['tasks', 'stderr_tail', 'TEXT'], // JSON array: the last stderr lines of the last failed run
  // prefetch: the task the agent holds to start when its current one ends (Running in the store, pid NULL until started)
  ['agents', 'next_task_id', 'INTEGER'],
  ['agents', 'prefetch', 'INTEGER NOT NULL DEFAULT 0'], // 1: the agent said it takes a second assignment while busy
  // "taskId.attempt" of the last two outcomes kq took from this agent: the agent repeats them (heartbeats, register)
  // until its next assignment, and a repeat is never news about another task
  ['agents', 'last_outcome', 'TEXT'],
  // runs of the task cut short by its agent dying (killed, crashed, its machine lost): a render that kills
  // its agent fails after a few, instead of killing agents forever (a polite hand-back is not counted)
  ['tasks', 'interruptions', 'INTEGER NOT NULL DEFAULT 0'],
  // 1: removed (kqctl rm, clean, --keep-finished): hidden at once, its rows deleted in batches (store.continueJob)
  ['jobs', 'removed', 'INTEGER NOT NULL DEFAULT 0'],
];

/** Indexes over added columns: created once those columns exist. */
const AFTER_MIGRATION = `
CREATE INDEX IF NOT EXISTS tasks_ready ON tasks (state, held, priority DESC, job_id, seq);
-- dispatch looks for idle agents after every finished task: without scanning a big farm's every agent
CREATE INDEX IF NOT EXISTS agents_idle ON agents (epoch, last_seen) WHERE state = 'idle' AND confirmed = 1;
-- and, with prefetch, for busy agents with a free slot (a farm's busy agents are most of it)
CREATE INDEX IF NOT EXISTS agents_prefetchable ON agents (epoch, last_seen)
  WHERE state = 'busy' AND prefetch = 1 AND task_id IS NOT NULL AND next_task_id IS NULL AND confirmed = 1;
`;

export function addMissingColumns(db: { prepare(sql: string): { all(): unknown[] }; exec(sql: string): unknown }): void {
  for (const [table, column, decl] of ADDED_COLUMNS) {
    const have = (db.prepare(`PRAGMA table_info(${table})`).all() as Array<{ name: string }>).some((c) => c.name === column);
    if (!have) db.exec(`ALTER TABLE ${table} ADD COLUMN ${column} ${decl}`);
  }
  db.exec(AFTER_MIGRATION);
}

/**
 * Tables made before task ids were AUTOINCREMENT are rebuilt once, at open: the same columns (read from
 * the table itself), every row, every index. One transaction: a kill -9 midway leaves the old table whole,
 * and the next open does it again. Ids continue after the highest in the table.
 */
export function migrateTaskIds(db: { prepare(sql: string): { get(): unknown; all(): unknown[] }; exec(sql: string): unknown; pragma(sql: string): unknown;
  transaction(fn: () => void): { immediate(): void } }): boolean {
  const table = db.prepare(`SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'tasks'`).get() as { sql: string } | undefined;
  if (!table || /\bAUTOINCREMENT\b/i.test(table.sql.replace(/--[^\n]*/g, ''))) return false;
  const columns = (db.prepare(`PRAGMA table_info(tasks)`).all() as Array<{ name: string }>).map((c) => `"${c.name}"`).join(', ');
  const indexes = (db.prepare(`SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'tasks' AND sql IS NOT NULL`).all() as Array<{ sql: string }>).map((r) => r.sql);
  // The table's own definition (columns added later included), with the id made AUTOINCREMENT.
  const created = table.sql.replace(/^CREATE TABLE\s+("tasks"|tasks)\s*\(/i, 'CREATE TABLE tasks_autoincrement (');
  const definition = created.replace(/\bid\s+INTEGER\s+PRIMARY\s+KEY\b/i, 'id INTEGER PRIMARY KEY AUTOINCREMENT');
  if (created === table.sql || definition === created) throw new Error(`cannot migrate the tasks table: unexpected definition ${table.sql}`);
  // Foreign keys off while the table is swapped (SQLite's documented way; a no-op inside a transaction).
  db.pragma('foreign_keys = OFF');
  try {
    db.transaction(() => {
      db.exec(`DROP TABLE IF EXISTS tasks_autoincrement`);
      db.exec(definition);
      db.exec(`INSERT INTO tasks_autoincrement (${columns}) SELECT ${columns} FROM tasks`);
      db.exec(`DROP TABLE tasks`);
      db.exec(`ALTER TABLE tasks_autoincrement RENAME TO tasks`);
      for (const sql of indexes) db.exec(sql);
    }).immediate();
  } finally {
    db.pragma('foreign_keys = ON');
  }
  return true;
}
