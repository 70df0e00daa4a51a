/**
 * Which Slurm jobs are this kq's agents. Slurm itself is the record: every agent job kq or kqctl submits
 * is named after this kq's id (kept in <kq data root>/slurm/kq-id), so squeue finds them again after a
 * kq restart, and `kqctl slurm stop` cancels exactly them and nobody else's.
 *   kq-agents-<id>   submitted by `kqctl slurm start`
 *   kq-auto-<id>     submitted by kq --slurm-autoscale (the autoscaler releases only these)
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

export function kqSlurmId(kqDataRoot: string): string {
  const file = path.join(kqDataRoot, 'slurm', 'kq-id');
  try {
    const id = fs.readFileSync(file, 'utf8').trim();
    if (/^[a-f0-9]{8,32}$/.test(id)) return id;
  } catch { /* first use */ }
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const id = crypto.randomBytes(4).toString('hex');
  try {
    fs.writeFileSync(file, id + '\n', { flag: 'wx' });
    return id;
  } catch {
    return fs.readFileSync(file, 'utf8').trim(); // another process wrote it first: use theirs
  }
}

export const agentJobNames = (kqDataRoot: string) => {
  const id = kqSlurmId(kqDataRoot);
  return { started: `kq-agents-${id}`, autoscaled: `kq-auto-${id}` };
};
