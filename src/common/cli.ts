/** Shared command-line parsing helpers: values are checked where they are read, with a one-line error. */
import { InvalidArgumentError, type Command } from 'commander';
import { parseDuration } from './duration.js';
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

/** Exit code for bad usage: documented in every --help. */
export const EXIT_USAGE = 2;

/** Make commander exit with EXIT_USAGE on bad usage instead of its default 1, keeping --help at 0. */
export function usageExitCodes(program: Command): Command {
  // Usage errors quote what was typed (or pasted): shown escaped, never obeyed by the terminal.
  program.configureOutput({ outputError: (text, write) => write(printableLines(text)) });
  program.exitOverride((err) => {
    if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') process.exit(0);
    process.exit(err.exitCode === 0 ? 0 : EXIT_USAGE);
  });
  return program;
}
