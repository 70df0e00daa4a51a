import net from 'node:net';

/** ZeroMQ endpoint strings; IPv6 literals need brackets. */
export function tcpEndpoint(host: string, port: number | '*'): string {
  const h = host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
  return `tcp://${h}:${port}`;
}

export function portOf(endpoint: string): number {
  const m = /:(\d+)$/.exec(endpoint);
  if (!m) throw new Error(`no port in endpoint ${endpoint}`);
  return Number(m[1]);
}

const LOOPBACK = new net.BlockList();
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4'); // IPv4-mapped IPv6 (::ffff:127.x.y.z) matches too
LOOPBACK.addAddress('::1', 'ipv6');

/**
 * True for a literal loopback IP (127.0.0.0/8, ::1, IPv4-mapped, brackets allowed) or exactly `localhost`.
 * Never by prefix: a name like `127.0.0.1.attacker.example` can resolve to 127.0.0.1 (DNS rebinding) and
 * must not count as loopback.
 */
export function isLoopback(address: string): boolean {
  const a = address.startsWith('[') && address.endsWith(']') ? address.slice(1, -1) : address;
  if (a.toLowerCase() === 'localhost') return true;
  const family = net.isIP(a);
  return family !== 0 && LOOPBACK.check(a, family === 4 ? 'ipv4' : 'ipv6');
}
