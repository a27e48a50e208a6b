// /chat: text and a 5 MB file over the `chat` data channel, checked against
// the wire format in docs/protocol.md and node's own SHA-256; a large file
// with both pages' JS heaps watched.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, launchBrowser, newPage, screenshot, waitFor, roomName, randomFile, sampleHeap, BIG_MIB, HEAP_LIMIT,
} from './helpers.mjs';

let server;
let browser;

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** Record every frame arriving on the page's `chat` channel(s) in window.__frames. */
const recordFrames = (page) => page.evaluate(() => {
  window.__frames = [];
  for (const peer of window.switchboardRoom.peers.values()) {
    peer.channels.get('chat').addEventListener('message', (e) => {
      window.__frames.push(typeof e.data === 'string' ? { text: JSON.parse(e.data) } : { binary: e.data.byteLength });
    });
  }
});

test('two browsers on /chat exchange text and a 5 MB file with matching SHA-256', { timeout: 180_000 }, async () => {
  const room = roomName('chat');
  const alice = await newPage(browser, 'chat-alice');
  const bob = await newPage(browser, 'chat-bob');
  const file = randomFile(5 * 1024 * 1024, 'five-megabytes.bin');
  const small = randomFile(100_000, 'small.bin');
  try {
    await alice.goto(`${server.origin}/chat?room=${room}&name=alice`);
    await waitFor(alice, () => document.body.dataset.joined === 'true');
    await bob.goto(`${server.origin}/chat?room=${room}&name=bob`);
    for (const page of [alice, bob]) {
      await waitFor(page, () => document.body.dataset.chatReady === 'true', undefined, 45_000);
    }
    // bob is the newcomer: he created the channel, alice received it.
    const created = await bob.evaluate(() => [...window.switchboardRoom.peers.values()][0].timeline.some((e) => e.step === 'datachannel-created'));
    const received = await alice.evaluate(() => [...window.switchboardRoom.peers.values()][0].timeline.some((e) => e.step === 'datachannel-received'));
    assert.ok(created && received, 'newcomer creates the chat channel, the other side receives it');

    // Text both ways.
    await alice.fill('#message', 'hello from alice');
    await alice.click('#send');
    await waitFor(bob, () => [...document.querySelectorAll('#messages .msg .text')].some((m) => m.textContent === 'hello from alice'));
    assert.equal(await bob.locator('#messages .msg:not(.system) .from').last().textContent(), 'alice');
    await bob.fill('#message', 'hi alice, bob here');
    await bob.press('#message', 'Enter');
    await waitFor(alice, () => [...document.querySelectorAll('#messages .msg .text')].some((m) => m.textContent === 'hi alice, bob here'));

    // 5 MB from alice to bob; bob records the raw frames to check the wire format.
    await recordFrames(bob);
    await alice.setInputFiles('#file-input', file.path);
    await waitFor(bob, () => document.querySelector('.transfer[data-direction="in"][data-status="ok"], .transfer[data-direction="in"][data-status="mismatch"]'), undefined, 120_000);
    const inCard = bob.locator('.transfer[data-direction="in"]').first();
    assert.equal(await inCard.getAttribute('data-status'), 'ok');
    assert.equal(await inCard.getAttribute('data-sha256'), file.sha256);
    assert.equal(await inCard.getAttribute('data-size'), String(file.size));
    assert.equal(await inCard.locator('a.download').getAttribute('download'), 'five-megabytes.bin');

    // Sender got the file-ack and shows it as verified.
    await waitFor(alice, () => document.querySelector('.transfer[data-direction="out"]')?.dataset.status === 'ok');
    const outCard = alice.locator('.transfer[data-direction="out"]').first();
    assert.equal(await outCard.getAttribute('data-sha256'), file.sha256);
    assert.equal(await outCard.getAttribute('data-ack-sha256'), file.sha256);

    // Wire format: file-start, 16 KiB binary frames, file-end with the hash.
    const frames = await bob.evaluate(() => window.__frames);
    const start = frames[0].text;
    assert.equal(start.type, 'file-start');
    assert.equal(start.name, 'five-megabytes.bin');
    assert.equal(start.size, file.size);
    assert.equal(typeof start.id, 'string');
    const binary = frames.filter((f) => 'binary' in f).map((f) => f.binary);
    assert.equal(binary.length, Math.ceil(file.size / 16384));
    assert.ok(binary.every((n) => n === 16384), 'every chunk is 16 KiB');
    const end = frames[frames.length - 1].text;
    assert.deepEqual(end, { type: 'file-end', id: start.id, sha256: file.sha256 });

    // A smaller file the other way (the side that did not create the channel sends).
    await bob.setInputFiles('#file-input', small.path);
    await waitFor(alice, () => document.querySelector('.transfer[data-direction="in"]')?.dataset.status === 'ok', undefined, 60_000);
    assert.equal(await alice.locator('.transfer[data-direction="in"]').first().getAttribute('data-sha256'), small.sha256);
    await waitFor(bob, () => document.querySelector('.transfer[data-direction="out"]')?.dataset.status === 'ok');

    await screenshot(alice, 'chat-alice');
    await screenshot(bob, 'chat-bob');
    assert.deepEqual(alice.errors, []);
    assert.deepEqual(bob.errors, []);
  } finally {
    file.cleanup();
    small.cleanup();
    await alice.context().close();
    await bob.context().close();
  }
});

