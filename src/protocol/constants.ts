/**
 * Protocol values that carry no schema: importing them does not load zod, which keeps kqctl's start-up
 * short (kqctl trusts kq's replies and reads them without validating every field).
 */
export const JOB_STATES = ['Waiting', 'Running', 'Completed', 'Cancelled', 'Failed'] as const;
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
} as const;
