// web/sdk/pairing.js, the browser's link pairing, against the vectors that
// crates/pairing's own test checks (crates/pairing/tests/link-vectors.json),
// with WebCrypto and with the ./sha256.js fallback, and its HMAC against
// Node's; then the failures: another key, rewritten fingerprints, a
// reflected message, messages that do not read.
import test from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { repoRoot } from './helpers.mjs';
import {
  LinkPairing, PairingError, parseLink, linkFragment, newLink, fingerprints, mac,
  hmacSha256Fallback, toBase64Url, fromBase64Url, randomPairRoom,
} from '../../web/sdk/pairing.js';

const vectors = JSON.parse(fs.readFileSync(path.join(repoRoot, 'crates', 'pairing', 'tests', 'link-vectors.json'), 'utf8'));

/** Both sides of a pairing whose messages are kept, not delivered. */
function sides(hostLink, guestLink, opts = {}) {
  const out = { host: [], guest: [] };
  const host = new LinkPairing(hostLink, 'host', { ...opts, send: (m) => out.host.push(m) });
  const guest = new LinkPairing(guestLink, 'guest', { ...opts, send: (m) => out.guest.push(m) });
  return { host, guest, out };
}

/** Delivers every message each way until none is left; returns each side's error. */
async function run(host, guest, out) {
  const err = { host: null, guest: null };
  for (let round = 0; round < 5; round++) {
    for (const m of out.host.splice(0)) if (!err.guest) await guest.handle(m).catch((e) => { err.guest = e; });
    for (const m of out.guest.splice(0)) if (!err.host) await host.handle(m).catch((e) => { err.host = e; });
  }
  return err;
}

const sdp = (fp) => `v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\na=fingerprint:sha-256 ${fp}\r\na=setup:actpass\r\n`;

for (const subtle of [true, false]) {
  test(`the messages match crates/pairing's vectors (${subtle ? 'WebCrypto' : 'sha256.js fallback'})`, async () => {
    assert.ok(vectors.cases.length >= 2);
    for (const c of vectors.cases) {
      const link = parseLink(`https://h.example/drop#room=${c.room}&key=${c.key}`);
      assert.equal(fingerprints(c.host_sdp), c.host_fp);
      assert.equal(fingerprints(c.guest_sdp), c.guest_fp);
      const { host, guest, out } = sides(link, link, { subtle });
      await host.setDescriptions(c.host_sdp, c.guest_sdp);
      await guest.setDescriptions(c.guest_sdp, c.host_sdp);
      assert.deepEqual(out.host, [{ pair: { check: c.host_check, v: 1 } }], 'the host sends only its check until the guest proved the key');
      assert.deepEqual(out.guest, [{ pair: { check: c.guest_check, v: 1 } }]);
      const err = await run(host, guest, out);
      assert.deepEqual(err, { host: null, guest: null });
      assert.ok(host.verified && guest.verified);
    }
    // The binds, as each side sent them.
    for (const c of vectors.cases) {
      const link = parseLink(`#room=${c.room}&key=${c.key}`);
      const { host, guest, out } = sides(link, link, { subtle });
      await host.setDescriptions(c.host_sdp, c.guest_sdp);
      await guest.setDescriptions(c.guest_sdp, c.host_sdp);
      await host.handle(out.guest[0]);
      await guest.handle(out.host[0]);
      assert.equal(out.host[1].pair.bind, c.host_bind);
      assert.equal(out.guest[1].pair.bind, c.guest_bind);
    }
  });
}

test('the HMAC fallback agrees with Node, short and long keys', async () => {
  for (const keyLen of [0, 1, 16, 32, 63, 64, 65, 200]) {
    for (const dataLen of [0, 1, 55, 56, 64, 1000]) {
      const key = randomBytes(keyLen);
      const data = randomBytes(dataLen);
      const want = createHmac('sha256', key).update(data).digest();
      assert.deepEqual(Buffer.from(hmacSha256Fallback(key, data)), want, `key ${keyLen}, data ${dataLen}`);
    }
  }
  // mac() frames its parts: 4-byte big-endian length before each.
  const key = randomBytes(16);
  const framed = Buffer.concat([Buffer.from([0, 0, 0, 2]), Buffer.from('ab'), Buffer.from([0, 0, 0, 0])]);
  const want = createHmac('sha256', key).update(framed).digest();
  assert.deepEqual(Buffer.from(await mac(key, ['ab', ''])), want);
  assert.deepEqual(Buffer.from(await mac(key, ['ab', ''], { subtle: false })), want);
});

