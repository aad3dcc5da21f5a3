import net from 'node:net';

/** Node's codes for a coordinator's certificate the worker does not trust, with what to do about each. */
const UNTRUSTED = "pass --ca with the CA that signed the coordinator's certificate (the certificate itself, where it is self-signed)";
const CERTIFICATE_HINTS = new Map([
  ...['DEPTH_ZERO_SELF_SIGNED_CERT', 'SELF_SIGNED_CERT_IN_CHAIN', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UNABLE_TO_GET_ISSUER_CERT', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY'].map((code) => [code, UNTRUSTED] as const),
  ['ERR_TLS_CERT_ALTNAME_INVALID', "the coordinator's certificate does not name the host in --coordinator: connect by a name it lists, or issue it for this one"],
  ['CERT_HAS_EXPIRED', "the coordinator's certificate is out of date: renew it, or check this machine's clock"],
  ['CERT_NOT_YET_VALID', "the coordinator's certificate is not valid yet: check this machine's clock"],
]);

/**
 * A connection error, with what to do where the cause is likely a setting:
 * these are still retried (a proxy may show its own certificate while the
 * coordinator starts), but a worker that retries for ever should say why.
 */
export function withHint(e: Error & { code?: string; host?: string; cert?: { subjectaltname?: string } }, url: string, ca?: string): string {
  let hint = e.code && CERTIFICATE_HINTS.get(e.code);
  // An address is matched against the certificate's IP entries only, never its CN: a certificate made with
  // `-subj /CN=10.0.0.5` and no subjectAltName names no address, and Node's message then ends in an empty list.
  if (e.code === 'ERR_TLS_CERT_ALTNAME_INVALID' && e.host && net.isIP(e.host) && !/IP Address:/.test(e.cert?.subjectaltname ?? '')) {
    const names = e.cert?.subjectaltname;
    const addressHint = names
      ? `the coordinator's certificate names no IP address (only ${names}), and an address in --coordinator is matched against its IP entries alone: connect by a name it lists, or issue it with subjectAltName IP:${e.host} too`
      : `the coordinator's certificate has no subjectAltName, and an address in --coordinator is matched against its IP entries alone, never its CN: issue it with subjectAltName IP:${e.host} (openssl: -addext 'subjectAltName=IP:${e.host}')`;
    // Node's message ends in the list of IP entries, here empty.
    return `${e.message.replace(/:\s*$/, '')}: ${addressHint}`;
  }
  // Told to pass --ca, a worker that did would look for a mistake that is not there: the CA given is the wrong one.
  if (hint === UNTRUSTED && ca) hint = `--ca ${ca} did not sign the coordinator's certificate: pass the CA that did (the certificate itself, where it is self-signed)`;
  // Node 24 ends some of these messages (a self-signed or unverifiable certificate) with advice of its own, which ganfleet's hint replaces.
  if (hint) return `${e.message.replace(/; if the root CA is installed locally, try running Node\.js with --use-system-ca$/, '')}: ${hint}`;
  // Closed before the WebSocket opened: a TLS port spoken to in plain text does this, and so does a proxy with no coordinator behind it.
  if (e.message === 'socket hang up' && url.startsWith('ws://')) return `${e.message}: the other end closed before the WebSocket opened (no coordinator behind a proxy or load balancer, or a coordinator with --tls-cert, whose URL starts with wss://)`;
  // OpenSSL's text for a server that answered the handshake in plain text.
  if (url.startsWith('wss://') && /wrong version number/.test(e.message)) return `TLS handshake failed, the server answered in plain text: if the coordinator has no --tls-cert, its URL starts with ws://`;
  return e.message;
}
