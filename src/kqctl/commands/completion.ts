/**
 * `kqctl completion bash|zsh|fish`: a completion script made from kqctl's own commands and options, so it
 * never falls behind them. Job ids are completed live through `kqctl _ids` (hidden), which prints the ids
 * kq knows, one per line, and nothing at all when kq does not answer within a second.
 */
import type { Command } from 'commander';
import { EXIT } from '../exit-codes.js';
import { withClient, type ConnectionFlags } from '../connect.js';
import type { JobSummary } from '../../protocol/index.js';
import { CliError } from '../exit-codes.js';

/** Commands whose arguments are job ids. */
const TAKES_IDS = ['show', 'log', 'stop', 'restart', 'wait', 'pause', 'resume', 'priority', 'rm'];

export function register(program: Command, connection: (c: Command) => Command): void {
  connection(program.command('_ids', { hidden: true }).description('job ids, for shell completion'))
    .action(withClient(async (client, _flags: ConnectionFlags) => {
      try {
        const jobs = await client.request<JobSummary[]>('list', {});
        process.stdout.write(jobs.map((j) => `${j.id}\n`).join(''));
      } catch { /* completion must stay quiet */ }
      return EXIT.ok;
    }));

  program.command('completion')
    .description('print a shell completion script: eval "$(kqctl completion bash)" (zsh, fish: the same)')
    .argument('<shell>', 'bash, zsh or fish')
    .action((shell: string) => {
      const spec = commandSpec(program);
      const script = shell === 'bash' ? bash(spec) : shell === 'zsh' ? zsh(spec) : shell === 'fish' ? fish(spec) : null;
      if (script === null) {
        process.stderr.write(`kqctl: ${new CliError(2, `no completion for "${shell}": use bash, zsh or fish`).message}\n`);
        process.exitCode = EXIT.usage;
        return;
      }
      process.stdout.write(script);
    });
}

interface CommandSpec { name: string; description: string; options: string[]; subcommands: string[] }

function commandSpec(program: Command): CommandSpec[] {
  return program.commands.filter((c) => !(c as unknown as { _hidden?: boolean })._hidden).map((c) => ({
    name: c.name(),
    description: c.description().split('\n')[0]!.replace(/[`$"\\]/g, ''),
    options: [...c.options.map((o) => o.long).filter((l): l is string => !!l), '--help'],
    subcommands: c.commands.map((s) => s.name()),
  }));
}

const words = (list: string[]) => list.join(' ');

function bash(spec: CommandSpec[]): string {
  const cases = spec.map((c) => `    ${c.name}) opts="${words(c.options)}"; subs="${words(c.subcommands)}";;`).join('\n');
  return `# kqctl completion for bash: eval "$(kqctl completion bash)"
_kqctl() {
  local cur="\${COMP_WORDS[COMP_CWORD]}" cmd="\${COMP_WORDS[1]}" opts="" subs=""
  if [[ $COMP_CWORD -eq 1 ]]; then
    COMPREPLY=($(compgen -W "${words(spec.map((c) => c.name))}" -- "$cur"))
    return
  fi
  case "$cmd" in
${cases}
  esac
  if [[ "$cur" == -* ]]; then
    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
  elif [[ -n "$subs" && $COMP_CWORD -eq 2 ]]; then
    COMPREPLY=($(compgen -W "$subs" -- "$cur"))
  else
    case "$cmd" in
      ${TAKES_IDS.join('|')}) COMPREPLY=($(compgen -W "$(kqctl _ids --connect-timeout 1s 2>/dev/null)" -- "$cur"));;
      *) COMPREPLY=($(compgen -f -- "$cur"));;
    esac
  fi
}
complete -F _kqctl kqctl
`;
}

function zsh(spec: CommandSpec[]): string {
  // zsh runs the bash function through bashcompinit: one script, the same behaviour.
  return `# kqctl completion for zsh: eval "$(kqctl completion zsh)"
autoload -U +X compinit && compinit
autoload -U +X bashcompinit && bashcompinit
${bash(spec)}`;
}

function fish(spec: CommandSpec[]): string {
  const lines = ['# kqctl completion for fish: kqctl completion fish | source', 'complete -c kqctl -f'];
  for (const c of spec) lines.push(`complete -c kqctl -n __fish_use_subcommand -a ${c.name} -d '${c.description.replace(/'/g, '')}'`);
  for (const c of spec) {
    for (const o of c.options) lines.push(`complete -c kqctl -n '__fish_seen_subcommand_from ${c.name}' -l ${o.replace(/^--/, '')}`);
    for (const s of c.subcommands) lines.push(`complete -c kqctl -n '__fish_seen_subcommand_from ${c.name}' -a ${s}`);
  }
  lines.push(`complete -c kqctl -n '__fish_seen_subcommand_from ${TAKES_IDS.join(' ')}' -a '(kqctl _ids --connect-timeout 1s 2>/dev/null)'`);
  return lines.join('\n') + '\n';
}
