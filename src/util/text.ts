/** `text` cut to at most `max` characters, the last one an ellipsis where it was cut. */
export function truncate(text: string, max: number): string {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/** `n` and `what`, plural (`whats`, where an s is not it) unless `n` is 1: 2 workers, 1 worker, 0 workers. */
export function plural(n: number, what: string, whats = `${what}s`): string {
  return `${n} ${n === 1 ? what : whats}`;
}

/**
 * `host` as a URL names it: an IPv6 address in brackets (ws://[::1]:8787), since its colons would read as a port,
 * and a link-local one's zone id after %25, as RFC 6874 writes it (http://[fe80::1%25eth0]:9090, which curl -g takes).
 */
export function urlHost(host: string): string {
  return host.includes(':') && !host.startsWith('[') ? `[${host.replace('%', '%25')}]` : host;
}

/** `url` as a log shows it: a user name and password in it (wss://user:pass@host, which ws sends as Basic auth) are left out. */
export function withoutCredentials(url: string): string {
  // One the parser refuses (a port beyond 65535, a # or / in the password) still names them before an @: through the
  // last @, since where the password ends cannot be told (a base64 one holds /). So does one whose path, query or
  // fragment holds an @: wss://user:12/34@host parses as host user, port 12, the password's rest as its path.
  const u = URL.canParse(url) ? new URL(url) : null;
  if (!u || `${u.pathname}${u.search}${u.hash}`.includes('@')) return url.replace(/^([a-z][a-z\d+.-]*:\/\/).*@/is, '$1');
  if (!u.username && !u.password) return url;
  u.username = '';
  u.password = '';
  return u.href;
}

/**
 * The first `max` of `items`, and a count of the rest: names of peers in one
 * log line, which a run with much churn (or a token holder rejoining under
 * fresh pids) would otherwise make megabytes long.
 */
export function someOf(items: readonly string[], max = 10): string {
  return items.length <= max ? items.join(', ') : `${items.slice(0, max).join(', ')} and ${items.length - max} more`;
}
