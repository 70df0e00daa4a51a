/**
 * Revoking a key must cut the connections it already has: ZAP asks only at the handshake, so a peer
 * admitted before a revoke would keep talking. kq looks at the allowlist every second and, when a key
 * it admitted (at any time) is gone, calls `cut` (the daemon closes every connection: each peer must pass
 * ZAP again, allowed ones reconnect by themselves).
 */
import type { Allowlist } from '../common/keys.js';

export const REVOCATION_CHECK_MS = 1000;

export function watchRevocations(allowlist: Allowlist, cut: (keys: string[]) => Promise<void>): () => void {
  // The keys ZAP admitted, not the keys seen at the last look: a key added, used and revoked between two
  // looks was never seen, and its connection stayed open. A key is forgotten only once its connections are
  // cut: a cut that failed is tried again at the next look.
  let cutting = false;
  const timer = setInterval(() => {
    if (cutting) return;
    const now = allowlist.current();
    const gone = [...allowlist.admitted].filter((k) => !now.has(k));
    if (gone.length === 0) return;
    cutting = true;
    cut(gone).then(
      () => {
        const allowed = allowlist.current();
        for (const k of gone) if (!allowed.has(k)) allowlist.admitted.delete(k);
      },
      () => undefined,
    ).finally(() => { cutting = false; });
  }, REVOCATION_CHECK_MS);
  timer.unref();
  return () => clearInterval(timer);
}
