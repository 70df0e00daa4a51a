/**
 * Effects another process can see (ROUTER sends, broadcasts, job-log lines), held while a group of store
 * transitions shares one write transaction (UpdateHandler.handleGroup) and run only once it committed.
 * Were they sent before, a rolled-back claim would already have told an agent of an attempt number that
 * kq hands out again, and a crash before the commit would leave the world knowing of changes the table
 * does not have. Outside a group, effects run at once, as before.
 */
export class AfterCommit {
  private held: Array<() => void> | null = null;

  constructor(private readonly onError: (err: unknown) => void) {}

  /** Run `effect` now (its errors are the caller's, as before), or, inside a group, once the group's transaction has committed. */
  run(effect: () => void): void {
    if (this.held) this.held.push(effect);
    else effect();
  }

  /** Start holding effects (a group transaction begins). */
  hold(): void {
    this.held = [];
  }

  /** How many effects are held: mark before one transition of a group, to drop its effects if it fails. */
  mark(): number {
    return this.held?.length ?? 0;
  }

  /** That transition was rolled back (its savepoint): its effects must not happen. */
  dropSince(mark: number): void {
    this.held?.splice(mark);
  }

  /** The group committed: run what it held, in order; each failure alone is reported. */
  release(): void {
    const due = this.held ?? [];
    // Effects run after the hold ends: one that changes the store again (failTask) does so in its own transaction.
    this.held = null;
    for (const effect of due) this.guarded(effect);
  }

  /** The group's transaction was rolled back: none of its effects happen. */
  discard(): void {
    this.held = null;
  }

  private guarded(effect: () => void): void {
    try {
      effect();
    } catch (err) {
      this.onError(err);
    }
  }
}
