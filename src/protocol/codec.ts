/** JSON encoding of wire messages, and validation on the way in. */
import type { z } from 'zod';
import { PROTOCOL_VERSION } from './version.js';

export function encode(message: object): Buffer {
  return Buffer.from(JSON.stringify(message));
}

export type Decoded<T> = { ok: true; value: T } | { ok: false; error: string };

/** Parse and validate one frame. Never throws: a peer's bad bytes become an error string. */
export function decode<S extends z.ZodType>(schema: S, frame: Buffer | undefined): Decoded<z.infer<S>> {
  if (!frame) return { ok: false, error: 'missing frame' };
  let raw: unknown;
  try {
    raw = JSON.parse(frame.toString('utf8'));
  } catch {
    return { ok: false, error: `not JSON (${frame.length} bytes)` };
  }
  if (typeof raw === 'object' && raw !== null && 'v' in raw && raw.v !== PROTOCOL_VERSION) {
    if (typeof raw.v !== 'number') {
      return { ok: false, error: `invalid message: "v" must be the number ${PROTOCOL_VERSION}, not the ${raw.v === null ? 'value null' : `${typeof raw.v} ${JSON.stringify(raw.v)?.slice(0, 40)}`}` };
    }
    return { ok: false, error: `protocol version ${String(raw.v)} (this kq speaks ${PROTOCOL_VERSION})` };
  }
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    return { ok: false, error: `invalid message: ${issue?.path.join('.') || '(root)'}: ${issue?.message ?? 'unknown'}` };
  }
  return { ok: true, value: parsed.data };
}
