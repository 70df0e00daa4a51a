/** kqctl's exit codes: a shell script can trust them (documented in `kqctl --help` and README). */
export const EXIT = {
  ok: 0,
  /** A job the command waited on ended Failed or Cancelled. */
  jobFailed: 1,
  /** Bad usage or input: unknown option, invalid frame range, unknown job id, empty command. */
  usage: 2,
  /** kq is not running or not reachable at the address tried. */
  unreachable: 3,
  /** remote start/stop: the SSH connection failed or was refused (host key, login), or a remote script failed. */
  remote: 4,
  /** remote start: the agents started but did not register with kq within --register-timeout. */
  notRegistered: 5,
  /** Anything else that went wrong: an internal error in kq or kqctl, or output that could not be written. */
  unexpected: 6,
  /**
   * A request that changes something (submit, stop, restart, …) reached kq but no answer came in time: it may
   * have been applied. Check (`kqctl list`) before retrying; exit 3 means kq surely did not get it.
   */
  noReply: 7,
} as const;

export class CliError extends Error {
  /** `lines`: a report of kqctl's own made of several lines (SSH diagnoses), printed as lines, each escaped. */
  constructor(readonly exitCode: number, message: string, readonly lines = false) {
    super(message);
  }
}
