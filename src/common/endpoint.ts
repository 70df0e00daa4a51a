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

export function isLoopback(address: string): boolean {
  return address === 'localhost' || address === '::1' || address.startsWith('127.');
}
