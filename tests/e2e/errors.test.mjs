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
    // The SDK keeps trying (reconnect.maxAttempts) and the page shows it;
    // giving up is covered in sdk-resume.test.mjs.
    const badge = page.locator('#signaling-badge[data-state="reconnecting"]');
    await badge.waitFor({ timeout: 20_000 });
    assert.equal(await badge.textContent(), 'reconnecting…');
    assert.match(await badge.getAttribute('title'), /Signaling connection lost; attempt \d+/);
    assert.equal(await page.evaluate(() => document.body.dataset.signaling), 'reconnecting');
    await screenshot(page, 'errors-signaling-lost');
    assert.deepEqual(page.errors, []);
    await page.context().close();
  } finally {
    await other.stop();
  }
});

test('a bad room name gets the server\'s explanation on /call and /chat', { timeout: 60_000 }, async () => {
  // The pages do not check names themselves: the rule lives in the server,
  // and its refusal must reach the user as a clear message.
  const bad = 'no spaces allowed';
  for (const path of ['call', 'chat']) {
    const page = await newPage(browser, `invalid-room-${path}`);
    await page.goto(`${server.origin}/${path}?room=${encodeURIComponent(bad)}&name=x`);
    const status = page.locator('#status[data-code="invalid-room"]');
    await status.waitFor({ timeout: 20_000 });
    assert.equal(await status.getAttribute('data-kind'), 'error');
    const text = await status.textContent();
    assert.match(text, /Invalid room name/);
    assert.ok(text.includes(`"${bad}"`), `names the room: ${text}`);
    // The server's own message, as the SDK reports it, is what the page shows.
    const message = await page.evaluate(async ({ url, room }) => {
      const { SignalingChannel } = await import('/sdk/switchboard.js');
      const s = new SignalingChannel(url);
      try {
        await s.join(room);
        return 'joined';
      } catch (e) {
        return e.message;
      } finally {
        s.close();
      }
    }, { url: server.wsUrl, room: bad });
    assert.ok(message.length > 0 && message !== 'invalid-room', `the server explains the refusal: ${message}`);
    assert.match(message, /64/, 'the explanation states the rule');
    assert.ok(text.includes(message), `the page shows the server's message ${JSON.stringify(message)}: ${text}`);
    assert.equal(await page.evaluate(() => document.body.dataset.joinError), 'invalid-room');
    assert.equal(await page.evaluate(() => document.body.dataset.joined), undefined, 'not joined');
    // The room picker comes back with the refused name, ready to be fixed.
    assert.equal(await page.locator('#pick-room').isVisible(), true, 'the room picker is shown');
    assert.equal(await page.inputValue('#room-input'), bad);
    await screenshot(page, `errors-invalid-room-${path}`);
    assert.deepEqual(page.errors, []);
    await page.context().close();
  }
});
