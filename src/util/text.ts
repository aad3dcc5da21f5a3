/** `text` cut to at most `max` characters, the last one an ellipsis where it was cut. */
export function truncate(text: string, max: number): string {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/** `host` as a URL names it: an IPv6 address in brackets (ws://[::1]:8787), since its colons would read as a port. */
export function urlHost(host: string): string {
  return host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
}
