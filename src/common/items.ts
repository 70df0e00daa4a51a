/**
 * Jobs built from a list of items (`kqctl submit --each`): one run per item, with `{item}` (or `{}`, as in
 * xargs -I{} and GNU parallel) replaced by the item and `{#}` by its 1-based index. The item always lands
 * inside the argv element that names it, never split into words. With --shell the item's text never enters
 * the script: the script starts by setting a shell variable to the (quoted) item, and `{item}` becomes that
 * variable, quoted for where it sits (see `shellItem`), so whatever an item holds (spaces, quotes, `$(…)`,
 * newlines) it is data, not code, even inside quotes or a nested `$(…)` — except where the shell itself
 * evaluates a variable's value (bash arithmetic, `[[ ]]`, `eval`, a nested `sh -c`), which the README warns of. An argv that names no item
 * placeholder gets the item as its last argument, as xargs does.
 */
import { shellQuote } from '../ssh/shell-quote.js';

/** The shell variable holding the item in a --shell command. */
const ITEM_VARIABLE = 'KQ_ITEM';

const ITEM_PLACEHOLDER = /\{item\}|\{\}|\{#\}/g;

export function usesItemPlaceholder(argv: readonly string[]): boolean {
  return argv.some((arg) => /\{item\}|\{\}|\{#\}/.test(arg));
}

/**
 * The commands a task of an --each job runs: one per item. `items[i]` is the item of index `indices[i]`
 * (1-based); other placeholders ({frame} = the index) are filled by `fillFrame` afterwards.
 */
export function expandItems(argv: readonly string[], indices: readonly number[], items: readonly string[], shell: boolean): string[][] {
  const named = usesItemPlaceholder(argv);
  return indices.map((index, i) => {
    const item = items[i] ?? '';
    if (shell) return [shellItem(argv.join(' '), index, item, named)];
    const filled = argv.map((arg) => arg.replace(ITEM_PLACEHOLDER, (m) => (m === '{#}' ? String(index) : item)));
    return named ? filled : [...filled, item];
  });
}

type Quoting = 'none' | 'single' | 'double';

/**
 * A --shell script (what the agent runs with sh -c) for one item: `KQ_ITEM='…'; script`, each `{item}`
 * replaced by a reference to the variable fitting the quoting around it: `"$KQ_ITEM"` bare, `$KQ_ITEM`
 * inside double quotes, `'"$KQ_ITEM"'` inside single quotes (closing and reopening them). `$(` and
 * backticks open a fresh context. Were the scan wrong (sh has more syntax than this follows), the worst is a
 * split or literal word: a parameter's value is never parsed as code.
 */
function shellItem(script: string, index: number, item: string, named: boolean): string {
  const ref: Record<Quoting, string> = { none: `"$${ITEM_VARIABLE}"`, double: `$${ITEM_VARIABLE}`, single: `'"$${ITEM_VARIABLE}"'` };
  const stack: Quoting[] = ['none'];
  let out = '';
  for (let at = 0; at < script.length;) {
    const placeholder = /^(\{item\}|\{\}|\{#\})/.exec(script.slice(at, at + 6));
    const context = stack[stack.length - 1]!;
    if (placeholder) {
      out += placeholder[1] === '{#}' ? String(index) : ref[context];
      at += placeholder[1]!.length;
      continue;
    }
    const c = script[at]!;
    out += c;
    at++;
    if (context === 'single') {
      if (c === "'") stack.pop();
    } else if (c === '\\' && at < script.length) {
      out += script[at++];
    } else if (c === '"') {
      if (context === 'double') stack.pop(); else stack.push('double');
    } else if (c === "'" && context === 'none') {
      stack.push('single');
    } else if (c === '$' && script[at] === '(') {
      out += script[at++];
      stack.push('none');
    } else if (c === ')' && context === 'none' && stack.length > 1) {
      stack.pop();
    }
  }
  return `${ITEM_VARIABLE}=${shellQuote(item)}; ${out}${named ? '' : ' ' + ref.none}`;
}

/** Why these items can never be run, or null: a NUL byte ends a C string, so no program could receive it. */
export function badItem(items: readonly string[]): string | null {
  const i = items.findIndex((item) => item.includes('\0'));
  return i < 0 ? null : `item ${i + 1} contains a NUL byte, which no program can receive (use -0 to split items at NUL bytes)`;
}
