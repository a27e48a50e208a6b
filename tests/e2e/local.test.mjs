// /local: the seed-003 demo, two peer connections in one page.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, newPage, screenshot, waitFor } from './helpers.mjs';

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

test('index links to the three demos', { timeout: 60_000 }, async () => {
  const page = await newPage(browser, 'index');
  await page.goto(`${server.origin}/`);
  for (const href of ['/local', '/call', '/chat']) {
    assert.ok(await page.locator(`a[href="${href}"]`).count() > 0, `index links to ${href}`);
  }
  assert.equal(await page.locator('#ws-url').textContent(), `${server.wsUrl}`);
  await page.fill('#chat-room', 'from-index');
  await page.click('#join-chat');
  await page.waitForURL(/\/chat\?room=from-index$/);
  await page.goto(`${server.origin}/`);
  await screenshot(page, 'index');
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('/local connects pc1 and pc2 and reports a setup time', { timeout: 90_000 }, async () => {
  const page = await newPage(browser, 'local');
  await page.goto(`${server.origin}/local`);
  await page.click('#start');
  await waitFor(page, () => !document.querySelector('#call').disabled);
  await page.click('#call');
  await waitFor(page, () => document.querySelector('#connection-state').textContent === 'connected');

  const setup = Number(await page.locator('#setup-time').textContent());
  assert.ok(Number.isFinite(setup) && setup > 0 && setup < 30_000, `setup time ${setup} ms`);

  // Remote video really plays and the first frame time is shown.
  await waitFor(page, () => document.querySelector('#remote-video').videoWidth > 0);
  await waitFor(page, () => document.querySelector('#first-frame-time').textContent !== '—');

  // Candidate table built from gathered candidates.
  const rows = await page.locator('#candidates tr').count();
  assert.ok(rows >= 2, `candidate rows: ${rows}`);
  const types = await page.locator('#candidates tr').evaluateAll((trs) => trs.map((tr) => tr.dataset.type));
  assert.ok(types.includes('host'), `candidate types ${types}`);

  // Step log has millisecond timestamps and the JSEP steps in order.
  const log = await page.locator('#log').textContent();
  for (const s of ['pc1 createOffer start', 'pc2 setRemoteDescription complete', 'pc2 createAnswer start',
    'pc1 setRemoteDescription complete', 'connected: setup time']) {
    assert.ok(log.includes(s), `step log contains "${s}"`);
  }
  assert.match(log, /\[\d+\.\d{3}\]/);

  await page.click('#show-sdp');
  const sdp = await page.locator('#sdp').inputValue();
  assert.match(sdp, /^# pc1 offer\nv=0/);
  assert.match(sdp, /m=video/);

  await screenshot(page, 'local');

  await page.click('#hangup');
  assert.equal(await page.locator('#connection-state').textContent(), 'closed');
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('/local without camera says so and still connects over a data channel', { timeout: 60_000 }, async () => {
  const page = await newPage(browser, 'local-nocam', {
    initScript: () => {
      navigator.mediaDevices.getUserMedia = () =>
        Promise.reject(new DOMException('Permission denied', 'NotAllowedError'));
    },
  });
  await page.goto(`${server.origin}/local`);
  await page.click('#start');
  const status = page.locator('#status[data-code="camera-denied"]');
  await status.waitFor();
  assert.match(await status.textContent(), /denied/);
  await waitFor(page, () => !document.querySelector('#call').disabled);
  await page.click('#call');
  await waitFor(page, () => document.querySelector('#connection-state').textContent === 'connected');
  assert.ok(Number(await page.locator('#setup-time').textContent()) > 0);
  assert.match(await page.locator('#log').textContent(), /pc2 received data channel "local"/);
  await screenshot(page, 'local-no-camera');
  assert.deepEqual(page.errors, []);
  await page.context().close();
});
