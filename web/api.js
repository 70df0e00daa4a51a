// Talking to kq's monitor API: JSON requests and server-sent event streams, with the token if one is set.
// The token comes from ?token= in the page's address once; it is then kept for the tab (sessionStorage)
// and taken out of the address bar.

const params = new URLSearchParams(location.search);
let token = params.get('token') || sessionStorage.getItem('kq-token') || '';
if (params.has('token')) {
  sessionStorage.setItem('kq-token', token);
  params.delete('token');
  const rest = params.toString();
  history.replaceState(null, '', location.pathname + (rest ? `?${rest}` : '') + location.hash);
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** A URL with the token as a query parameter (for EventSource, <img> and links, which cannot send headers). */
export function withToken(path) {
  if (!token) return path;
  return `${path}${path.includes('?') ? '&' : '?'}token=${encodeURIComponent(token)}`;
}

export async function api(path, { method = 'GET', body } = {}) {
  const headers = { accept: 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  let res;
  for (let attempt = 0; ; attempt++) {
    try {
      res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
      break;
    } catch (err) {
      // A network error before any answer: reads are safe to try again; writes are not (they may have happened).
      if (method !== 'GET' || attempt >= 2) throw new ApiError(0, 'network', `cannot reach kq: ${err.message}`);
      await new Promise((r) => setTimeout(r, 300 * (attempt + 1)));
    }
  }
  const isJson = (res.headers.get('content-type') || '').includes('json');
  const data = isJson ? await res.json() : await res.text();
  if (!res.ok) throw new ApiError(res.status, data?.code ?? 'error', data?.error ?? `${res.status} ${res.statusText}`);
  return data;
}

/**
 * An EventSource with handlers per event name. It reconnects by itself (resuming from the last event id
 * where the stream sets one); `onState` hears 'open' / 'reconnecting' / 'closed'.
 */
export function stream(path, handlers, onState = () => {}) {
  const source = new EventSource(withToken(path));
  for (const [name, fn] of Object.entries(handlers)) {
    source.addEventListener(name, (e) => {
      let data;
      const started = performance.now();
      try {
        data = JSON.parse(e.data);
      } catch {
        return;
      }
      fn(data, { id: e.lastEventId, parseMs: performance.now() - started });
    });
  }
  source.addEventListener('open', () => onState('open'));
  source.addEventListener('error', () => onState(source.readyState === EventSource.CLOSED ? 'closed' : 'reconnecting'));
  return source;
}
