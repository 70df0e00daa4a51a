/**
 * Protocol values that carry no schema: importing them does not load zod, which keeps kqctl's start-up
 * short (kqctl trusts kq's replies and reads them without validating every field).
 */
/** The environment variable through which kq gives its local agents their proof (see register's localProof). */
export const LOCAL_AGENT_PROOF_ENV = 'KQ_LOCAL_AGENT_PROOF';

/** The longest task timeout: a Node timer longer than 2^31-1 ms (24.8 days) fires after 1 ms. */
export const MAX_TIMEOUT_MS = 2_147_483_647;

/** Blocked: waiting for the jobs it was submitted `--after` to complete (issue 17). */
export const JOB_STATES = ['Waiting', 'Blocked', 'Running', 'Completed', 'Cancelled', 'Failed'] as const;
export type JobState = (typeof JOB_STATES)[number];
export const isTerminalState = (s: JobState) => s === 'Completed' || s === 'Failed' || s === 'Cancelled';

/**
 * Broadcast topics (the first frame of every PUB message). A ZeroMQ subscription is a byte prefix, so every
 * topic ends with `/`: `log.1/` is not a prefix of `log.10/`. Receivers still compare the whole topic, since
 * an agent id may itself contain `/`.
 */
export const Topics = {
  agent: (agentId: string) => `agent.${agentId}/`,
  allAgents: 'agents/',
  log: (jobId: number) => `log.${jobId}/`,
  job: (jobId: number) => `job.${jobId}/`,
  /** A subscription prefix only (no message carries it): every job's topic. */
  allJobs: 'job.',
  /** The queue as a whole: paused/resumed, jobs removed. */
  queue: 'queue/',
} as const;
