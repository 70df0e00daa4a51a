/**
 * Remote agents over SSH, against a real OpenSSH server: `kqctl remote start` runs StartAgents.sh there,
 * the agents dial back into a real kq and render; `kqctl remote stop` leaves none running. Host keys,
 * client keys, script argument checks, paths with spaces, and (where allowed) a separate network namespace.
 */
import fs from 'node:fs';
import path from 'node:path';
import { execa, execaSync } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { Kq, ROOT, cleanupAll, isRunning, kqctl, processesMatching, tempDir, waitFor } from './helpers/kq.js';
import { Sshd, freePort, keygen } from './helpers/sshd.js';
import { readPng } from './helpers/png.js';

const START = path.join(ROOT, 'scripts', 'StartAgents.sh');
const STOP = path.join(ROOT, 'scripts', 'StopAgents.sh');
const SCENE = path.join(ROOT, 'test', 'fixtures', 'spin.pov');

const kqs: Kq[] = [];
const sshds: Sshd[] = [];
const agentDataRoots = new Set<string>();
let sharedSshd: Sshd | null = null;
let sharedKq: Kq | null = null;

/** A network namespace joined to this one by a veth pair, or null where the machine does not allow it. */
const NETNS = setUpNetns();

afterAll(async () => {
  for (const root of agentDataRoots) await execa('sh', [STOP, root, '1'], { reject: false });
  for (const s of sshds) await s.stop().catch(() => undefined);
  await cleanupAll(kqs);
  if (NETNS) execaSync('ip', ['netns', 'del', NETNS.name], { reject: false });
});

async function startKq(args: string[] = []): Promise<Kq> {
  const kq = await Kq.start({ numAgents: 0, args });
  kqs.push(kq);
  return kq;
}

async function startSshd(o: Parameters<typeof Sshd.start>[0] = {}): Promise<Sshd> {
  const s = await Sshd.start(o);
  sshds.push(s);
  return s;
}

/** A kq for tests that need one to be reachable but count no agents on it. */
async function anyKq(): Promise<Kq> {
  sharedKq ??= await startKq();
  return sharedKq;
}

async function sshd(): Promise<Sshd> {
  sharedSshd ??= await startSshd();
  return sharedSshd;
}

function agentDataRoot(name = 'agents data'): string {
  const root = path.join(tempDir('kq-remote-'), name);
  agentDataRoots.add(root);
  return root;
}

/** `kqctl remote start|stop` against this sshd and kq. */
function remote(kq: Kq, server: Sshd, cmd: 'start' | 'stop', args: string[], sshArgs = server.sshArgs()) {
  return kqctl(['remote', cmd, ...sshArgs, '--kq-data-root', kq.dataRoot, ...PATIENT, ...args]);
}

/** kqctl flags for a machine that may be busy (the default gives up on kq after 2 s). */
const PATIENT = ['--connect-timeout', '15s'];
const remoteAgents = async (kq: Kq) => (await kq.json('agents', ...PATIENT)).filter((a: any) => !a.local);

async function submit(kq: Kq, ...args: string[]): Promise<number> {
  const r = await kq.ctl('submit', ...PATIENT, ...args);
  if (r.exitCode !== 0) throw new Error(`submit failed (${r.exitCode}): ${r.stderr}`);
  return Number(r.stdout.trim().split('\n')[0]);
}

function waitJob(kq: Kq, id: number): Promise<any> {
  return waitFor(`job ${id} to end`, async () => {
    const job = await kq.json('show', String(id), ...PATIENT);
    return ['Completed', 'Failed', 'Cancelled'].includes(job.state) ? job : null;
  }, 90_000, 200);
}