test(`two browsers on /chat move a ${BIG_MIB} MiB file with both JS heaps under ${HEAP_LIMIT >> 20} MB`, { timeout: 900_000 }, async () => {
  const room = roomName('chat-big');
  const alice = await newPage(browser, 'chat-big-alice');
  const bob = await newPage(browser, 'chat-big-bob');
  const file = randomFile(BIG_MIB * 1024 * 1024, 'large.bin');
  try {
    await alice.goto(`${server.origin}/chat?room=${room}&name=alice`);
    await waitFor(alice, () => document.body.dataset.joined === 'true');
    await bob.goto(`${server.origin}/chat?room=${room}&name=bob`);
    for (const page of [alice, bob]) {
      await waitFor(page, () => document.body.dataset.chatReady === 'true', undefined, 45_000);
    }
    const heaps = [await sampleHeap(alice), await sampleHeap(bob)];
    const t0 = Date.now();
    await alice.setInputFiles('#file-input', file.path);
    await waitFor(bob, () => document.querySelector('.transfer[data-direction="in"][data-status="ok"], .transfer[data-direction="in"][data-status="mismatch"]'), undefined, 800_000);
    const secs = (Date.now() - t0) / 1000;
    const [a, b] = await Promise.all(heaps.map((h) => h.stop()));
    const inCard = bob.locator('.transfer[data-direction="in"]').first();
    assert.equal(await inCard.getAttribute('data-status'), 'ok');
    assert.equal(await inCard.getAttribute('data-sha256'), file.sha256);
    await waitFor(alice, () => document.querySelector('.transfer[data-direction="out"]')?.dataset.status === 'ok');
    const mb = (x) => (x / 1e6).toFixed(1);
    console.log(`large file ${BIG_MIB} MiB /chat -> /chat: ${mb(file.size / secs)} MB/s; JS heap max sender ${mb(a.max)} MB, receiver ${mb(b.max)} MB; renderer RSS growth max ${mb(Math.max(a.rssGrowth, b.rssGrowth))} MB (${a.samples} and ${b.samples} samples)`);
    assert.ok(a.samples >= 4 && b.samples >= 4, 'the heaps were sampled during the transfer');
    assert.ok(a.max < HEAP_LIMIT, `sender's heap peaked at ${mb(a.max)} MB`);
    assert.ok(b.max < HEAP_LIMIT, `receiver's heap peaked at ${mb(b.max)} MB`);
    assert.ok(Math.max(a.rssGrowth, b.rssGrowth) < HEAP_LIMIT, `a renderer grew by ${mb(Math.max(a.rssGrowth, b.rssGrowth))} MB`);
    assert.deepEqual(alice.errors, []);
    assert.deepEqual(bob.errors, []);
  } finally {
    await alice.context().close();
    await bob.context().close();
    file.cleanup();
  }
});