test('base64url and links read back; bad ones say why', () => {
  for (let n = 0; n < 40; n++) {
    const b = randomBytes(n);
    assert.equal(toBase64Url(b), b.toString('base64url'));
    assert.deepEqual(Buffer.from(fromBase64Url(b.toString('base64url'))), b);
  }
  // Strict like the Rust side: no padding, no stray bits, no other alphabet.
  for (const bad of ['AAAA=', 'A', 'AB', 'AAA+', 'AAA/']) assert.equal(fromBase64Url(bad), null, bad);
  for (let i = 0; i < 50; i++) {
    const l = newLink();
    assert.match(l.room, /^pair-([1-9][0-9]{0,2})$/);
    const back = parseLink(`http://127.0.0.1:8080/drop#${linkFragment(l)}`);
    assert.equal(back.room, l.room);
    assert.deepEqual(back.key, l.key);
    assert.ok(Number(randomPairRoom().slice(5)) <= 999);
  }
  for (const bad of ['https://h/drop', '#room=pair-a', '#room=x&key=AAAAAAAAAAAAAAAAAAAAAA', '#room=pair-a&key=AAAA', `#room=pair-a&key=${'A'.repeat(300)}`]) {
    assert.throws(() => parseLink(bad), (e) => e instanceof PairingError && e.code === 'bad-link', bad);
  }
});

test('another key fails both sides as wrong-code, and nothing verifies', async () => {
  const a = newLink('pair-5');
  const b = { room: a.room, key: a.key.slice() };
  b.key[0] ^= 1;
  const { host, guest, out } = sides(a, b);
  await host.setDescriptions(sdp('AA:BB'), sdp('11:22'));
  await guest.setDescriptions(sdp('11:22'), sdp('AA:BB'));
  const err = await run(host, guest, out);
  assert.equal(err.host?.code, 'wrong-code');
  assert.equal(err.guest?.code, 'wrong-code');
  assert.match(err.guest.message, /wrong link key/);
  assert.ok(!host.verified && !guest.verified);
  // No bind ever left either side.
  assert.ok(!out.host.concat(out.guest).some((m) => 'bind' in m.pair));
});

test('rewritten fingerprints, one way or both, fail both sides as tampered', async () => {
  const link = newLink();
  for (const [hostSees, guestSees] of [['DE:AD', 'DE:AD'], ['11:22', 'DE:AD'], ['DE:AD', 'AA:BB']]) {
    const { host, guest, out } = sides(link, link);
    // The host set AA:BB, the guest 11:22; each sees the other's as delivered.
    await host.setDescriptions(sdp('AA:BB'), sdp(hostSees));
    await guest.setDescriptions(sdp('11:22'), sdp(guestSees));
    const err = await run(host, guest, out);
    assert.equal(err.host?.code, 'tampered', `${hostSees}/${guestSees}`);
    assert.equal(err.guest?.code, 'tampered');
    assert.match(err.host.message, /tampered: the signaling path changed the DTLS fingerprints/);
    assert.ok(!host.verified && !guest.verified);
  }
});

test('a reflected check, a spake, and messages that do not read', async () => {
  const link = newLink();
  // A side's own check sent back to it does not pass for the peer's.
  {
    const { host, out } = sides(link, link);
    await host.setDescriptions(sdp('AA'), sdp('BB'));
    await assert.rejects(host.handle(out.host[0]), (e) => e.code === 'wrong-code');
    await assert.rejects(host.handle(out.host[0]), (e) => e.code === 'wrong-code', 'stays failed');
  }
  // A guest ignores a CLI host's spake; a host that gets one has a code-typing guest.
  {
    const { host, guest, out } = sides(link, link);
    await guest.handle({ pair: { v: 1, spake: 'AAAA' } });
    await host.setDescriptions(sdp('AA'), sdp('BB'));
    await guest.setDescriptions(sdp('BB'), sdp('AA'));
    assert.deepEqual(await run(host, guest, out), { host: null, guest: null });
    assert.ok(guest.verified && host.verified);
    const other = sides(link, link);
    await assert.rejects(other.host.handle({ pair: { v: 1, spake: 'AAAA' } }), (e) => e.code === 'wrong-code');
  }
  for (const bad of [{}, { pair: 1 }, { pair: { v: 2 } }, { pair: { v: 1, check: 5 } }, { pair: { v: 1, check: '%%' } }, { pair: { v: 1, bind: 'A' } }, null]) {
    const { guest } = sides(link, link);
    await assert.rejects(guest.handle(bad), (e) => e instanceof PairingError && e.code === 'pairing', JSON.stringify(bad));
  }
  const { guest } = sides(link, link);
  await assert.rejects(guest.setDescriptions('v=0\r\n', sdp('AA')), (e) => e.code === 'pairing');
});
