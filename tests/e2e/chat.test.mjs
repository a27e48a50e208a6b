// /chat: text and a 5 MB file over the `chat` data channel, checked against
// the wire format in docs/protocol.md and node's own SHA-256.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, newPage, screenshot, waitFor, roomName, randomFile } from './helpers.mjs';

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
