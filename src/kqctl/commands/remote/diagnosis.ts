/**
 * Why remotely started agents did not register: their state and the end of their logs (read over the
 * same SSH connection), then the items of the troubleshooting checklist that the evidence points to.
 */
import type { SshConnection } from '../../../ssh/connect.js';
import { diagnoseAgents, indent, readableLog, type KqPorts, type RemoteStartResult } from '../../../ssh/remote-agents.js';
import { dataRootOf, stopHint, type StartFlags } from './options.js';

export interface DialContext { kqHost: string; ports: KqPorts; bind: string | undefined; sshHost: string; keyName: string | null }

export async function notRegisteredReport(conn: SshConnection, flags: StartFlags, result: RemoteStartResult,
  missing: RemoteStartResult['agents'], ctx: DialContext): Promise<string> {
  const diagnoses = await diagnoseAgents(conn, missing).catch(() => []);
  const out: string[] = [`kqctl: ${missing.length} of ${result.agents.length} kq agent(s) started on ${result.machine} did not register with kq ` +
    `within ${flags.registerTimeout / 1000}s (they dial ${ctx.kqHost}, ports ${ctx.ports.request}, ${ctx.ports.update}, ${ctx.ports.broadcast}).`];
  let logs = '';
  const alive = new Set(diagnoses.filter((d) => d.alive).map((d) => d.pid));
  for (const a of missing) {
    const tail = readableLog(diagnoses.find((d) => d.n === a.n)?.logTail ?? '');
    logs += tail + '\n';
    out.push(`agent ${a.n} (pid ${a.pid}, ${alive.has(a.pid) ? 'still running' : 'exited'}): the end of ${a.log} on ${result.machine}:`);
    out.push(tail ? indent(tail) : '  | (empty)');
  }
  const checks = checklist(flags, result, ctx, logs, missing.some((a) => !alive.has(a.pid)));
  out.push('Check:', ...checks.map((c) => `  - ${c}`));
  const running = missing.filter((a) => alive.has(a.pid)).length;
  if (running) out.push(`${running} agent(s) keep retrying; stop them with: ${stopHint(flags)}`);
  return out.join('\n') + '\n';
}

/** The troubleshooting items the agents' logs point to (the seed's checklist: resolution, firewall, bind, permissions). */
function checklist(flags: StartFlags, result: RemoteStartResult, ctx: DialContext, logs: string, someExited: boolean): string[] {
  const checks: string[] = [];
  if (someExited) {
    checks.push(`an agent exited: see its log above; is Node.js 20+ on the PATH there (or --node), and kq built in ${flags.installRoot}?`);
  }
  if (/cannot resolve kq host/.test(logs)) {
    checks.push(`host name resolution: ${result.machine} cannot resolve "${ctx.kqHost}": pass --kq-host with an IP address of this machine, or fix DNS or /etc/hosts there`);
  }
  if (/registered with kq/.test(logs)) {
    checks.push(`the agents registered with a kq, but not this one: is ${ctx.kqHost} (--kq-host) this machine, and are the ports kq's (see kq.json)?`);
  }
  if (/cannot reach kq/.test(logs) || checks.length === 0) {
    if (ctx.bind !== undefined && !['0.0.0.0', '*', '::'].includes(ctx.bind) && ctx.bind !== ctx.kqHost) {
      checks.push(`bind address: kq listens on ${ctx.bind} only but the agents dial ${ctx.kqHost}: restart kq with --bind 0.0.0.0 (or --bind ${ctx.kqHost}), or pass --kq-host ${ctx.bind}`);
    } else {
      checks.push(`bind address: kq must listen on an address ${result.machine} reaches (kq --bind 0.0.0.0 or --bind <address>), and ${ctx.kqHost} (--kq-host) must be that address`);
    }
    checks.push(`firewall: TCP ports ${ctx.ports.request}, ${ctx.ports.update}, ${ctx.ports.broadcast} must be open from ${result.machine} to this machine`);
  }
  if (ctx.keyName !== null && /cannot reach kq/.test(logs)) {
    checks.push(`CURVE keys: kq refuses agents whose key is not allowlisted: is client "${ctx.keyName}" in \`kqctl keys list\`, ` +
      `and is ${dataRootOf(flags)}/keys on ${result.machine} the copy kqctl made?`);
  }
  if (/EACCES|EROFS|permission denied/i.test(logs) || logs.trim() === '') {
    checks.push(`data root permissions: the agents must be able to write ${dataRootOf(flags)}/logs there`);
  }
  return checks;
}
