/** src/ssh building blocks: shell quoting (checked by a real sh) and known_hosts (checked against OpenSSH's ssh-keygen). */
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { UnquotableError, loginShellQuote, shellCommand, shellQuote } from '../src/ssh/shell-quote.js';
import { KnownHosts, appendKnownHost, entryMatches, fingerprint, keyTypeOf, knownHostName, parseKnownHosts } from '../src/ssh/known-hosts.js';
import { readableLog, scriptCommand } from '../src/ssh/remote-agents.js';
import { tempDir } from './helpers/kq.js';
import { keygen } from './helpers/sshd.js';

const NASTY = ['plain', '', ' ', 'two words', "it's", "'", "''", '"double"', '$HOME', '${HOME}', '`id`', '$(id)', 'a;b', 'a&&b', 'a|b',
  '*', '?', '[a]', '~', '~/x', '!', '#comment', 'back\\slash', 'tab\there', 'new\nline', '-n', '--help', 'é ü 漢字', 'a=b', '%s'];

/** What argv a real POSIX shell sees for a command line. */
async function argvSeenBy(shell: string, line: string): Promise<string[]> {
  const r = await execa(shell, ['-c', `for a in ${line}; do printf '%s\\0' "$a"; done`]);
  return r.stdout.split('\0').slice(0, -1);
}

describe('shellQuote', () => {
  it('passes every value through sh and bash as exactly one literal word', async () => {
    for (const shell of ['sh', 'bash']) {
      expect(await argvSeenBy(shell, NASTY.map(shellQuote).join(' '))).toEqual(NASTY);
    }
  });

  it('leaves safe words alone and quotes the rest', () => {
    expect(shellQuote('/opt/kq-1.2/bin')).toBe('/opt/kq-1.2/bin');
    expect(shellQuote('a b')).toBe("'a b'");
    expect(shellQuote("it's")).toBe(`'it'\\''s'`);
    expect(shellQuote('')).toBe("''");
    expect(() => shellQuote('a\0b')).toThrow(/NUL/);
  });

  it('builds a command whose arguments are never executed', async () => {
    const dir = tempDir('kq-quote-');
    const marker = path.join(dir, 'pwned');
    const r = await execa('sh', ['-c', shellCommand(['printf', '%s|', `$(touch ${marker})`, `; touch ${marker}`, `\`touch ${marker}\``])]);
    expect(r.stdout).toBe(`$(touch ${marker})|; touch ${marker}|\`touch ${marker}\`|`);
    expect(fs.existsSync(marker)).toBe(false);
  });

  it('runs a remote script with every value as one argument, ~ meaning the home directory', async () => {
    const home = tempDir('kq-home-');
    const root = path.join(home, "kq's install");
    fs.mkdirSync(path.join(root, 'scripts'), { recursive: true });
    fs.writeFileSync(path.join(root, 'scripts', 'StartAgents.sh'), 'for a in "$@"; do printf "%s\\n" "$a"; done; echo "node=$KQ_NODE"\n');
    fs.writeFileSync(path.join(root, 'scripts', 'StopAgents.sh'), 'exit 0\n');
    const line = scriptCommand("~/kq's install", 'StartAgents.sh', ['$(id)', 'a b', '~/data'], { KQ_NODE: '/opt/my node/bin/node' });
    const r = await execa('sh', ['-c', line], { env: { HOME: home } });
    expect(r.stdout).toBe('$(id)\na b\n~/data\nnode=/opt/my node/bin/node');
    fs.rmSync(path.join(root, 'scripts', 'StopAgents.sh'));
    const missing = await execa('sh', ['-c', line], { env: { HOME: home }, reject: false });
    expect(missing.exitCode).toBe(127);
    expect(missing.stderr).toContain('kq-missing-scripts: StopAgents.sh in');
  });
});