test('/sdk/transfer.js: frames exactly as docs/protocol.md, strict parsing, Sender -> Receiver', { timeout: 60_000 }, async () => {
  const page = await newPage(browser, 'transfer-module');
  try {
    await page.goto(`${server.origin}/`);
    const r = await page.evaluate(async () => {
      const t = await import('/sdk/transfer.js');
      const hex = 'ab'.repeat(32);
      const out = {};
      // Byte-exact JSON: the key order crates/transfer writes and parses.
      out.frames = [
        t.textFrame('hi "you"'),
        t.fileStart({ id: 'i1', name: 'a.bin', size: 5 }),
        t.fileStart({ id: 'i1', name: 'a.txt', size: 5, mime: 'text/plain' }),
        t.fileEnd('i1', hex),
        t.fileAck('i1', true, hex),
      ];
      out.parsed = [
        t.parse('{"type":"file-start","id":"x","name":"n","size":3,"mime":"","extra":1}'),
        t.parse(`{"type":"file-end","id":"x","sha256":"${hex.toUpperCase()}"}`),
        t.parse('{"type":"file-resume","id":"x","offset":7}'),
        t.parse(new ArrayBuffer(4)).type,
      ];
      const bad = (s) => { try { t.parse(s); return null; } catch (e) { return `${e.name}: ${e.message}`; } };
      out.bad = [
        bad('not json'), bad('[1]'), bad('{"text":"no type"}'), bad('{"type":"nope"}'),
        bad('{"type":"file-start","id":"x","name":"n"}'), bad('{"type":"file-start","id":"x","name":"n","size":-1}'),
        bad('{"type":"file-end","id":"x","sha256":"xyz"}'), bad('{"type":"file-ack","id":"x","ok":"yes","sha256":"' + hex + '"}'),
      ];

      // A file over two read blocks, with a tail chunk, through both state machines.
      const size = t.READ_BLOCK + 3 * t.CHUNK + 123;
      const bytes = new Uint8Array(size);
      for (let i = 0; i < size; i++) bytes[i] = (i * 7 + 3) & 0xff;
      const file = new File([bytes], 'two-blocks.bin', { type: 'application/x-test' });
      const tx = new t.Sender(file, { id: 'f1' });
      const rx = new t.Receiver();
      const kinds = [];
      const chunkSizes = [];
      let finished = null;
      for (let m = await tx.next(); m !== null; m = await tx.next()) {
        if (typeof m !== 'string') chunkSizes.push(m.byteLength);
        const res = rx.handle(t.parse(m));
        if (!kinds.includes(res.kind)) kinds.push(res.kind);
        if (res.kind === 'finished') finished = await res.done;
      }
      out.kinds = kinds;
      out.chunks = { count: chunkSizes.length, max: Math.max(...chunkSizes), last: chunkSizes[chunkSizes.length - 1] };
      out.finished = { ok: finished.ok, size: finished.size, received: finished.received, name: finished.name, mime: finished.mime, blobType: finished.blob.type };
      out.hashMatches = finished.actual === await t.sha256Hex(bytes) && finished.actual === tx.digest;
      out.outcome = tx.handleAck(t.parse(finished.ack));
      out.ackTwice = (() => { try { tx.handleAck(t.parse(finished.ack)); return null; } catch (e) { return e.name; } })();
      out.otherAck = tx.handleAck({ id: 'other', ok: true, sha256: hex });

      // An empty file is file-start then file-end.
      const empty = new t.Sender(new File([], 'empty'), { id: 'e' });
      out.empty = [await empty.next(), await empty.next(), await empty.next()];

      // Wrong bytes: the ack says not ok and carries the receiver's hash; a new
      // file-start replaces a file in progress; a stray chunk throws, a stray
      // file-end is answered not ok.
      const rx2 = new t.Receiver();
      rx2.handle(t.parse(t.fileStart({ id: 'a', name: 'a', size: 2 })));
      const replaced = rx2.handle(t.parse(t.fileStart({ id: 'b', name: 'b', size: 2 })));
      out.replaced = replaced.kind === 'started' && replaced.replaced;
      rx2.handle({ type: 'chunk', data: new Uint8Array([1, 2]).buffer });
      const end = rx2.handle(t.parse(t.fileEnd('b', hex)));
      const done = end.kind === 'finished' && await end.done;
      out.mismatch = done && { ok: done.ok, ack: JSON.parse(done.ack) };
      out.stray = [
        (() => { try { rx2.handle({ type: 'chunk', data: new ArrayBuffer(1) }); return null; } catch (e) { return e.name; } })(),
        rx2.handle(t.parse(t.fileEnd('zzz', hex))),
      ];
      out.withPath = t.fileStart({ id: 'p', name: 'c.txt', size: 1, path: 'dir/sub/c.txt' });
      out.senderPath = await new t.Sender(new File(['x'], 'c.txt'), { id: 'p', path: 'dir/sub/c.txt' }).next();
      out.badChunkSize = (() => { try { new t.Sender(file, { chunkSize: t.MAX_CHUNK + 1 }); return null; } catch (e) { return e.name; } })();
      return out;
    });

    const hex = 'ab'.repeat(32);
    assert.deepEqual(r.frames, [
      '{"type":"text","text":"hi \\"you\\""}',
      '{"type":"file-start","id":"i1","name":"a.bin","size":5}',
      '{"type":"file-start","id":"i1","name":"a.txt","size":5,"mime":"text/plain"}',
      `{"type":"file-end","id":"i1","sha256":"${hex}"}`,
      `{"type":"file-ack","id":"i1","ok":true,"sha256":"${hex}"}`,
    ]);
    assert.deepEqual(r.parsed, [
      { type: 'file-start', id: 'x', name: 'n', size: 3 },
      { type: 'file-end', id: 'x', sha256: hex },
      { type: 'file-resume', id: 'x', offset: 7 },
      'chunk',
    ]);
    assert.ok(r.bad.every((e) => typeof e === 'string' && e.startsWith('ProtocolError: ')), JSON.stringify(r.bad));
    assert.match(r.bad[4], /file-start frame has no "size" field/);

    const size = 1024 * 1024 + 3 * 16384 + 123;
    assert.deepEqual(r.kinds, ['started', 'progress', 'finished']);
    assert.deepEqual(r.chunks, { count: Math.ceil(size / 16384), max: 16384, last: size % 16384 });
    assert.deepEqual(r.finished, { ok: true, size, received: size, name: 'two-blocks.bin', mime: 'application/x-test', blobType: 'application/x-test' });
    assert.ok(r.hashMatches, 'the receiver hashed what the sender hashed');
    assert.equal(r.outcome.verified, true);
    assert.equal(r.ackTwice, 'TransferError');
    assert.equal(r.otherAck, null);
    assert.equal(r.empty[0], '{"type":"file-start","id":"e","name":"empty","size":0}');
    assert.equal(r.empty[1], '{"type":"file-end","id":"e","sha256":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}');
    assert.equal(r.empty[2], null);
    assert.deepEqual(r.replaced, { id: 'a', name: 'a' });
    assert.equal(r.mismatch.ok, false);
    assert.equal(r.mismatch.ack.ok, false);
    assert.equal(r.mismatch.ack.sha256, 'a12871fee210fb8619291eaea194581cbd2531e4b23759d225f6806923f63222', 'the ack carries the receiver\'s own hash');
    assert.deepEqual(r.stray, ['TransferError', {
      kind: 'unknown-end', id: 'zzz',
      ack: '{"type":"file-ack","id":"zzz","ok":false,"sha256":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}',
    }]);
    assert.equal(r.withPath, '{"type":"file-start","id":"p","name":"c.txt","size":1,"path":"dir/sub/c.txt"}');
    assert.equal(r.senderPath, r.withPath);
    assert.equal(r.badChunkSize, 'TransferError');
    assert.deepEqual(page.errors, []);
  } finally {
    await page.context().close();
  }
});

