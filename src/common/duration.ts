/** Parse `90`, `90s`, `30m`, `2h`, `7d`, `500ms` into milliseconds (a bare number is seconds). */
export function parseDuration(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/.exec(text);
  if (!m) throw new Error(`invalid duration "${text}" (examples: 90s, 30m, 2h, 7d)`);
  const n = Number(m[1]);
  const unit = m[2] ?? 's';
  const ms = unit === 'ms' ? n : unit === 's' ? n * 1000 : unit === 'm' ? n * 60_000 : unit === 'h' ? n * 3_600_000 : n * 86_400_000;
  if (ms <= 0) throw new Error(`duration must be positive: "${text}"`);
  return Math.round(ms);
}

/** Milliseconds as people write them, the inverse of parseDuration for help texts: `2s`, `500ms`, `30m`, `1.5h`. */
export function formatDuration(ms: number): string {
  for (const [unit, size] of [['d', 86_400_000], ['h', 3_600_000], ['m', 60_000], ['s', 1000]] as const) {
    if (ms >= size && Number.isInteger((ms / size) * 10)) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}