/** Values for any login shell: NASTY without line breaks (refused), plus what fish, csh and zsh read specially. */
const LOGIN_NASTY = [...NASTY.filter((v) => !/\n/.test(v)), "a\\'b", "\\'", '\\', '\\\\', "'\\''", '%self', '%1', '=ls', '{a,b}', '$fish_pid',
  '(echo x)', '!!', '!$', 'a!b', '^x', '$status', '~root', "'\\n'", 'tab\tand \\t'];
/** sshd runs the command line with the user's login shell: these are the ones a render node may have. */
const LOGIN_SHELLS: Array<[string, string[]]> = [['sh', []], ['bash', []], ['fish', ['--no-config']], ['tcsh', ['-f']]];

describe('loginShellCommand: the remote command line, for any login shell', () => {
  it('passes every value as exactly one literal argument through sh, bash, fish and tcsh', async () => {
    const line = scriptCommand("~/kq's \\'install", 'StartAgents.sh', LOGIN_NASTY, { KQ_NODE: "/opt/my \\' node" });
    const home = tempDir('kq-home-');
    const root = path.join(home, "kq's \\'install");
    fs.mkdirSync(path.join(root, 'scripts'), { recursive: true });
    fs.writeFileSync(path.join(root, 'scripts', 'StartAgents.sh'), 'printf "%s\\0" "$KQ_NODE" "$@"\n');
    fs.writeFileSync(path.join(root, 'scripts', 'StopAgents.sh'), 'exit 0\n');
    for (const [shell, flags] of LOGIN_SHELLS) {
      const r = await execa(shell, [...flags, '-c', line], { env: { HOME: home }, reject: false });
      expect(r.stderr, shell).toBe('');
      expect(r.stdout.split('\0').slice(0, -1), shell).toEqual(["/opt/my \\' node", ...LOGIN_NASTY]);
    }
  });

  it('refuses a line break (csh cannot quote one) and quotes backslashes outside single quotes', () => {
    expect(() => loginShellQuote('a\nb')).toThrow(/cannot contain a line break/);
    expect(() => loginShellQuote('a\rb')).toThrow(UnquotableError);
    expect(loginShellQuote("a\\'b")).toBe("'a'\\\\\\''b'");
    expect(loginShellQuote('%self')).toBe("'%self'");
    expect(loginShellQuote('/opt/kq-1.2/bin')).toBe('/opt/kq-1.2/bin');
    expect(loginShellQuote('')).toBe("''");
  });
});

