/** Where Slurm placed this agent, from the variables Slurm sets in a batch job's environment. */
import type { SlurmPlacement } from '../protocol/index.js';

export function slurmPlacement(env: NodeJS.ProcessEnv): SlurmPlacement | null {
  const num = (v: string | undefined) => (v !== undefined && /^\d+$/.test(v) ? Number(v) : null);
  // In a job array, SLURM_ARRAY_JOB_ID is the id scancel and squeue show (123 in 123_4); SLURM_JOB_ID is the task's own.
  const jobId = num(env.SLURM_ARRAY_JOB_ID) ?? num(env.SLURM_JOB_ID);
  if (jobId === null) return null;
  return { jobId, arrayTaskId: num(env.SLURM_ARRAY_TASK_ID), node: (env.SLURMD_NODENAME ?? '').slice(0, 255) };
}
