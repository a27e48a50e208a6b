// Error display: room full, signaling unreachable, signaling lost.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, newPage, screenshot, waitFor, roomName, freePort } from './helpers.mjs';

let server;
let browser;

before(async () => {
  server = await startServer(['--max-room-peers', '2']);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

const joined = () => document.body.dataset.joined === 'true';

test('a third peer in a room limited to two sees "room full"', { timeout: 120_000 }, async () => {
  const room = roomName('full');
  const a = await newPage(browser, 'full-a');
  const b = await newPage(browser, 'full-b');
  await a.goto(`${server.origin}/chat?room=${room}&name=a`);
  await waitFor(a, joined);
  await b.goto(`${server.origin}/chat?room=${room}&name=b`);
  await waitFor(b, joined);

  for (const path of ['call', 'chat']) {
    const c = await newPage(browser, `full-${path}`);
    await c.goto(`${server.origin}/${path}?room=${room}&name=c`);
    const status = c.locator('#status[data-code="room-full"]');
    await status.waitFor({ timeout: 20_000 });
    assert.equal(await status.getAttribute('data-kind'), 'error');
    assert.match(await status.textContent(), /Room is full/);
    assert.match(await status.textContent(), new RegExp(room));
    assert.equal(await c.evaluate(() => document.body.dataset.joinError), 'room-full');
    await screenshot(c, `errors-room-full-${path}`);
    assert.deepEqual(c.errors, []);
    await c.context().close();
  }

  // The two peers in the room are unaffected.
  await waitFor(a, () => document.body.dataset.chatReady === 'true', undefined, 45_000);
  assert.equal(await a.locator('#peers li').count(), 1);
  await a.context().close();
  await b.context().close();
});

test('pages pointed at a dead signaling URL say the server is unreachable', { timeout: 60_000 }, async () => {
  const dead = await freePort(); // nothing listens here
  const signal = encodeURIComponent(`ws://127.0.0.1:${dead}/v1/ws`);
  for (const path of ['call', 'chat']) {
    const page = await newPage(browser, `dead-${path}`);
    await page.goto(`${server.origin}/${path}?room=nobody&signal=${signal}`);
    const status = page.locator('#status[data-code="signaling-unreachable"]');
    await status.waitFor({ timeout: 20_000 });
    assert.equal(await status.getAttribute('data-kind'), 'error');
    assert.match(await status.textContent(), /Signaling server unreachable/);
    assert.match(await status.textContent(), new RegExp(`127\\.0\\.0\\.1:${dead}`));
    await screenshot(page, `errors-unreachable-${path}`);
    assert.deepEqual(page.errors, []);
    await page.context().close();
  }
});

test('a page whose signaling server goes away says so', { timeout: 60_000 }, async () => {
  const other = await startServer();
  try {
    const page = await newPage(browser, 'lost');
    await page.goto(`${server.origin}/chat?room=lost&signal=${encodeURIComponent(other.wsUrl)}`);
    await waitFor(page, joined);
    await other.stop();
    const notice = page.locator('#notices [data-code="signaling-closed"]');
    await notice.waitFor({ timeout: 20_000 });
    assert.match(await notice.textContent(), /Signaling connection lost/);
    await screenshot(page, 'errors-signaling-lost');
    assert.deepEqual(page.errors, []);
    await page.context().close();
  } finally {
    await other.stop();
  }
});
