import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import path from 'node:path';
import { CLI, nodeUnrunnableBy } from './helpers';
import { isLoopback, publicWithoutToken, tokenProblem } from '../src/coordinator/config';
import { withHint } from '../src/worker/connection-hints';
import { certificateDatesProblem, certificateNamesProblem } from '../src/util/tls';
import { GanfleetProcess, loggedSteps, metricTotal, scrape, startCoordinator, startWorker, startedUpAt, tempDir } from './harness';

let dir: string;
let cert: string;
let key: string;

before(() => {
  dir = tempDir('tls');
  cert = path.join(dir, 'cert.pem');
  key = path.join(dir, 'key.pem');
  execFileSync(
    'openssl',
    ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1'],
    { stdio: 'pipe' },
  );
});

after(() => fs.rmSync(dir, { recursive: true, force: true }));

/** `p`, or 'timeout' after `ms` (without keeping the process alive). */
function within<T>(p: Promise<T>, ms: number): Promise<T | 'timeout'> {
  return Promise.race([p, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), ms).unref())]);
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i + 1);
}

/** Neither the test's environment nor a developer's shell may decide these. */
const CLEAN_ENV = { GANFLEET_TOKEN: undefined, GANFLEET_INSECURE: undefined, GANFLEET_CA: undefined, GANFLEET_HOST: undefined };

function trainingArgs(steps: number, out: string): string[] {
  return ['--min-workers', '1', '--steps', String(steps), '--log-every', '1', '--sample-every', String(steps), '--checkpoint-every', '0', '--backend', 'wasm', '--out', out];
}

