import crypto from 'node:crypto';
import fs from 'node:fs';

/** Whether `parse` takes the file's bytes (a certificate, a private key) without throwing. */
function holds(file: string, parse: (bytes: Buffer) => unknown): boolean {
  try {
    parse(fs.readFileSync(file));
    return true;
  } catch {
    return false;
  }
}

const holdsCertificate = (file: string) => holds(file, (b) => new crypto.X509Certificate(b));

/**
 * Why --ca cannot be trusted as given, or null. X509Certificate reads DER too, but
 * the TLS client's `ca` takes PEM only and silently trusts nothing from a DER file.
 */
export function caProblem(file: string): string | null {
  if (!holdsCertificate(file)) return `--ca ${file} holds no PEM certificate (a private key, say): pass the CA that signed the coordinator's certificate (the certificate itself, where it is self-signed)`;
  if (!/-----BEGIN (TRUSTED |X509 )?CERTIFICATE-----/.test(fs.readFileSync(file, 'latin1'))) return `--ca ${file} holds a DER certificate; the worker takes PEM (openssl x509 -inform DER -in ${file} -out ca.pem)`;
  return null;
}
const holdsPrivateKey = (file: string) => holds(file, (b) => crypto.createPrivateKey(b));

/** Why --tls-cert and --tls-key cannot serve TLS, or null; found here, named by flag, not as OpenSSL's "no start line" at bind. */
export function tlsPairProblem(certFile: string, keyFile: string): string | null {
  let cert: crypto.X509Certificate;
  const text = fs.readFileSync(certFile);
  try {
    cert = new crypto.X509Certificate(text);
  } catch {
    return `--tls-cert ${certFile} holds no PEM certificate${holdsPrivateKey(certFile) ? ' but a private key: are --tls-cert and --tls-key swapped?' : ''}`;
  }
  // X509Certificate reads DER too; the TLS server takes PEM only.
  if (!text.includes('-----BEGIN CERTIFICATE-----')) return `--tls-cert ${certFile} holds a DER certificate; the server takes PEM (openssl x509 -inform DER -in ${certFile} -out cert.pem)`;
  let key: crypto.KeyObject;
  try {
    key = crypto.createPrivateKey(fs.readFileSync(keyFile));
  } catch {
    return `--tls-key ${keyFile} holds no PEM private key (an encrypted one needs its passphrase removed)`;
  }
  return cert.checkPrivateKey(key) ? null : `--tls-key ${keyFile} is not the key of the certificate in --tls-cert ${certFile}`;
}

/**
 * Why workers will refuse --tls-cert's dates now, or null. Not a usage error:
 * a certificate may be renewed in place, and a worker's clock may differ.
 */
export function certificateDatesProblem(certFile: string, now = new Date()): string | null {
  const cert = new crypto.X509Certificate(fs.readFileSync(certFile));
  const [from, to] = [new Date(cert.validFrom), new Date(cert.validTo)];
  if (now > to) return `--tls-cert ${certFile} expired at ${to.toISOString()}: workers refuse it (certificate has expired) until it is renewed and the coordinator restarted`;
  if (now < from) return `--tls-cert ${certFile} is not valid until ${from.toISOString()}: workers refuse it until then (check this machine's clock)`;
  return null;
}

/**
 * Why workers may refuse --tls-cert's names, or null: one with no
 * subjectAltName (made with `-subj /CN=…` alone) names no address, since an
 * address in --coordinator is never matched against a CN. Not a usage error:
 * workers that connect by a host name matching its CN still take it.
 */
export function certificateNamesProblem(certFile: string): string | null {
  const cert = new crypto.X509Certificate(fs.readFileSync(certFile));
  if (cert.subjectAltName) return null;
  const cn = /^CN=(.*)$/m.exec(cert.subject)?.[1];
  return `--tls-cert ${certFile} has no subjectAltName${cn ? ` (only the CN ${cn})` : ''}: workers whose --coordinator gives an IP address refuse it, since an address is never matched against a CN; issue it with subjectAltName=DNS:<host>,IP:<address> (README: Several machines)`;
}
