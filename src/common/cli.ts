/** Shared command-line parsing helpers: values are checked where they are read, with a one-line error. */
import { InvalidArgumentError, Option, type Command } from 'commander';
import { formatDuration, parseDuration } from './duration.js';
import { printableLines } from './printable.js';

export function intArg(min: number, max: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!/^-?\d+$/.test(value.trim()) || n < min || n > max) throw new InvalidArgumentError(`expected a whole number from ${min} to ${max}, got "${value}"`);
    return n;
  };
}

export function durationArg(value: string): number {
  try {
    return parseDuration(value);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

export const portArg = intArg(0, 65535);

/** A duration option whose default --help shows as people write it (`2s`, not `2000`). */
export function durationOption(flags: string, description: string, defaultMs?: number): Option {
  const option = new Option(flags, description).argParser(durationArg);
  return defaultMs === undefined ? option : option.default(defaultMs, formatDuration(defaultMs));
}

/** A setting that may come from the environment (a string) or from its flag (already parsed). */
export class EnvError extends Error {}

/**
 * Parse a value that came from an environment variable, after commander is done (so --help works
 * whatever the environment holds). A flag's value arrives already parsed and is returned as is.
 */
export function fromEnv<T>(value: T | string, variable: string, parse: (text: string) => T): T {
  if (typeof value !== 'string') return value;
  try {
    return parse(value);
  } catch (err) {
    throw new EnvError(`${variable}=${value} is not valid: ${(err as Error).message}`);
  }
}

/** Exit code for bad usage: documented in every --help. */
export const EXIT_USAGE = 2;

/**
 * Make commander exit with EXIT_USAGE on bad usage instead of its default 1. Help asked for (--help, the
 * help command) exits 0; usage printed because the command line was incomplete (bare `kqctl`, `kqctl
 * remote`) goes to stderr and is a usage error like any other.
 */
export function usageExitCodes(program: Command): Command {
  // Usage errors quote what was typed (or pasted): shown escaped, never obeyed by the terminal.
  program.configureOutput({ outputError: (text, write) => write(printableLines(text)) });
  program.exitOverride((err) => {
    process.exit(err.exitCode === 0 ? 0 : EXIT_USAGE);
  });
  return program;
}