describe('known_hosts', () => {
  const dir = tempDir('kq-known-');
  keygen(path.join(dir, 'a'));
  keygen(path.join(dir, 'b'));
  keygen(path.join(dir, 'r'), 'rsa');
  const blob = (name: string) => Buffer.from(fs.readFileSync(path.join(dir, `${name}.pub`), 'utf8').split(/\s+/)[1]!, 'base64');
  const line = (hosts: string, name: string) => `${hosts} ${keyTypeOf(blob(name))} ${blob(name).toString('base64')}`;

  it('names hosts like OpenSSH: plain on port 22, [host]:port otherwise, lower case', () => {
    expect(knownHostName('Render2', 22)).toBe('render2');
    expect(knownHostName('127.0.0.1', 2222)).toBe('[127.0.0.1]:2222');
    expect(knownHostName('::1', 2222)).toBe('[::1]:2222');
    expect(keyTypeOf(blob('a'))).toBe('ssh-ed25519');
    expect(keyTypeOf(blob('r'))).toBe('ssh-rsa');
  });

  it('matches patterns, wildcards, negations and ports', () => {
    expect(entryMatches('render2,render3', 'render3')).toBe(true);
    expect(entryMatches('*.farm.lan,!bad.farm.lan', 'r1.farm.lan')).toBe(true);
    expect(entryMatches('*.farm.lan,!bad.farm.lan', 'bad.farm.lan')).toBe(false);
    expect(entryMatches('render?', 'render7')).toBe(true);
    expect(entryMatches('render2', '[render2]:2222')).toBe(false);
    expect(entryMatches('[render2]:2222', '[render2]:2222')).toBe(true);
    expect(entryMatches('RENDER2', 'render2')).toBe(true);
  });

  it('finds known, unknown, changed and revoked keys; skips comments, junk and @cert-authority', () => {
    const text = ['# comment', '', 'garbage', line('render2', 'a'), line('[render3]:2222', 'a'), `@cert-authority *.lan ${line('x', 'b').split(' ').slice(1).join(' ')}`,
      `@revoked ${line('render9', 'b')}`, line('render9', 'b')].join('\n');
    const kh = new KnownHosts(parseKnownHosts(text, 'f'), ['f']);
    expect(kh.check('render2', blob('a'))).toMatchObject({ status: 'known', entry: { line: 4 } });
    expect(kh.check('render2', blob('b'))).toMatchObject({ status: 'changed' });
    expect(kh.check('render2', blob('r'))).toMatchObject({ status: 'changed' }); // a type not known for it
    expect(kh.check('[render3]:2222', blob('a')).status).toBe('known');
    expect(kh.check('render3', blob('a')).status).toBe('unknown');
    expect(kh.check('other.lan', blob('b')).status).toBe('unknown');
    expect(kh.check('render9', blob('b')).status).toBe('revoked');
    expect(kh.typesFor('render2')).toEqual(['ssh-ed25519']);
  });

  it('reads the hashed entries ssh-keygen -H writes', async () => {
    const file = path.join(dir, 'hashed');
    fs.writeFileSync(file, [line('[127.0.0.1]:2222', 'a'), line('render2', 'r')].join('\n') + '\n');
    await execa('ssh-keygen', ['-q', '-H', '-f', file]);
    const text = fs.readFileSync(file, 'utf8');
    expect(text).toMatch(/^\|1\|/);
    expect(text).not.toContain('render2');
    const kh = KnownHosts.load([file]);
    expect(kh.check('[127.0.0.1]:2222', blob('a')).status).toBe('known');
    expect(kh.check('[127.0.0.1]:2222', blob('b')).status).toBe('changed');
    expect(kh.check('render2', blob('r')).status).toBe('known');
    expect(kh.check('render3', blob('r')).status).toBe('unknown');
  });

  it('appends entries that OpenSSH finds, keeping a file without a final newline intact', async () => {
    const file = path.join(tempDir('kq-known-'), 'sub', 'known_hosts');
    appendKnownHost(file, '[127.0.0.1]:2222', blob('a'));
    fs.appendFileSync(file, 'render5 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMBUx8w3OyPMW2tHHz+/tYbs1Yd7IqIdlOghQM7n8ymK'); // no newline
    appendKnownHost(file, 'render2', blob('r'));
    const found = await execa('ssh-keygen', ['-F', '[127.0.0.1]:2222', '-f', file]);
    expect(found.stdout).toContain(blob('a').toString('base64'));
    expect((await execa('ssh-keygen', ['-F', 'render2', '-f', file])).stdout).toContain('ssh-rsa');
    expect((await execa('ssh-keygen', ['-F', 'render5', '-f', file])).exitCode).toBe(0);
    expect(fs.statSync(path.dirname(file)).mode & 0o777).toBe(0o700);
    expect(KnownHosts.load([file, path.join(dir, 'missing')]).check('render2', blob('r')).status).toBe('known');
  });

  it('prints fingerprints as ssh-keygen -l does', async () => {
    const r = await execa('ssh-keygen', ['-l', '-f', path.join(dir, 'a.pub')]);
    expect(r.stdout.split(' ')[1]).toBe(fingerprint(blob('a')));
  });
});

describe('agent logs', () => {
  it('shows pino lines as time, level and message', () => {
    const text = 'plain line\n{"level":40,"time":0,"msg":"cannot reach kq"}\n';
    expect(readableLog(text)).toBe('plain line\n00:00:00 WARN cannot reach kq');
  });
});
