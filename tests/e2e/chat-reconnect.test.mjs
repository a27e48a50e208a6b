// /chat with its signaling socket cut in the middle of a file transfer
// (through the TCP proxy of proxy.mjs): the data channel does not need
// signaling, the SDK resumes in the background, and the file arrives whole.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, newPage, screenshot, waitFor, roomName, randomFile } from './helpers.mjs';
import { startProxy } from './proxy.mjs';

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

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Bytes received so far of the incoming file (its progress bar). */
const received = (page) => page.evaluate(() => Number(document.querySelector('.transfer[data-direction="in"] progress')?.value ?? 0));

test('/chat: signaling cut mid-file; the transfer completes with the right SHA-256 and signaling resumes', { timeout: 180_000 }, async () => {
  const proxy = await startProxy(server.port);
  const room = roomName('chatcut');
  const alice = await newPage(browser, 'chatcut-alice');
  const bob = await newPage(browser, 'chatcut-bob');
  const file = randomFile(40 * 1024 * 1024, 'forty-megabytes.bin');
  const signal = encodeURIComponent(proxy.wsUrl);
  try {
    await alice.goto(`${server.origin}/chat?room=${room}&name=alice&signal=${signal}`);
    await waitFor(alice, () => document.body.dataset.joined === 'true');
    await bob.goto(`${server.origin}/chat?room=${room}&name=bob&signal=${signal}`);
    for (const page of [alice, bob]) {
      await waitFor(page, () => document.body.dataset.chatReady === 'true', undefined, 45_000);
      await page.evaluate(() => {
        window.__events = [];
        for (const type of ['reconnecting', 'resumed', 'rejoined', 'peerleft', 'signalingclose']) {
          window.switchboardRoom.addEventListener(type, () => window.__events.push(type));
        }
        window.__pc0 = [...window.switchboardRoom.peers.values()][0].pc;
      });
    }
    assert.equal(proxy.open, 2);

    await alice.setInputFiles('#file-input', file.path);
    await waitFor(bob, () => Number(document.querySelector('.transfer[data-direction="in"] progress')?.value ?? 0) > 0, undefined, 60_000);
    assert.equal(proxy.cut({ block: true }), 2, 'both signaling sockets cut');
    const atCut = await received(bob);
    assert.ok(atCut < file.size, `cut in the middle of the file (${atCut} of ${file.size} bytes)`);

    for (const page of [alice, bob]) {
      await waitFor(page, () => document.body.dataset.signaling === 'reconnecting', undefined, 10_000);
      assert.equal(await page.locator('#signaling-badge').textContent(), 'reconnecting…');
    }
    await screenshot(bob, 'chat-reconnecting');
    await sleep(1500);
    const duringOutage = await received(bob);
    proxy.unblock();

    await waitFor(bob, () => document.querySelector('.transfer[data-direction="in"][data-status="ok"], .transfer[data-direction="in"][data-status="mismatch"], .transfer[data-direction="in"][data-status="failed"]'), undefined, 120_000);
    const inCard = bob.locator('.transfer[data-direction="in"]').first();
    assert.equal(await inCard.getAttribute('data-status'), 'ok');
    assert.equal(await inCard.getAttribute('data-sha256'), file.sha256);
    assert.equal(await inCard.getAttribute('data-size'), String(file.size));
    await waitFor(alice, () => document.querySelector('.transfer[data-direction="out"]')?.dataset.status === 'ok');
    assert.equal(await alice.locator('.transfer[data-direction="out"]').first().getAttribute('data-ack-sha256'), file.sha256);
    assert.ok(duringOutage > atCut,
      `bytes kept arriving while signaling was down (${atCut} -> ${duringOutage})`);

    for (const page of [alice, bob]) {
      await waitFor(page, () => window.__events.includes('resumed'), undefined, 20_000);
      const ev = await page.evaluate(() => window.__events);
      assert.equal(ev[0], 'reconnecting');
      assert.ok(!ev.includes('rejoined') && !ev.includes('peerleft') && !ev.includes('signalingclose'), `events ${ev}`);
      assert.ok(await page.evaluate(() => [...window.switchboardRoom.peers.values()][0].pc === window.__pc0));
      assert.equal(await page.locator('#signaling-badge').isVisible(), false);
    }
    // Chat still works both ways afterwards.
    await bob.fill('#message', 'got it');
    await bob.click('#send');
    await waitFor(alice, () => [...document.querySelectorAll('#messages .msg .text')].some((m) => m.textContent === 'got it'));

    await screenshot(alice, 'chat-resumed-alice');
    await screenshot(bob, 'chat-resumed-bob');
    assert.deepEqual(alice.errors, []);
    assert.deepEqual(bob.errors, []);
  } finally {
    file.cleanup();
    await alice.context().close();
    await bob.context().close();
    await proxy.close();
  }
});