describe('kqctl remote start / stop', () => {
  it('starts agents over SSH that register with kq (CURVE) and render a job, and stops them all', async () => {
    const kq = await startKq(['--secure']); // CURVE on loopback too: the agents need kq's key and an allowed key pair
    const server = await sshd();
    const data = agentDataRoot();
    const t0 = Date.now();
    const started = await remote(kq, server, 'start', ['--num-agents', '4', '--install-root', ROOT, '--data-root', data]);
    const seconds = (Date.now() - t0) / 1000;
    expect(started.stderr).toBe('kqctl: kq requires CURVE: allowed a new client "127.0.0.1" for the agents on 127.0.0.1 (kqctl keys revoke 127.0.0.1 refuses them)');
    expect(started.exitCode).toBe(0);
    expect(started.stdout).toMatch(/^started 4 kq agent\(s\) on \S+ via root@127\.0\.0\.1:\d+, dialing kq at 127\.0\.0\.1; all registered in [\d.]+s$/m);
    console.log(`kqctl remote start --num-agents 4 took ${seconds.toFixed(1)}s`);

    const agents = await remoteAgents(kq);
    expect(agents).toHaveLength(4);
    const pids = agents.map((a) => a.pid).sort();
    const pidFiles = fs.readdirSync(path.join(data, 'run')).sort();
    expect(pidFiles).toEqual(['remote_agent_1.pid', 'remote_agent_2.pid', 'remote_agent_3.pid', 'remote_agent_4.pid']);
    expect(pidFiles.map((f) => Number(fs.readFileSync(path.join(data, 'run', f), 'utf8'))).sort()).toEqual(pids);
    for (const pid of pids) {
      const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      expect(argv.slice(1, -1)).toEqual([path.join(ROOT, 'bin', 'kq-agent.js'), '--minimal-env', 'True', '--request-port', String(kq.info.requestPort),
        '--update-port', String(kq.info.updatePort), '--broadcast-port', String(kq.info.broadcastPort), '127.0.0.1']);
      expect(started.stdout).toContain(String(pid));
      // Keys reach the agent as file paths in its environment, never on its command line.
      const env = fs.readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
      expect(env).toContain(`KQ_KEY_FILE=${data}/keys/127.0.0.1.key_secret`);
      expect(env).toContain(`KQ_SERVER_KEY=${data}/keys/server.key`);
    }
    expect(fs.statSync(path.join(data, 'keys')).mode & 0o777).toBe(0o700);
    expect(fs.readdirSync(path.join(data, 'keys')).sort()).toEqual(['127.0.0.1.key_secret', 'server.key']); // no temp files left
    expect(fs.statSync(path.join(data, 'keys', '127.0.0.1.key_secret')).mode & 0o777).toBe(0o600);
    expect(fs.readFileSync(path.join(data, 'keys', '127.0.0.1.key_secret'), 'utf8'))
      .toBe(fs.readFileSync(path.join(kq.dataRoot, 'keys', 'clients', '127.0.0.1.key_secret'), 'utf8'));
    expect((await kq.ctl('keys', 'list')).stdout).toMatch(/^127\.0\.0\.1\s+\S{40}$/m);

    const id = await submit(kq, '--name', 'remote echo', '--frames', '1-8', '--chunk', '1', '--', 'sh', '-c', 'echo "frame {frame} rendered by $PPID"');
    const job = await waitJob(kq, id);
    expect(job.state).toBe('Completed');
    expect(job.framesDone).toBe(8);
    const agentIds = new Set(agents.map((a) => a.id));
    for (const t of job.taskList) expect(agentIds.has(t.agentId)).toBe(true);
    const log = (await kq.ctl('log', String(id), ...PATIENT)).stdout;
    for (let f = 1; f <= 8; f++) expect(log).toContain(`frame ${f} rendered by`);

    const stopped = await remote(kq, server, 'stop', ['--install-root', ROOT, '--data-root', data]);
    expect(stopped.exitCode).toBe(0);
    for (const pid of pids) expect(stopped.stdout).toMatch(new RegExp(`^stopped kq agent \\d \\(pid ${pid}\\)$`, 'm'));
    expect(stopped.stdout).toMatch(/^stopped 4 kq agent\(s\) on /m);
    for (const pid of pids) expect(isRunning(pid)).toBe(false);
    expect(processesMatching(`--request-port ${kq.info.requestPort} `)).toEqual([]);
    expect(fs.readdirSync(path.join(data, 'run'))).toEqual([]);
    await waitFor('agents offline in kq', async () => (await kq.json('agents', '--all', ...PATIENT)).filter((a: any) => !a.local).every((a: any) => a.state === 'offline'));
  });

  // Another local user must never get the agents' secret: kq refuses a data root or keys directory it does
  // not own alone, before writing anything, and takes back the client it allowed for this start.
  const IS_ROOT = process.getuid?.() === 0;
  const NOBODY = 65534;
  it.skipIf(!IS_ROOT)('refuses a data root or keys directory another user owns or can write (needs root to stage files owned by uid 65534)', async () => {
    const kq = await startKq(['--secure']);
    const server = await sshd();
    const keysList = async () => (await kq.ctl('keys', 'list')).stdout;
    const start = (data: string, ...more: string[]) =>
      remote(kq, server, 'start', ['--num-agents', '1', '--install-root', ROOT, '--data-root', data, ...more]);

    // uid nobody prepared the shared data root: keys/ 0777 and an empty secret file 0666 waiting for kq to fill.
    const hostile = agentDataRoot();
    fs.mkdirSync(path.join(hostile, 'keys'), { recursive: true });
    fs.writeFileSync(path.join(hostile, 'keys', '127.0.0.1.key_secret'), '');
    for (const [p, mode] of [[hostile, 0o777], [path.join(hostile, 'keys'), 0o777], [path.join(hostile, 'keys', '127.0.0.1.key_secret'), 0o666]] as const) {
      fs.chownSync(p, NOBODY, NOBODY);
      fs.chmodSync(p, mode);
    }
    const r = await start(hostile);
    expect(r.stderr).toContain(`refusing ${hostile}: owned by uid ${NOBODY}, not by the SSH user (uid 0)`);
    expect(r.exitCode).toBe(2);
    const secret = path.join(hostile, 'keys', '127.0.0.1.key_secret');
    expect(fs.statSync(secret).size).toBe(0);
    expect(fs.statSync(secret).uid).toBe(NOBODY);
    expect(await keysList()).not.toMatch(/^127\.0\.0\.1\s/m);
    expect(await remoteAgents(kq)).toEqual([]);

    // Ours, but writable by others, or a symlink: refused too, naming the directory.
    const open = agentDataRoot('open');
    fs.mkdirSync(path.join(open, 'keys'), { recursive: true, mode: 0o700 });
    fs.chmodSync(path.join(open, 'keys'), 0o777);
    const r2 = await start(open);
    expect(r2.stderr).toContain(`refusing ${open}/keys: mode 0777, writable by others`);
    expect(r2.exitCode).toBe(2);
    expect(fs.readdirSync(path.join(open, 'keys'))).toEqual([]);

    const linked = agentDataRoot('linked');
    fs.mkdirSync(linked, { recursive: true });
    const elsewhere = fs.mkdtempSync(path.join(path.dirname(linked), 'elsewhere-'));
    fs.chownSync(elsewhere, NOBODY, NOBODY);
    fs.symlinkSync(elsewhere, path.join(linked, 'keys'));
    const r3 = await start(linked);
    expect(r3.stderr).toContain(`refusing ${linked}/keys: a symbolic link`);
    expect(r3.exitCode).toBe(2);
    expect(fs.readdirSync(elsewhere)).toEqual([]);
    expect(await keysList()).not.toMatch(/^127\.0\.0\.1\s/m);

    // A start that fails after the keys were copied (no scripts there) takes back the client it allowed.
    const fine = agentDataRoot('fine');
    const r4 = await start(fine, '--install-root', path.join(tempDir(), 'no kq here'));
    expect(r4.exitCode).toBe(2);
    expect(r4.stderr).toContain('allowed a new client "127.0.0.1"');
    expect(r4.stderr).toContain('took back the client "127.0.0.1"');
    expect(await keysList()).not.toMatch(/^127\.0\.0\.1\s/m);
    expect(fs.existsSync(path.join(kq.dataRoot, 'keys', 'clients', '127.0.0.1.key_secret'))).toBe(false);
  });

  it('copies missing scripts over SFTP (--install-scripts) and handles spaces and quotes in paths', async () => {
    const kq = await startKq();
    const server = await sshd();
    // An install whose path has a space, without scripts/: bin, dist and node_modules are the repository's.
    const install = path.join(tempDir('kq-install-'), 'kq install');
    fs.mkdirSync(install);
    for (const entry of ['bin', 'dist', 'node_modules', 'package.json']) fs.symlinkSync(path.join(ROOT, entry), path.join(install, entry));
    // A line break cannot be quoted for csh: refused before anything runs there.
    const lineBreak = agentDataRoot('line\nbreak');
    const broken = await remote(kq, server, 'start', ['--num-agents', '1', '--install-root', install, '--data-root', lineBreak, '--install-scripts']);
    expect(broken.stderr).toBe(`kqctl: a value on the remote command line cannot contain a line break (csh and tcsh cannot quote one): ${JSON.stringify(lineBreak)}`);
    expect(broken.exitCode).toBe(2);
    expect(fs.existsSync(path.join(install, 'scripts'))).toBe(false);
    // Quotes, backslashes and ! (special in fish and csh even inside single quotes) reach the script as they are.
    const data = agentDataRoot("it's a \\'data! root");
    const args = ['--num-agents', '2', '--install-root', install, '--data-root', data];

    const refused = await remote(kq, server, 'start', args);
    expect(refused.exitCode).toBe(2);
    expect(refused.stderr).toContain(`StartAgents.sh and StopAgents.sh not found in ${install}/scripts on 127.0.0.1`);
    expect(refused.stderr).toContain('--install-scripts');
    expect(fs.existsSync(data)).toBe(false);

    const started = await remote(kq, server, 'start', [...args, '--install-scripts']);
    expect(started.exitCode).toBe(0);
    expect(started.stderr).toContain(`kqctl: copied ${install}/scripts/StartAgents.sh, ${install}/scripts/StopAgents.sh to 127.0.0.1 over SFTP`);
    for (const name of ['StartAgents.sh', 'StopAgents.sh']) {
      const copy = path.join(install, 'scripts', name);
      expect(fs.readFileSync(copy, 'utf8')).toBe(fs.readFileSync(path.join(ROOT, 'scripts', name), 'utf8'));
      expect(fs.statSync(copy).mode & 0o777).toBe(0o755);
    }
    const agents = await remoteAgents(kq);
    expect(agents).toHaveLength(2);
    for (const a of agents) expect(fs.readFileSync(`/proc/${a.pid}/cmdline`, 'utf8').split('\0')[1]).toBe(`${install}/bin/kq-agent.js`);
    expect(fs.readFileSync(path.join(data, 'logs', 'remote_agent_1.log'), 'utf8')).toContain('registered with kq');

    const stopped = await remote(kq, server, 'stop', ['--install-root', install, '--data-root', data]);
    expect(stopped.exitCode).toBe(0);
    expect(stopped.stdout).toMatch(/^stopped 2 kq agent\(s\)/m);
    for (const a of agents) expect(isRunning(a.pid)).toBe(false);
  });

  it('reports agents that cannot reach kq with their logs and the checklist, and exits 5', async () => {
    const kq = await anyKq();
    const server = await sshd();
    const data = agentDataRoot();
    // 127.0.0.2 is this machine, but kq listens on 127.0.0.1 only: like a kq bound to the wrong address.
    const checked = await remote(kq, server, 'start', ['--num-agents', '1', '--install-root', ROOT, '--data-root', data, '--kq-host', '127.0.0.2']);
    expect(checked.exitCode).toBe(4);
    expect(checked.stderr).toMatch(/StartAgents\.sh: cannot connect from \S+ to kq at 127\.0\.0\.2 \[127\.0\.0\.2\] on port\(s\) \d+ \(ECONNREFUSED\)/);
    expect(checked.stderr).toContain('kq --bind 0.0.0.0');

    const r = await remote(kq, server, 'start', ['--num-agents', '1', '--install-root', ROOT, '--data-root', data, '--kq-host', '127.0.0.2',
      '--skip-checks', '--register-timeout', '5s']);
    expect(r.exitCode).toBe(5);
    expect(r.stderr).toMatch(/^kqctl: 1 of 1 kq agent\(s\) started on \S+ did not register with kq within 5s \(they dial 127\.0\.0\.2, ports/);
    expect(r.stderr).toMatch(/agent 1 \(pid \d+, still running\): the end of .*\/remote_agent_1\.log on/);
    expect(r.stderr).toMatch(/ {2}\| \S+ StartAgents\.sh: starting kq agent 1 on \S+ for kq at 127\.0\.0\.2/);
    // The agent warns after its first unanswered register (2 s after it starts; later on a loaded machine).
    const log = path.join(data, 'logs', 'remote_agent_1.log');
    await waitFor('the agent to warn', () => fs.readFileSync(log, 'utf8').includes('cannot reach kq at tcp://127.0.0.2:'), 20_000, 100);
    expect(r.stderr).toContain('  - bind address: kq listens on 127.0.0.1 only but the agents dial 127.0.0.2');
    expect(r.stderr).toMatch(/ {2}- firewall: TCP ports \d+, \d+, \d+ must be open/);
    expect(r.stderr).toContain('1 agent(s) keep retrying; stop them with: kqctl remote stop --host 127.0.0.1');
    console.log(`example failure output:\n${r.stderr}`);
    const stopped = await remote(kq, server, 'stop', ['--data-root', data]);
    expect(stopped.stdout).toMatch(/^stopped kq agent 1 \(pid \d+\)$/m);
    expect(processesMatching(`--request-port ${kq.info.requestPort} `)).toEqual([]);
  });
});

describe('host keys and logins', () => {
  it('refuses an unknown host key; --accept-new-host-key adds it where OpenSSH finds it', async () => {
    const kq = await anyKq();
    const server = await sshd();
    const known = path.join(tempDir('kq-known-'), 'known_hosts');
    const args = server.sshArgs(known);
    const data = agentDataRoot();

    const refused = await remote(kq, server, 'start', ['--data-root', data], args);
    expect(refused.exitCode).toBe(4);
    expect(refused.stderr).toContain(`kqctl: ssh: the host key of [127.0.0.1]:${server.port} is unknown (not in ${known})`);
    expect(refused.stderr).toMatch(/it offers ssh-ed25519 SHA256:\S+/);
    expect(refused.stderr).toContain('--accept-new-host-key');
    expect(fs.existsSync(data)).toBe(false);
    expect(fs.existsSync(known)).toBe(false);

    const accepted = await remote(kq, server, 'stop', ['--data-root', data, '--accept-new-host-key'], args);
    expect(accepted.exitCode).toBe(0);
    expect(accepted.stdout).toMatch(/^no kq agents recorded in .*\/run on \S+: nothing to stop$/m);
    expect(accepted.stderr).toMatch(/added the host key of 127\.0\.0\.1 \(ssh-ed25519 SHA256:\S+\) to /);
    expect(fs.readFileSync(known, 'utf8')).toBe(server.knownHostsLine() + '\n');
    expect((await execa('ssh-keygen', ['-F', `[127.0.0.1]:${server.port}`, '-f', known])).exitCode).toBe(0);
    expect((await remote(kq, server, 'stop', ['--data-root', data], args)).exitCode).toBe(0);
  });

  it('refuses a changed host key, even with --accept-new-host-key; hashed entries work both ways', async () => {
    const kq = await anyKq();
    const server = await sshd();
    const dir = tempDir('kq-known-');
    keygen(path.join(dir, 'other'));
    const [type, otherKey] = fs.readFileSync(path.join(dir, 'other.pub'), 'utf8').split(/\s+/);
    const wrong = path.join(dir, 'known_hosts');
    const wrongText = `# old key\n[127.0.0.1]:${server.port} ${type} ${otherKey}\n`;
    fs.writeFileSync(wrong, wrongText);
    for (const extra of [[], ['--accept-new-host-key']]) {
      const r = await remote(kq, server, 'start', ['--data-root', agentDataRoot(), ...extra], server.sshArgs(wrong));
      expect(r.exitCode).toBe(4);
      expect(r.stderr).toContain(`kqctl: ssh: REFUSED: the host key of [127.0.0.1]:${server.port} has changed!`);
      expect(r.stderr).toContain(`${wrong}:2 has ssh-ed25519 SHA256:`);
      expect(r.stderr).toContain('man-in-the-middle');
      expect(r.stderr).toContain(`ssh-keygen -R '[127.0.0.1]:${server.port}'`);
    }
    expect(fs.readFileSync(wrong, 'utf8')).toBe(wrongText);

    // The same, hashed by ssh-keygen -H: still refused; the right key hashed is accepted.
    await execa('ssh-keygen', ['-q', '-H', '-f', wrong]);
    expect(fs.readFileSync(wrong, 'utf8')).toMatch(/^\|1\|/m);
    expect((await remote(kq, server, 'stop', ['--data-root', agentDataRoot()], server.sshArgs(wrong))).exitCode).toBe(4);
    const right = server.knownHostsFile();
    await execa('ssh-keygen', ['-q', '-H', '-f', right]);
    expect(fs.readFileSync(right, 'utf8')).not.toContain('127.0.0.1');
    const ok = await remote(kq, server, 'stop', ['--data-root', agentDataRoot()], server.sshArgs(right));
    expect(ok.stderr).toBe('');
    expect(ok.exitCode).toBe(0);
  });

  it('says clearly when the server refuses our key, or nothing listens', async () => {
    const kq = await anyKq();
    const server = await sshd();
    const stranger = path.join(tempDir('kq-key-'), 'id_ed25519');
    keygen(stranger);
    const args = server.sshArgs();
    args[args.indexOf('--identity') + 1] = stranger;
    const r = await remote(kq, server, 'stop', ['--data-root', agentDataRoot()], args);
    expect(r.exitCode).toBe(4);
    expect(r.stderr).toContain(`kqctl: ssh: root@127.0.0.1:${server.port} refused our SSH key (offered: ${stranger})`);
    expect(r.stderr).toContain('authorized_keys');

    const closed = await freePort();
    const none = await kqctl(['remote', 'stop', '--host', '127.0.0.1', '--ssh-port', String(closed), '--identity', server.clientKey]);
    expect(none.exitCode).toBe(4);
    expect(none.stderr).toContain(`kqctl: ssh: cannot connect to root@127.0.0.1:${closed} (ECONNREFUSED): is sshd running there, and is --ssh-port right?`);

    const missingKey = await kqctl(['remote', 'stop', '--host', '127.0.0.1', '--identity', '/nonexistent/key']);
    expect(missingKey.exitCode).toBe(2);
    expect(missingKey.stderr).toContain('cannot read the SSH key /nonexistent/key');
    const noHost = await kqctl(['remote', 'start']);
    expect(noHost.exitCode).toBe(2);
    expect(noHost.stderr).toContain('--host is required');
  });
});

describe('StartAgents.sh and StopAgents.sh called directly', () => {
  const sh = (script: string, args: string[], opts: { env?: Record<string, string>; uid?: number } = {}) => {
    const argv = opts.uid === undefined ? ['sh', script, ...args] : ['setpriv', `--reuid=${opts.uid}`, `--regid=${opts.uid}`, '--clear-groups', 'sh', script, ...args];
    return execa(argv[0]!, argv.slice(1), { reject: false, env: opts.env });
  };
  /** A stand-in install (the script checks these files before anything else), readable by any user. */
  const fakeInstall = () => {
    const root = tempDir('kq-fake-install-');
    fs.chmodSync(root, 0o755);
    for (const f of ['bin/kq-agent.js', 'dist/src/agent/main.js']) {
      fs.mkdirSync(path.dirname(path.join(root, f)), { recursive: true });
      fs.writeFileSync(path.join(root, f), '');
    }
    return root;
  };

  it('rejects bad arguments with a usage message and exit 2', async () => {
    const data = agentDataRoot();
    const ok = [ROOT, data, '127.0.0.1', '5560', '5561', '5562', '2'];
    const cases: Array<[string[], RegExp]> = [
      [[], /expected 7 arguments, got 0/],
      [ok.slice(0, 6), /expected 7 arguments, got 6/],
      [[...ok, 'extra'], /expected 7 arguments, got 8/],
      [[ok[0]!, ok[1]!, ok[2]!, 'http', ok[4]!, ok[5]!, ok[6]!], /REQUEST_PORT must be a port number from 1 to 65535, got "http"/],
      [[ok[0]!, ok[1]!, ok[2]!, ok[3]!, '70000', ok[5]!, ok[6]!], /UPDATE_PORT must be a port number/],
      [[ok[0]!, ok[1]!, ok[2]!, ok[3]!, ok[4]!, '-1', ok[6]!], /BROADCAST_PORT must be a port number/],
      [[...ok.slice(0, 6), '0'], /NUM_AGENTS must be a whole number from 1 to 256, got "0"/],
      [[...ok.slice(0, 6), 'four'], /NUM_AGENTS must be a whole number/],
      [[ok[0]!, ok[1]!, '--help', ...ok.slice(3)], /KQ_HOST must be a host name or address, got "--help"/],
      [[ok[0]!, ok[1]!, 'kq;reboot', ...ok.slice(3)], /KQ_HOST must be a host name or address/],
      [['/nonexistent/kq', ...ok.slice(1)], /INSTALL_ROOT \/nonexistent\/kq does not exist/],
      [[tempDir(), ...ok.slice(1)], /is not a kq install: .*bin\/kq-agent\.js is missing/],
    ];
    for (const [args, message] of cases) {
      const r = await sh(START, args);
      expect(r.exitCode, args.join(' ')).toBe(2);
      expect(r.stderr).toMatch(message);
      expect(r.stderr).toContain('usage: StartAgents.sh INSTALL_ROOT DATA_ROOT KQ_HOST REQUEST_PORT UPDATE_PORT BROADCAST_PORT NUM_AGENTS');
      expect(r.stdout).toBe('');
    }
    expect(fs.existsSync(data)).toBe(false);

    const noNode = await sh(START, ok, { env: { KQ_NODE: '/nonexistent/node' } });
    expect(noNode.exitCode).toBe(2);
    expect(noNode.stderr).toContain("cannot find node ('/nonexistent/node')");

    // (No argument at all is valid: every agent of this user; stop-agents.test.ts runs it in its own PID namespace.)
    for (const [args, message] of [[[data, 'soon'], /GRACE_SECONDS must be a whole number/],
      [[data, '1', 'x'], /got 3 argument/]] as Array<[string[], RegExp]>) {
      const r = await sh(STOP, args);
      expect(r.exitCode).toBe(2);
      expect(r.stderr).toMatch(message);
      expect(r.stderr).toContain('usage: StopAgents.sh [DATA_ROOT [GRACE_SECONDS]]');
    }
  });

  it('says when the data root is not writable (exit 3), the kq host does not resolve (4) or its ports do not answer (5)', async () => {
    const install = fakeInstall();
    const ports = ['5560', '5561', '5562'];
    const file = path.join(tempDir(), 'a file');
    fs.writeFileSync(file, '');
    const underFile = await sh(START, [install, path.join(file, 'data'), '127.0.0.1', ...ports, '1']);
    expect(underFile.exitCode).toBe(3);
    expect(underFile.stderr).toMatch(/StartAgents\.sh: cannot create .*\/a file\/data\/logs .* create the data root and give \S+ write access/);

    const rootOwned = tempDir('kq-root-owned-');
    fs.chmodSync(rootOwned, 0o755);
    const asNobody = await sh(START, [install, rootOwned, '127.0.0.1', ...ports, '1'], { uid: 65534 });
    expect(asNobody.exitCode).toBe(3);
    expect(asNobody.stderr).toMatch(/StartAgents\.sh: (cannot create .*|data root .* is not writable) .*nobody/);

    const kq = await anyKq();
    const kqPorts = [kq.info.requestPort, kq.info.updatePort, kq.info.broadcastPort].map(String);
    const unresolvable = await sh(START, [ROOT, agentDataRoot(), 'no-such-host.invalid', ...kqPorts, '1']);
    expect(unresolvable.exitCode).toBe(4);
    expect(unresolvable.stderr).toMatch(/StartAgents\.sh: cannot resolve the kq host "no-such-host\.invalid" on \S+ \((ENOTFOUND|EAI_AGAIN|ETIMEDOUT)\): pass an IP address/);

    const closed = String(await freePort());
    const refused = await sh(START, [ROOT, agentDataRoot(), '127.0.0.1', kqPorts[0]!, closed, kqPorts[2]!, '1']);
    expect(refused.exitCode).toBe(5);
    expect(refused.stderr).toContain(`on port(s) ${closed} (ECONNREFUSED): nothing listens there`);
    expect(refused.stderr).toContain(`allow TCP ports ${kqPorts[0]}, ${closed}, ${kqPorts[2]} from`);
    for (const r of [underFile, asNobody, unresolvable, refused]) expect(r.stdout).not.toContain('started kq agent');
  });

  it('starts agents detached and StopAgents.sh stops exactly them, leaving a recycled pid alone', async () => {
    const kq = await startKq();
    const data = agentDataRoot('direct data');
    const ports = [kq.info.requestPort, kq.info.updatePort, kq.info.broadcastPort].map(String);
    const r = await sh(START, [ROOT, data, '127.0.0.1', ...ports, '2']);
    expect(r.exitCode).toBe(0);
    const pids = [...r.stdout.matchAll(/^started kq agent (\d): pid (\d+), log (.*)$/gm)].map((m) => Number(m[2]));
    expect(pids).toHaveLength(2);
    for (const pid of pids) {
      const text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      const [, , pgrp, session] = text.slice(text.lastIndexOf(')') + 2).split(' '); // state ppid pgrp session …
      expect(Number(pgrp)).toBe(pid);
      expect(Number(session)).toBe(pid); // setsid: its own session, no terminal
      expect(fs.readlinkSync(`/proc/${pid}/fd/0`)).toBe('/dev/null');
    }
    await waitFor('2 remote agents', async () => (await remoteAgents(kq)).length === 2);

    // Starting again adds agents in the next free slots, leaving the running ones alone.
    const more = await sh(START, [ROOT, data, '127.0.0.1', ...ports, '1']);
    expect(more.stdout).toMatch(/kq agent 1 is already running \(pid \d+\): left alone/);
    expect(more.stdout).toMatch(/^started kq agent 3: pid (\d+)/m);
    pids.push(Number(/^started kq agent 3: pid (\d+)/m.exec(more.stdout)![1]));

    // A pid file whose pid now belongs to another program: that program must survive.
    const bystander = execa('sleep', ['60'], { reject: false });
    fs.writeFileSync(path.join(data, 'run', 'remote_agent_9.pid'), `${bystander.pid}\n`);
    const stop = await sh(STOP, [data, '5']);
    expect(stop.exitCode).toBe(0);
    expect(stop.stdout).toContain(`kq agent 9 (pid ${bystander.pid}) is not running: removed its pid file`);
    expect(stop.stdout).toMatch(/^stopped 3 kq agent\(s\) on /m);
    expect(isRunning(bystander.pid!)).toBe(true);
    bystander.kill();
    for (const pid of pids) expect(isRunning(pid)).toBe(false);
    expect(fs.readdirSync(path.join(data, 'run'))).toEqual([]);
    expect(fs.readFileSync(path.join(data, 'logs', 'remote_agent_1.log'), 'utf8')).toMatch(/StopAgents\.sh: SIGTERM to kq agent 1/);
  });
});

describe.skipIf(!NETNS)('agents in another network namespace', () => {
  it('reach kq over a veth pair and render POV-Ray frames; a loopback-only kq is refused up front', async () => {
    const ns = NETNS!;
    const kq = await startKq(['--bind', ns.hostAddress]);
    const server = await startSshd({ netns: ns.name, listen: ns.peerAddress, port: 2222 });
    const data = agentDataRoot();
    const started = await remote(kq, server, 'start', ['--num-agents', '2', '--install-root', ROOT, '--data-root', data]);
    expect(started.stderr).toContain(`kqctl: kq requires CURVE: allowed a new client "${ns.peerAddress}"`); // kq listens beyond loopback
    expect(started.exitCode).toBe(0);
    expect(started.stdout).toContain(`via root@${ns.peerAddress}:2222, dialing kq at ${ns.hostAddress}`);
    const agents = await remoteAgents(kq);
    expect(agents).toHaveLength(2);
    const theirNet = fs.readlinkSync(`/proc/${server.proc!.pid}/ns/net`);
    expect(theirNet).not.toBe(fs.readlinkSync('/proc/self/ns/net'));
    for (const a of agents) expect(fs.readlinkSync(`/proc/${a.pid}/ns/net`)).toBe(theirNet);

    const out = tempDir('kq-netns-frames-');
    const id = await submit(kq, '--frames', '1-2', '--chunk', '1', '--cwd', out, '--',
      'povray', `+I${SCENE}`, '+Oshot.png', '+W80', '+H60', '+FN', '-D', '+KFI1', '+KFF2', '+SF{start}', '+EF{end}');
    const job = await waitJob(kq, id);
    expect(job.state).toBe('Completed');
    expect(new Set(job.taskList.map((t: any) => t.agentId)).size).toBeGreaterThanOrEqual(1);
    expect(fs.readdirSync(out).filter((f) => f.endsWith('.png')).sort()).toEqual(['shot1.png', 'shot2.png']);
    for (const f of ['shot1.png', 'shot2.png']) expect(readPng(path.join(out, f))).toEqual({ width: 80, height: 60 });
    for (const t of job.taskList) expect(agents.map((a) => a.id)).toContain(t.agentId);

    const stopped = await remote(kq, server, 'stop', ['--install-root', ROOT, '--data-root', data]);
    expect(stopped.exitCode).toBe(0);
    for (const a of agents) expect(isRunning(a.pid)).toBe(false);

    const loopbackKq = await anyKq();
    const refused = await remote(loopbackKq, server, 'start', ['--install-root', ROOT, '--data-root', data]);
    expect(refused.exitCode).toBe(2);
    expect(refused.stderr).toContain(`kq listens on 127.0.0.1 only (${loopbackKq.dataRoot}/kq.json), so agents on ${ns.peerAddress} cannot reach it: restart kq with --bind 0.0.0.0`);
  });
});

interface Netns { name: string; hostAddress: string; peerAddress: string }

/**
 * `ip netns add` plus a veth pair 10.A.B.1/30 (here) ↔ 10.A.B.2/30 (there), A.B taken from this process's
 * pid so that two test runs on one machine never share a subnet; null where not permitted.
 */
function setUpNetns(): Netns | null {
  const id = process.pid % 100000;
  const net = `10.${200 + ((process.pid >> 8) % 50)}.${process.pid % 64 * 4}`;
  const ns: Netns = { name: `kqtest${id}`, hostAddress: `${net}.1`, peerAddress: `${net}.2` };
  const here = `kqh${id}`;
  const there = `kqp${id}`;
  const steps = [
    ['netns', 'add', ns.name],
    ['link', 'add', here, 'type', 'veth', 'peer', 'name', there],
    ['link', 'set', there, 'netns', ns.name],
    ['addr', 'add', `${ns.hostAddress}/30`, 'dev', here],
    ['link', 'set', here, 'up'],
    ['netns', 'exec', ns.name, 'ip', 'addr', 'add', `${ns.peerAddress}/30`, 'dev', there],
    ['netns', 'exec', ns.name, 'ip', 'link', 'set', there, 'up'],
    ['netns', 'exec', ns.name, 'ip', 'link', 'set', 'lo', 'up'],
  ];
  try {
    for (const step of steps) execaSync('ip', step);
    return ns;
  } catch {
    execaSync('ip', ['link', 'del', here], { reject: false });
    execaSync('ip', ['netns', 'del', ns.name], { reject: false });
    return null;
  }
}
