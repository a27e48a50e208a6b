// web/sdk/sha256.js, the browser's incremental SHA-256, against the FIPS
// 180-4 examples and against Node's crypto (OpenSSL) on random data split at
// random points, the way a file arrives in chunks.
import test from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { Sha256, sha256HexOf } from '../../web/sdk/sha256.js';

test('FIPS 180-4 examples', () => {
  assert.equal(sha256HexOf(new Uint8Array()), 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
  assert.equal(sha256HexOf(Buffer.from('abc')), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
  assert.equal(
    sha256HexOf(Buffer.from('abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq')),
    '248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1',
  );
  // A million 'a's, fed in uneven pieces.
  const h = new Sha256();
  const a = Buffer.alloc(999, 'a');
  let left = 1_000_000;
  while (left > 0) {
    const n = Math.min(left, a.length);
    h.update(a.subarray(0, n));
    left -= n;
  }
  assert.equal(h.hex(), 'cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0');
});

test('every length around the block and padding edges, in one piece', () => {
  for (let len = 0; len <= 200; len++) {
    const data = randomBytes(len);
    assert.equal(sha256HexOf(data), createHash('sha256').update(data).digest('hex'), `length ${len}`);
  }
});

test('random data split at random points matches Node', () => {
  for (let round = 0; round < 50; round++) {
    const data = randomBytes(Math.floor(Math.random() * 300_000));
    const h = new Sha256();
    for (let at = 0; at < data.length;) {
      const n = Math.min(data.length - at, 1 + Math.floor(Math.random() * 70_000));
      // ArrayBuffer, typed-array views with offsets: what channels deliver.
      const piece = data.subarray(at, at + n);
      h.update(round % 2 ? piece : piece.buffer.slice(piece.byteOffset, piece.byteOffset + n));
      at += n;
    }
    assert.equal(h.hex(), createHash('sha256').update(data).digest('hex'), `round ${round}, ${data.length} bytes`);
  }
});

test('misuse is an error, not a wrong digest', () => {
  const h = new Sha256().update(Buffer.from('x'));
  h.digest();
  assert.throws(() => h.update(Buffer.from('y')), /after digest/);
  assert.throws(() => h.digest(), /twice/);
});