test('wss://: a worker trusting the certificate with --ca trains to the end; one without --ca or on ws:// never gets in and gives up', { timeout: 120_000 }, async (t) => {
  const out = path.join(dir, 'run-tls');
  const steps = 30;
  const { proc: coord, url } = await startCoordinator([...trainingArgs(steps, out), '--tls-cert', cert, '--tls-key', key], CLEAN_ENV);
  const procs: GanfleetProcess[] = [coord];
  t.after(() => procs.forEach((p) => p.kill()));
  assert.match(url, /^wss:\/\/127\.0\.0\.1:\d+$/);
  // Loopback keeps other machines out, not other users of this one.
  assert.match(coord.log, /listening for workers on wss:\/\/\S+ \(no --token: anyone who can reach it can join, on loopback every user of this machine\)/);

  // First the workers that must fail, while the coordinator waits for its first worker.
  const untrusting = startWorker(url, 'no-ca', ['--give-up-after', '2'], CLEAN_ENV);
  const plain = startWorker(url.replace(/^wss:/, 'ws:'), 'plain-ws', ['--give-up-after', '2'], CLEAN_ENV);
  procs.push(untrusting, plain);
  // Their start-up (two loading tfjs at once, beside another test file's processes) is most of this wait; how soon
  // they give up once started is bounded by the --give-up-after times their logs report, checked below.
  const [untrustingCode, plainCode] = await Promise.all([within(untrusting.exited, 60_000), within(plain.exited, 60_000)]);
  assert.equal(untrustingCode, 1, untrusting.log);
  // Still retried (a proxy may show its own certificate while the coordinator starts), with what to do.
  assert.match(untrusting.log, /could not connect to wss:\/\/127\.0\.0\.1:\d+ \(self[- ]signed certificate: pass --ca with the CA that signed the coordinator's certificate \(the certificate itself, where it is self-signed\)\); reconnecting in/);
  assert.ok((untrusting.log.match(/could not connect/g) ?? []).length >= 2, `retried with backoff:\n${untrusting.log}`);
  // The backoff never sleeps past --give-up-after, and the log says how long it really was.
  const gaveUp = /giving up: not admitted by a coordinator for ([\d.]+) s, --give-up-after 2 \(self[- ]signed certificate/.exec(untrusting.log);
  assert.ok(gaveUp && Number(gaveUp[1]) >= 2 && Number(gaveUp[1]) < 4, untrusting.log);
  assert.doesNotMatch(untrusting.log, /joined as/);
  assert.equal(plainCode, 1, plain.log);
  assert.match(plain.log, /could not connect to ws:\/\/127\.0\.0\.1:\d+ \(socket hang up: the other end closed before the WebSocket opened \(.*a coordinator with --tls-cert, whose URL starts with wss:\/\/\)\); reconnecting in/);
  assert.doesNotMatch(plain.log, /joined as/);
  assert.doesNotMatch(coord.log, /joined from/, 'neither failed worker was admitted');
  assert.match(coord.log, /waiting for workers at step 0: 0\/1 workers connected/);

  const trusting = startWorker(url, 'with-ca', ['--ca', cert], CLEAN_ENV);
  procs.push(trusting);
  const code = await within(coord.exited, 40_000);
  assert.equal(code, 0, coord.log);
  assert.equal(await within(trusting.exited, 10_000), 0, trusting.log);
  assert.match(trusting.log, /connected to wss:\/\/127\.0\.0\.1:\d+/);
  assert.match(trusting.log, /stopped by the coordinator/);
  assert.match(coord.log, /w1 joined from \S+ \("with-ca"/);
  assert.deepEqual(loggedSteps(coord.log), range(steps));
});

// Nothing said an expired --tls-cert at the coordinator's start: it waited for workers that each refused it.
test('an expired --tls-cert is named at the coordinator\'s start, and a worker trusting it says it is out of date', { timeout: 120_000 }, async (t) => {
  const ca = path.join(dir, 'expired');
  fs.mkdirSync(ca);
  fs.writeFileSync(path.join(ca, 'index.txt'), '');
  fs.writeFileSync(path.join(ca, 'ca.cnf'), '[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\ndefault_md = sha256\npolicy = p\ncopy_extensions = copy\n[p]\ncommonName = supplied\n');
  const [oldKey, oldCert] = [path.join(ca, 'key.pem'), path.join(ca, 'cert.pem')];
  const sh = (args: string[]) => execFileSync('openssl', args, { cwd: ca, stdio: 'pipe' });
  sh(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', oldKey, '-out', 'req.csr', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1']);
  sh(['ca', '-config', 'ca.cnf', '-selfsign', '-keyfile', oldKey, '-in', 'req.csr', '-out', oldCert, '-startdate', '20200101000000Z', '-enddate', '20200102000000Z', '-batch', '-rand_serial']);

  const { proc: coord, url } = await startCoordinator([...trainingArgs(5, path.join(dir, 'run-expired')), '--tls-cert', oldCert, '--tls-key', oldKey], CLEAN_ENV);
  t.after(() => coord.kill());
  assert.match(coord.log, new RegExp(`warning: --tls-cert ${oldCert} expired at 2020-01-02T00:00:00.000Z: workers refuse it \\(certificate has expired\\) until it is renewed and the coordinator restarted`));
  const worker = startWorker(url, 'trusts-expired', ['--ca', oldCert, '--give-up-after', '1'], CLEAN_ENV);
  t.after(() => worker.kill());
  assert.equal(await within(worker.exited, 60_000), 1, worker.log);
  assert.match(worker.log, /certificate has expired: the coordinator's certificate is out of date: renew it, or check this machine's clock/);

  // The dates of the suite's own certificate, one day from now.
  assert.equal(certificateDatesProblem(cert), null);
  assert.match(certificateDatesProblem(cert, new Date(Date.now() - 86_400_000)) ?? '', new RegExp(`^--tls-cert ${cert} is not valid until \\S+: workers refuse it until then \\(check this machine's clock\\)$`));
});

test("an untrusted certificate's error ends with ganfleet's hint only: Node 24's own advice is replaced, so the two do not run together", () => {
  const untrusted = (message: string) => withHint(Object.assign(new Error(message), { code: 'DEPTH_ZERO_SELF_SIGNED_CERT' }), 'wss://coordinator:8765');
  const expected = "self-signed certificate: pass --ca with the CA that signed the coordinator's certificate (the certificate itself, where it is self-signed)";
  assert.equal(untrusted('self-signed certificate'), expected);
  assert.equal(untrusted('self-signed certificate; if the root CA is installed locally, try running Node.js with --use-system-ca'), expected);
  // Given --ca already, the hint says that CA is the wrong one, not to pass --ca.
  const withCa = withHint(Object.assign(new Error('unable to verify the first certificate'), { code: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' }), 'wss://coordinator:8765', '/etc/ganfleet/ca.pem');
  assert.equal(withCa, "unable to verify the first certificate: --ca /etc/ganfleet/ca.pem did not sign the coordinator's certificate: pass the CA that did (the certificate itself, where it is self-signed)");
  // A hang-up on wss:// gets no hint to use wss://, which it already does.
  assert.equal(withHint(new Error('socket hang up'), 'wss://coordinator:8765'), 'socket hang up');
});

test('wss://: a client that never starts its TLS handshake is cut after 10 s, as a silent client on ws:// is (Node\'s TLS default held it 120 s)', { timeout: 60_000 }, async (t) => {
  const { proc: coord, url } = await startCoordinator([...trainingArgs(1, path.join(dir, 'run-silent')), '--tls-cert', cert, '--tls-key', key], CLEAN_ENV);
  t.after(() => coord.kill());
  const silent = net.connect(Number(new URL(url).port), '127.0.0.1');
  silent.on('error', () => {});
  const opened = Date.now();
  const closedAfter = await within(new Promise<number>((r) => silent.on('close', () => r(Date.now() - opened))), 30_000);
  silent.destroy();
  assert.ok(closedAfter !== 'timeout' && closedAfter >= 9_000, `closed after ${closedAfter} ms`);
});

test('wss://: a client that never starts its TLS handshake does not hold the coordinator\'s exit: it is cut when the coordinator closes', { timeout: 60_000 }, async (t) => {
  const { proc: coord, url } = await startCoordinator([...trainingArgs(1, path.join(dir, 'run-silent-exit')), '--tls-cert', cert, '--tls-key', key], CLEAN_ENV);
  t.after(() => coord.kill());
  const silent = net.connect(Number(new URL(url).port), '127.0.0.1');
  silent.on('error', () => {});
  t.after(() => silent.destroy());
  await new Promise((r) => silent.once('connect', r));
  const signalled = Date.now();
  coord.kill('SIGTERM');
  const code = await within(coord.exited, 30_000);
  // Node's HTTPS server tracks a connection only once its handshake is done: closing waited for the 10 s handshake timeout.
  const tookMs = Date.now() - signalled;
  assert.equal(code, 0, coord.log);
  assert.ok(tookMs < 5_000, `exited ${tookMs} ms after SIGTERM`);
  assert.equal(silent.destroyed || silent.readableEnded, true);
});

test('token: a wrong or missing token is refused with HTTP 401 and the worker exits 1 at once; the right one trains; wss:// to it, and a key as --ca, are named', { timeout: 120_000 }, async (t) => {
  // A blank inside and a Latin-1 letter: an Authorization header carries both unchanged.
  const secret = 'tls-test secret-0123456789-ä';
  const out = path.join(dir, 'run-token');
  const steps = 10;
  const { proc: coord, url, metrics } = await startCoordinator(trainingArgs(steps, out), { ...CLEAN_ENV, GANFLEET_TOKEN: secret });
  const procs: GanfleetProcess[] = [coord];
  t.after(() => procs.forEach((p) => p.kill()));
  assert.match(coord.log, /listening for workers on ws:\/\/\S+ \(token required\)/);

  const wrong = startWorker(url, 'wrong-token', ['--token', 'not-the-secret'], CLEAN_ENV);
  const missing = startWorker(url, 'no-token', [], CLEAN_ENV);
  // When each exits, taken as it happens: the waits below are one after another.
  const exitedAt = (w: GanfleetProcess) => w.exited.then(() => Date.now());
  const exits = new Map([[wrong, exitedAt(wrong)], [missing, exitedAt(missing)]]);
  // TLS to a coordinator without it: OpenSSL's "wrong version number", said in words.
  const tlsToPlain = startWorker(url.replace(/^ws:/, 'wss:'), 'tls-to-plain', ['--give-up-after', '2'], CLEAN_ENV);
  // A key where the certificate belongs is a usage error, not a retry loop on "self-signed certificate".
  const keyAsCa = startWorker(url.replace(/^ws:/, 'wss:'), 'key-as-ca', ['--ca', key], CLEAN_ENV);
  procs.push(wrong, missing, tlsToPlain, keyAsCa);
  assert.equal(await within(keyAsCa.exited, 20_000), 2, keyAsCa.log);
  assert.match(keyAsCa.log, /--ca \S+key\.pem holds no PEM certificate \(a private key, say\)/);
  // Started with two other workers loading tfjs at once: their start-up alone took 13 to 17 s on a busy two-core
  // machine (see below), so a 20 s wait for start-up plus --give-up-after 2 had a second or two to spare.
  assert.equal(await within(tlsToPlain.exited, 60_000), 1, tlsToPlain.log);
  assert.match(tlsToPlain.log, /could not connect to wss:\/\/127\.0\.0\.1:\d+ \(TLS handshake failed, the server answered in plain text: if the coordinator has no --tls-cert, its URL starts with ws:\/\/\)/);
  // How soon it gave up once started, by its own count: --give-up-after 2 and at most a last short try.
  const tlsGaveUp = /giving up: not admitted by a coordinator for ([\d.]+) s, --give-up-after 2/.exec(tlsToPlain.log);
  assert.ok(tlsGaveUp && Number(tlsGaveUp[1]) >= 2 && Number(tlsGaveUp[1]) < 4, tlsToPlain.log);
  const [wrongCode, missingCode] = await Promise.all([within(wrong.exited, 20_000), within(missing.exited, 20_000)]);
  for (const [w, c] of [[wrong, wrongCode], [missing, missingCode]] as const) {
    assert.equal(c, 1, w.log);
    assert.match(w.log, /giving up: coordinator answered HTTP 401/);
    // Fatal at the first answer: no retry loop.
    assert.doesNotMatch(w.log, /reconnecting in/);
    assert.doesNotMatch(w.log, /joined as/);
    // Timed from its backend line, after which it connects: the start-up before it, four workers loading tfjs at
    // once, took 13 to 17 s on a busy two-core machine and says nothing about how soon a refusal ends the worker.
    const seconds = ((await exits.get(w)!) - startedUpAt(w)) / 1000;
    t.diagnostic(`${w === wrong ? 'the wrong' : 'no'} token: exited ${seconds.toFixed(1)} s after its start-up`);
    assert.ok(seconds < 5, `refused, the worker took ${seconds} s after its start-up to exit:\n${w.log}`);
  }
  // Both came from 127.0.0.1: a line a minute per address, so that a flood of them cannot fill the disk.
  assert.equal((coord.log.match(/refused a connection from \S+: missing or wrong token/g) ?? []).length, 1);
  assert.equal(metricTotal(await scrape(metrics), 'ganfleet_unauthorized_connections_total'), 2);
  assert.doesNotMatch(coord.log, /joined from/);

  const good = startWorker(url, 'right-token', [], { ...CLEAN_ENV, GANFLEET_TOKEN: secret });
  procs.push(good);
  assert.equal(await within(coord.exited, 40_000), 0, coord.log);
  assert.equal(await within(good.exited, 10_000), 0, good.log);
  assert.deepEqual(loggedSteps(coord.log), range(steps));
  // The secret is never logged nor written to the checkpoint.
  assert.ok(!coord.log.includes(secret) && !good.log.includes(secret), 'the token appears in a log');
  const ckpts = fs.readdirSync(path.join(out, 'checkpoints'));
  assert.ok(ckpts.length > 0);
  for (const f of ckpts) assert.ok(!fs.readFileSync(path.join(out, 'checkpoints', f)).includes(secret), `${f} contains the token`);
});

test('clients refused for their token that reset the connection at once do not take the coordinator down', { timeout: 60_000 }, async (t) => {
  const { proc: coord, url, metrics } = await startCoordinator(trainingArgs(10, path.join(dir, 'run-reset')), { ...CLEAN_ENV, GANFLEET_TOKEN: 'reset-test-secret' });
  t.after(() => coord.kill());
  const port = Number(new URL(url).port);
  const request = 'GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n';
  for (let i = 0; i < 10; i++) {
    const s = net.connect(port, '127.0.0.1', () => {
      s.write(request);
      // The coordinator's 401 then meets a reset socket (ECONNRESET on its write).
      setTimeout(() => s.resetAndDestroy(), i % 2 === 0 ? 0 : 5);
    });
    s.on('error', () => {});
  }
  for (let i = 0; metricTotal(await scrape(metrics), 'ganfleet_unauthorized_connections_total') < 10; i++) {
    assert.ok(i < 100, `fewer than 10 refusals counted:\n${coord.log}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(coord.child.exitCode, null, `the coordinator exited:\n${coord.log}`);
  assert.equal(metricTotal(await scrape(metrics), 'ganfleet_unauthorized_connections_total'), 10);
  // A line a minute per address: 127.0.0.1, and "an unknown address" for a socket reset before it was read.
  assert.ok((coord.log.match(/refused a connection from .*?: missing or wrong token/g) ?? []).length <= 2, coord.log);
  assert.doesNotMatch(coord.log, /ECONNRESET|EPIPE/);
});

test('--host 0.0.0.0 with a token but without TLS warns that the token travels in clear text', { timeout: 30_000 }, async (t) => {
  const out = path.join(dir, 'run-cleartext');
  const coord = new GanfleetProcess(['coordinator', '--host', '0.0.0.0', '--port', '0', '--metrics-port', '-1', '--backend', 'cpu', '--out', out], { ...CLEAN_ENV, GANFLEET_TOKEN: 'cleartext-test-secret' });
  t.after(() => coord.kill());
  await coord.waitFor(/warning: the token and every frame travel in clear text on 0\.0\.0\.0: give --tls-cert and --tls-key/, 20_000);
});

// HTTP drops blanks around a header value, Node sends no character beyond Latin-1 and takes 16 KiB of headers: a
// coordinator took such a token and refused every worker holding the very same one (401, 431, or ERR_INVALID_CHAR in the worker).
test('a token no Authorization header can carry as given is a usage error for coordinator and worker, not a run no worker can join', () => {
  const tooLong = /is \d+ characters; at most 4096 fit the upgrade's headers/;
  // Each with its own reason; 4097 characters, one past the limit (a limit raised to Node's 16 KiB still refused 18,000).
  for (const [token, why] of [
    ['s3cret ', /must not start or end with a blank/],
    [' s3cret', /must not start or end with a blank/],
    ['s3cret\t', /must not start or end with a blank/],
    ['s3cret€', /holds a control character or one beyond Latin-1/],
    ['s3c\r\nret', /holds a control character or one beyond Latin-1/],
    // DEL is a control character too: Node refuses it in a header as it does \r\n.
    ['s3c\x7fret', /holds a control character or one beyond Latin-1/],
    ['s3cret'.repeat(3000), tooLong],
    ['s3c'.padEnd(4097, 'x'), tooLong],
  ] as const) {
    for (const args of [
      ['coordinator', '--port', '0', '--metrics-port', '-1', '--steps', '1', '--out', path.join(dir, 'never')],
      ['worker', '--coordinator', 'ws://127.0.0.1:1', '--give-up-after', '5'],
    ]) {
      const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 30_000, env: { ...process.env, ...CLEAN_ENV, GANFLEET_TOKEN: token } });
      assert.equal(r.status, 2, `${args[0]} with token ${JSON.stringify(token)}: status ${r.status}, ${r.stderr.slice(-400)}`);
      assert.match(r.stderr, /^ganfleet: --token \(GANFLEET_TOKEN\) /);
      assert.match(r.stderr.split('\n')[0], why);
      assert.ok(!r.stderr.includes('s3c'), 'the token is never printed');
    }
  }
  assert.ok(!fs.existsSync(path.join(dir, 'never')));
  // What a header can carry passes: 4096 characters, the limit itself, and Latin-1 beyond ASCII.
  assert.equal(tokenProblem('s3c'.padEnd(4096, 'x')), null);
  assert.equal(tokenProblem('s3cr\xe9t\tx'), null);
});

test('only a loopback address literal (or localhost) counts as loopback: a --host name starting with "127." may resolve to a public address, and is refused without a token (exit 2)', () => {
  for (const host of ['127.0.0.1', '127.1.2.3', '127.1', '0x7f.1', '::1', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1', 'localhost']) assert.equal(isLoopback(host), true, host);
  for (const host of ['127.example.net', '127.0.0.1.nip.io', '127.lan', '127.1.', '0.0.0.0', '::', '::ffff:10.0.0.1', '192.0.2.2', '10.1']) {
    assert.equal(isLoopback(host), false, host);
    assert.match(publicWithoutToken({ host, token: undefined, insecure: false }) ?? '', /refusing to listen on/, host);
    // A token, or --insecure as the refusal says, lets it listen there.
    assert.equal(publicWithoutToken({ host, token: 's3cret', insecure: false }), null, host);
    assert.equal(publicWithoutToken({ host, token: undefined, insecure: true }), null, host);
  }
  // .invalid never resolves (RFC 6761): before, this went on to a DNS lookup instead of being refused.
  const r = spawnSync(process.execPath, [CLI, 'coordinator', '--host', '127.attacker.invalid', '--port', '0', '--metrics-port', '-1'], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, ...CLEAN_ENV } });
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /^ganfleet: refusing to listen on 127\.attacker\.invalid without --token/);
});

test('--host 0.0.0.0 without a token refuses to start, before binding', { timeout: 30_000 }, async (t) => {
  const out = path.join(dir, 'run-open');
  const coord = new GanfleetProcess(['coordinator', '--host', '0.0.0.0', '--port', '0', '--metrics-port', '-1', '--backend', 'cpu', '--out', out], CLEAN_ENV);
  t.after(() => coord.kill());
  // A usage error (2), refused by the command line's checks: not a start that fails (1) at the listener's own check.
  assert.equal(await within(coord.exited, 20_000), 2, coord.log);
  assert.match(coord.log, /refusing to listen on 0\.0\.0\.0 without --token/);
  assert.match(coord.log, /--insecure/);
  assert.doesNotMatch(coord.log, /listening for workers/);
});

test('--tls-cert and --tls-key that cannot serve TLS (swapped, not a key, a key of another certificate, DER) are usage errors naming the flag', () => {
  const other = path.join(dir, 'other-key.pem');
  execFileSync('openssl', ['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', other], { stdio: 'pipe' });
  const der = path.join(dir, 'cert.der');
  execFileSync('openssl', ['x509', '-in', cert, '-outform', 'DER', '-out', der], { stdio: 'pipe' });
  const start = (c: string, k: string) => spawnSync(process.execPath, [CLI, 'coordinator', '--tls-cert', c, '--tls-key', k, '--port', '0', '--metrics-port', '-1', '--out', path.join(dir, 'never')], { encoding: 'utf8', timeout: 30_000, env: { ...process.env, ...CLEAN_ENV } });
  for (const [c, k, why] of [
    [key, cert, `--tls-cert ${key} holds no PEM certificate but a private key: are --tls-cert and --tls-key swapped?`],
    [cert, cert, `--tls-key ${cert} holds no PEM private key (an encrypted one needs its passphrase removed)`],
    [cert, other, `--tls-key ${other} is not the key of the certificate in --tls-cert ${cert}`],
    [der, key, `--tls-cert ${der} holds a DER certificate; the server takes PEM (openssl x509 -inform DER -in ${der} -out cert.pem)`],
  ]) {
    const r = start(c, k);
    assert.equal(r.status, 2, r.stderr);
    assert.equal(r.stderr.split('\n')[0], `ganfleet: ${why}`);
  }
  assert.ok(!fs.existsSync(path.join(dir, 'never')));
  // The TLS client trusts nothing from a DER --ca: accepted, it retried for ever telling the user to pass --ca.
  const r = spawnSync(process.execPath, [CLI, 'worker', '--coordinator', 'wss://localhost:1', '--ca', der, '--give-up-after', '1'], { encoding: 'utf8', timeout: 30_000, env: { ...process.env, ...CLEAN_ENV } });
  assert.equal(r.status, 2, r.stderr);
  assert.equal(r.stderr.split('\n')[0], `ganfleet: --ca ${der} holds a DER certificate; the worker takes PEM (openssl x509 -inform DER -in ${der} -out ca.pem)`);
  // OpenSSL's TRUSTED CERTIFICATE PEM is one the TLS client takes: not refused (exit 1: nothing listens there).
  const trusted = path.join(dir, 'trusted.pem');
  execFileSync('openssl', ['x509', '-in', cert, '-trustout', '-addtrust', 'serverAuth', '-out', trusted], { stdio: 'pipe' });
  const t2 = spawnSync(process.execPath, [CLI, 'worker', '--coordinator', 'wss://localhost:1', '--ca', trusted, '--give-up-after', '1', '--backend', 'cpu'], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, ...CLEAN_ENV } });
  assert.equal(t2.status, 1, t2.stderr);
  // A CA with ws:// was ignored, and the worker joined unencrypted.
  const plain = spawnSync(process.execPath, [CLI, 'worker', '--coordinator', 'ws://user:secret@localhost:1', '--ca', trusted, '--give-up-after', '1'], { encoding: 'utf8', timeout: 30_000, env: { ...process.env, ...CLEAN_ENV } });
  assert.equal(plain.status, 2, plain.stderr);
  assert.equal(plain.stderr.split('\n')[0], `ganfleet: --ca ${trusted} is for a wss:// coordinator, and --coordinator ws://localhost:1/ has no TLS: use wss:// (a coordinator started with --tls-cert), or leave out --ca`);
});

// A key only root may read (mode 600, mounted into a container) was refused as "holds no PEM private key (an
// encrypted one needs its passphrase removed)", an unreadable --ca as "a private key, say", a --tls-cert as bare EACCES.
test('a --tls-cert, --tls-key or --ca this user cannot read is a usage error saying so, naming the flag', (t) => {
  // Root reads any file: the CLI then runs as nobody, where that user may run this Node and read this checkout.
  const nobody = { uid: 65534, gid: 65534 };
  const user = process.getuid?.() === 0 ? nobody : {};
  if (user === nobody) {
    const unrunnable = nodeUnrunnableBy(nobody);
    if (unrunnable) return t.skip(unrunnable);
    if (spawnSync(process.execPath, ['-e', `require('fs').accessSync(${JSON.stringify(CLI)}, 4)`], user).status !== 0) return t.skip('uid 65534 cannot read this checkout');
  }
  const locked = tempDir('tls-locked');
  fs.chmodSync(locked, 0o755);
  const [c, k, ca] = ['cert.pem', 'key.pem', 'ca.pem'].map((f) => path.join(locked, f));
  for (const [from, to] of [[cert, c], [key, k], [cert, ca]]) fs.copyFileSync(from, to);
  const run = (args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 30_000, env: { ...process.env, ...CLEAN_ENV }, ...user });
  const coordinator = ['coordinator', '--tls-cert', c, '--tls-key', k, '--port', '0', '--metrics-port', '-1', '--out', path.join(locked, 'never')];
  for (const [unreadable, args, flag] of [[c, coordinator, 'tls-cert'], [k, coordinator, 'tls-key'], [ca, ['worker', '--coordinator', 'wss://localhost:1', '--ca', ca, '--give-up-after', '1'], 'ca']] as const) {
    for (const f of [c, k, ca]) fs.chmodSync(f, f === unreadable ? 0 : 0o644);
    const r = run([...args]);
    assert.equal(r.status, 2, r.stderr);
    assert.equal(r.stderr.split('\n')[0], `ganfleet: --${flag}: ${unreadable} cannot be read (EACCES)`);
  }
});

test('a worker trusting a certificate that names another host is told the host, not to pass --ca', { timeout: 60_000 }, async (t) => {
  const [otherCert, otherKey] = [path.join(dir, 'other-cert.pem'), path.join(dir, 'other-key.pem')];
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', otherKey, '-out', otherCert, '-days', '1', '-subj', '/CN=elsewhere', '-addext', 'subjectAltName=DNS:elsewhere.invalid'], { stdio: 'pipe' });
  const server = https.createServer({ cert: fs.readFileSync(otherCert), key: fs.readFileSync(otherKey) });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => server.close());
  const port = (server.address() as net.AddressInfo).port;
  const worker = startWorker(`wss://127.0.0.1:${port}`, 'other-host', ['--ca', otherCert, '--give-up-after', '1'], CLEAN_ENV);
  t.after(() => worker.kill());
  assert.equal(await within(worker.exited, 50_000), 1, worker.log);
  // An address, where the certificate names hosts only: it lists them.
  assert.match(
    worker.log,
    /could not connect to wss:\/\/127\.0\.0\.1:\d+ \(Hostname\/IP does not match certificate's altnames: IP: 127\.0\.0\.1 is not in the cert's list: the coordinator's certificate names no IP address \(only DNS:elsewhere\.invalid\), and an address in --coordinator is matched against its IP entries alone: connect by a name it lists, or issue it with subjectAltName IP:127\.0\.0\.1 too\); reconnecting in/,
  );
});

test('a worker connecting by address to a certificate with no subjectAltName (only a CN) is told that an address never matches a CN, not to connect by a name it lists', { timeout: 60_000 }, async (t) => {
  const [cnCert, cnKey] = [path.join(dir, 'cn-only-cert.pem'), path.join(dir, 'cn-only-key.pem')];
  // The usual self-signed recipe without -addext: the address is in the CN alone.
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', cnKey, '-out', cnCert, '-days', '1', '-subj', '/CN=127.0.0.1'], { stdio: 'pipe' });
  const { proc: coord, url } = await startCoordinator([...trainingArgs(5, path.join(dir, 'run-cn-only')), '--tls-cert', cnCert, '--tls-key', cnKey], CLEAN_ENV);
  t.after(() => coord.kill());
  // Said where it can be fixed, at the coordinator's start, as well as by each worker refused.
  assert.ok(
    coord.log.includes(`warning: --tls-cert ${cnCert} has no subjectAltName (only the CN 127.0.0.1): workers whose --coordinator gives an IP address refuse it, since an address is never matched against a CN; issue it with subjectAltName=DNS:<host>,IP:<address> (README: Several machines)`),
    coord.log,
  );
  assert.equal(certificateNamesProblem(cert), null, "the suite's own certificate names its host and address");
  const worker = startWorker(url, 'cn-only', ['--ca', cnCert, '--give-up-after', '1'], CLEAN_ENV);
  t.after(() => worker.kill());
  assert.equal(await within(worker.exited, 50_000), 1, worker.log);
  assert.match(
    worker.log,
    /could not connect to wss:\/\/127\.0\.0\.1:\d+ \(Hostname\/IP does not match certificate's altnames: IP: 127\.0\.0\.1 is not in the cert's list: the coordinator's certificate has no subjectAltName, and an address in --coordinator is matched against its IP entries alone, never its CN: issue it with subjectAltName IP:127\.0\.0\.1 \(openssl: -addext 'subjectAltName=IP:127\.0\.0\.1'\)\); reconnecting in/,
  );
});

test('an address missing from a certificate that names only hosts is told the names it has', () => {
  const mismatch = (host: string, subjectaltname: string | undefined) =>
    withHint(Object.assign(new Error(`Hostname/IP does not match certificate's altnames: IP: ${host} is not in the cert's list: `), { code: 'ERR_TLS_CERT_ALTNAME_INVALID', host, cert: { subjectaltname } }), `wss://${host}:8787`);
  assert.equal(
    mismatch('10.0.0.5', 'DNS:coordinator-host'),
    "Hostname/IP does not match certificate's altnames: IP: 10.0.0.5 is not in the cert's list: the coordinator's certificate names no IP address (only DNS:coordinator-host), and an address in --coordinator is matched against its IP entries alone: connect by a name it lists, or issue it with subjectAltName IP:10.0.0.5 too",
  );
  // Where it names other addresses, or the host is a name, Node's message says what it has.
  assert.match(mismatch('10.0.0.5', 'DNS:coordinator-host, IP Address:10.0.0.6'), /^Hostname\/IP does not match .*: the coordinator's certificate does not name the host in --coordinator/);
  assert.match(mismatch('elsewhere', undefined), /^Hostname\/IP does not match .*: the coordinator's certificate does not name the host in --coordinator/);
});
