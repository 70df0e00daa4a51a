/**
 * Jobs built from a list of items (`kqctl submit --each`): one run per item, with `{item}` (or `{}`, as in
 * xargs -I{} and GNU parallel) replaced by the item and `{#}` by its 1-based index. The item always lands
 * inside the argv element that names it, never split into words; with --shell it is quoted for sh, so
 * whatever an item holds (spaces, quotes, `$(…)`, newlines) it is data, not code. An argv that names no
 * item placeholder gets the item as its last argument, as xargs does.
 */
import { shellQuote } from '../ssh/shell-quote.js';

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
    const value = shell ? shellQuote(item) : item;
    const filled = argv.map((arg) => arg.replace(ITEM_PLACEHOLDER, (m) => (m === '{#}' ? String(index) : value)));
    return named ? filled : [...filled, value];
  });
}

/** Why these items can never be run, or null: a NUL byte ends a C string, so no program could receive it. */
export function badItem(items: readonly string[]): string | null {
  const i = items.findIndex((item) => item.includes('\0'));
  return i < 0 ? null : `item ${i + 1} contains a NUL byte, which no program can receive (use -0 to split items at NUL bytes)`;
}
