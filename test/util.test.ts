import { test } from 'node:test';
import assert from 'node:assert/strict';
import { plural, someOf, truncate, urlHost, withoutCredentials } from '../src/util/text';
import { hostOf, peerString, peerText } from '../src/util/log';

test('truncate keeps a text of exactly max characters whole, and cuts one longer to max, the last an ellipsis', () => {
  assert.equal(truncate('abcde', 5), 'abcde');
  assert.equal(truncate('abcdef', 5), 'abcd…');
  assert.equal(truncate('', 5), '');
});

test('plural: singular for 1 alone, the plural for 0, 2 and fractions, an irregular plural where given', () => {
  assert.equal(plural(0, 'worker'), '0 workers');
  assert.equal(plural(1, 'worker'), '1 worker');
  assert.equal(plural(2, 'worker'), '2 workers');
  assert.equal(plural(1.5, 'step'), '1.5 steps');
  assert.equal(plural(1, 'process', 'processes'), '1 process');
  assert.equal(plural(3, 'process', 'processes'), '3 processes');
});

test('someOf names all of max items, and past max the first max and a count of the rest', () => {
  const names = (n: number) => Array.from({ length: n }, (_, i) => `w${i + 1}`);
  assert.equal(someOf([]), '');
  assert.equal(someOf(names(10)), names(10).join(', '), 'ten by default, with no "and 0 more"');
  assert.equal(someOf(names(11)), `${names(10).join(', ')} and 1 more`);
  assert.equal(someOf(names(3), 2), 'w1, w2 and 1 more');
  assert.equal(someOf(names(2), 2), 'w1, w2');
});

/** Each case's input and what `f` must give for it, the case named in a failure. */
function cases<T>(f: (input: T) => string, table: [T, string][]): void {
  for (const [input, expected] of table) assert.equal(f(input), expected, JSON.stringify(input));
}

test('urlHost brackets an IPv6 address once, and leaves a name or IPv4 address as it is', () => {
  cases(urlHost, [
    ['::1', '[::1]'],
    ['fe80:0:0:0:0:0:0:1', '[fe80:0:0:0:0:0:0:1]'],
    ['::ffff:127.0.0.1', '[::ffff:127.0.0.1]'],
    ['[::1]', '[::1]'],
    ['127.0.0.1', '127.0.0.1'],
    ['coordinator.example', 'coordinator.example'],
  ]);
});

test('withoutCredentials leaves out a user name, a password, or both; a URL without them is as given', () => {
  cases(withoutCredentials, [
    ['wss://user:S3CRET@coordinator.example:8787', 'wss://coordinator.example:8787/'],
    ['ws://user@127.0.0.1:8787/', 'ws://127.0.0.1:8787/'],
    // A password alone is sent (as ":S3CRET") all the same.
    ['wss://:S3CRET@[::1]:8787/', 'wss://[::1]:8787/'],
    ['ws://127.0.0.1:8787', 'ws://127.0.0.1:8787'],
    // One the parser refuses: through the last @, since a password may hold / or @.
    ['wss://user:S3@C/RET@127.0.0.1:99999', 'wss://127.0.0.1:99999'],
    ['wss://127.0.0.1:99999', 'wss://127.0.0.1:99999'],
    // A newline, which the parser drops.
    ['wss://user:S3\nCRET@127.0.0.1:99999', 'wss://127.0.0.1:99999'],
    // A password holding / or ? that the parser reads as a port and a path: it was logged whole.
    ['wss://user:12/34@127.0.0.1:8787', 'wss://127.0.0.1:8787'],
    ['wss://user:12?34@127.0.0.1:8787', 'wss://127.0.0.1:8787'],
    ['wss://user:S3@C/RET@127.0.0.1:8787', 'wss://127.0.0.1:8787'],
  ]);
});

test("hostOf drops a peer address's port, keeping an IPv6 host's colons", () => {
  cases(hostOf, [
    ['10.0.0.1:40000', '10.0.0.1'],
    ['[::1]:40000', '[::1]'],
    ['[fe80::1:2]:40000', '[fe80::1:2]'],
    ['unix', 'unix'],
  ]);
});

test('peerString quotes a string a peer chose, cut to 160 characters by default; peerText cuts it as well, then escapes its controls', () => {
  assert.equal(peerString('x'.repeat(160)), `"${'x'.repeat(160)}"`);
  assert.equal(peerString('x'.repeat(161)), `"${'x'.repeat(159)}…"`);
  assert.equal(peerString('a"b\n', 10), '"a\\"b\\n"');
  assert.equal(peerText('x'.repeat(160)), 'x'.repeat(160));
  assert.equal(peerText('x'.repeat(161)), `${'x'.repeat(159)}…`);
  // Cut before escaping: an escape is never cut in half (\u20 would read as some other text).
  assert.equal(peerText(`${'x'.repeat(8)}\u202e`, 10), `${'x'.repeat(8)}\\u202e`);
  assert.equal(peerText(`\u0007\r\n\tok\u009b`), '\\u0007\\r\\n\tok\\u009b');
});
