// Room access tokens in the browser: `serve --auth-secret`, tokens from
// `switchboard token`, the SDK's joinRoom({token}) and the chat page's
// ?token=.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { startServer, launchBrowser, newPage, waitFor, roomName, screenshot, serverBinary } from './helpers.mjs';

const SECRET = 'e2e-access-token-secret-0123456789';
let server;
let browser;

/** `switchboard token --secret SECRET ...args`, trimmed. */
const mint = (...args) =>
  execFileSync(serverBinary(), ['token', '--secret', SECRET, ...args], { encoding: 'utf8' }).trim();

before(async () => {
  server = await startServer(['--auth-secret', SECRET]);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test('joinRoom with a token connects two peers; without one it is refused', { timeout: 90_000 }, async () => {
  const room = roomName('auth');
  const token = mint('--room', `${room.slice(0, 8)}*`);
  const page = await newPage(browser, 'auth-sdk');
  await page.goto(`${server.origin}/`);
  const r = await page.evaluate(async ({ url, room, token }) => {
    const { joinRoom } = await import('/sdk/switchboard.js');
    const out = {};
    try {
      await joinRoom(url, room);
      out.without = 'joined';
    } catch (e) {
      out.without = e.code;
    }
    try {
      await joinRoom(url, room, { token: token.slice(0, -2) + (token.endsWith('AA') ? 'BB' : 'AA') });
      out.forged = 'joined';
    } catch (e) {
      out.forged = e.code;
    }
    const channel = [{ label: 'chat', options: { ordered: true } }];
    const a = await joinRoom(url, room, { token, peer: 'a', dataChannels: channel });
    const b = await joinRoom(url, room, { token, peer: 'b', dataChannels: channel });
    // The two peers reach each other: a data channel opens and carries a message.
    out.message = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no message within 30 s')), 30_000);
      a.addEventListener('datachannel', ({ channel }) => {
        channel.addEventListener('message', (ev) => { clearTimeout(timer); resolve(ev.data); });
      });
      b.addEventListener('datachannel', ({ channel }) => {
        const send = () => channel.send('hello with a token');
        if (channel.readyState === 'open') send(); else channel.addEventListener('open', send, { once: true });
      });
    });
    out.ids = [a.peerId, b.peerId];
    a.leave();
    b.leave();
    return out;
  }, { url: server.wsUrl, room, token });
  assert.equal(r.without, 'unauthorized');
  assert.equal(r.forged, 'unauthorized');
  assert.deepEqual(r.ids, ['a', 'b']);
  assert.equal(r.message, 'hello with a token');
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('the chat page passes its ?token= on, and says why it was refused', { timeout: 60_000 }, async () => {
  const room = roomName('authpage');
  const ok = await newPage(browser, 'auth-page-ok');
  await ok.goto(`${server.origin}/chat?room=${room}&name=ok&token=${mint('--room', room, '--peer', 'tok')}`);
  await waitFor(ok, () => document.body.dataset.joined === 'true');
  assert.equal(await ok.evaluate(() => window.switchboardRoom.peerId), 'tok');

  const refused = await newPage(browser, 'auth-page-refused');
  await refused.goto(`${server.origin}/chat?room=${room}&name=no`);
  const status = refused.locator('#status[data-code="unauthorized"]');
  await status.waitFor({ timeout: 20_000 });
  assert.match(await status.textContent(), /Access token needed/);
  await screenshot(refused, 'auth-unauthorized');
  await ok.context().close();
  await refused.context().close();
});