test('/chat answers a stray file-end, offers no download for a failed check, and refuses to send without WebCrypto', { timeout: 120_000 }, async () => {
  const room = roomName('chat-fail');
  const alice = await newPage(browser, 'chat-fail-alice');
  const bob = await newPage(browser, 'chat-fail-bob');
  try {
    await alice.goto(`${server.origin}/chat?room=${room}&name=alice`);
    await waitFor(alice, () => document.body.dataset.joined === 'true');
    await bob.goto(`${server.origin}/chat?room=${room}&name=bob`);
    for (const page of [alice, bob]) await waitFor(page, () => document.body.dataset.chatReady === 'true', undefined, 45_000);
    // bob plays a broken sender on the raw channel and records alice's answers.
    await bob.evaluate(() => {
      const ch = [...window.switchboardRoom.peers.values()][0].channels.get('chat');
      window.__acks = [];
      ch.addEventListener('message', (e) => { if (typeof e.data === 'string') window.__acks.push(JSON.parse(e.data)); });
      ch.send(JSON.stringify({ type: 'file-end', id: 'never-started', sha256: '00'.repeat(32) }));
      ch.send(JSON.stringify({ type: 'file-start', id: 'liar', name: 'liar.bin', size: 4 }));
      ch.send(new Uint8Array([1, 2, 3, 4]).buffer);
      ch.send(JSON.stringify({ type: 'file-end', id: 'liar', sha256: 'ab'.repeat(32) }));
    });
    await waitFor(bob, () => window.__acks.length >= 2, undefined, 20_000);
    const acks = await bob.evaluate(() => window.__acks);
    assert.deepEqual(acks.find((a) => a.id === 'never-started'),
      { type: 'file-ack', id: 'never-started', ok: false, sha256: 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855' });
    assert.equal(acks.find((a) => a.id === 'liar').ok, false);
    // The failed file: mismatch shown, nothing to download.
    const card = alice.locator('.transfer[data-direction="in"][data-status="mismatch"]');
    await card.waitFor({ timeout: 10_000 });
    assert.equal(await card.locator('a.download').count(), 0, 'no download link for a file that failed its check');
    assert.match(await card.textContent(), /nothing to download/);

    // Without WebCrypto (a page that is not a secure context) files are
    // still sent and checked: the page hashes them itself (sdk/sha256.js).
    await alice.evaluate(() => Object.defineProperty(globalThis.crypto, 'subtle', { value: undefined, configurable: true }));
    await bob.evaluate(() => Object.defineProperty(globalThis.crypto, 'subtle', { value: undefined, configurable: true }));
    const f = randomFile(300_000, 'no-webcrypto.bin');
    try {
      await alice.setInputFiles('#file-input', f.path);
      const ok = bob.locator('.transfer[data-direction="in"][data-status="ok"]', { hasText: 'no-webcrypto.bin' });
      await ok.waitFor({ timeout: 20_000 });
      assert.equal(await ok.getAttribute('data-sha256'), f.sha256);
      await alice.locator('.transfer[data-direction="out"][data-status="ok"]', { hasText: 'no-webcrypto.bin' }).waitFor({ timeout: 10_000 });
    } finally {
      f.cleanup();
    }
  } finally {
    await alice.context().close();
    await bob.context().close();
  }
});
