// /doctor: the browser-side half of `switchboard doctor` fills its tables
// with a srflx row for serve's stun: URL and relay rows for its turn: URLs.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chromium } from 'playwright-core';
import { startServer, newPage, screenshot, waitFor, serverBinary, CHROMIUM, CHROMIUM_ARGS } from './helpers.mjs';

let server;
let browser;

before(async () => {
  server = await startServer();
  // Without camera permission, as a visitor opens the page: Chromium then
  // hides host addresses behind mDNS names and keeps a srflx candidate even
  // when it equals the host address (as it does on loopback, with no NAT).
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS.filter((a) => a !== '--use-fake-ui-for-media-stream'),
  });
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test('/doctor gathers srflx and relay candidates from serve\'s ICE servers', { timeout: 90_000 }, async () => {
  const page = await newPage(browser, 'doctor');
  await page.goto(`${server.origin}/doctor`);
  await waitFor(page, () => document.body.dataset.done === 'true', undefined, 60_000);

  const rows = await page.evaluate(() => [...document.querySelectorAll('#candidates tbody tr')].map((tr) => ({
    url: tr.dataset.url,
    type: tr.dataset.type,
    cells: [...tr.children].map((td) => td.textContent),
  })));
  const stun = `stun:127.0.0.1:${server.turnPort}`;
  const turnUdp = `turn:127.0.0.1:${server.turnPort}?transport=udp`;
  const turnTcp = `turn:127.0.0.1:${server.turnPort}?transport=tcp`;
  assert.ok(rows.some((r) => r.url === stun && r.type === 'srflx'), `srflx row for ${stun}: ${JSON.stringify(rows)}`);
  for (const url of [turnUdp, turnTcp]) {
    const relay = rows.find((r) => r.url === url && r.type === 'relay');
    assert.ok(relay, `relay row for ${url}: ${JSON.stringify(rows)}`);
    // The relayed address is serve's external address; the last cell is ms.
    assert.match(relay.cells[3], /^127\.0\.0\.1:\d+$/);
    assert.match(relay.cells[5], /^\d+$/);
  }
  // The relay candidate over TCP says so (relayProtocol).
  assert.equal(rows.find((r) => r.url === turnTcp && r.type === 'relay').cells[4], 'tcp');

  // Every URL's summary row is ok, with the time of its first candidate.
  const summary = await page.evaluate(() => [...document.querySelectorAll('#summary tbody tr')].map((tr) => ({
    url: tr.dataset.url, ok: tr.dataset.ok, first: tr.children[2].textContent,
  })));
  for (const url of [stun, turnUdp, turnTcp]) {
    const s = summary.find((r) => r.url === url);
    assert.equal(s?.ok, 'true', `${url}: ${JSON.stringify(summary)}`);
    assert.match(s.first, /^\d+ ms$/);
  }
  assert.equal(await page.locator('#status').getAttribute('data-kind'), 'ok');
  await screenshot(page, 'doctor');
  assert.deepEqual(page.errors, []);
});

test('/doctor on a server with --auth-secret says it needs ?token=, and gathers with one', { timeout: 90_000 }, async () => {
  const secret = 'doctor-page-secret-0123456789';
  const authed = await startServer(['--auth-secret', secret]);
  const page = await newPage(browser, 'doctor-auth');
  try {
    await page.goto(`${authed.origin}/doctor`);
    await waitFor(page, () => document.body.dataset.done === 'true');
    assert.equal(await page.locator('#status').getAttribute('data-code'), 'ice-servers');
    assert.match(await page.locator('#status').textContent(), /401.*\?token=/);

    const token = execFileSync(serverBinary(), ['token', '--secret', secret, '--room', '*', '--ttl', '5m'], { encoding: 'utf8' }).trim();
    await page.goto(`${authed.origin}/doctor?token=${encodeURIComponent(token)}`);
    await waitFor(page, () => document.body.dataset.done === 'true', undefined, 60_000);
    const relays = await page.locator('#candidates tbody tr[data-type="relay"]').count();
    assert.ok(relays >= 2, `relay rows with the token's TURN credentials: ${relays}`);
  } finally {
    await page.context().close();
    await authed.stop();
  }
});
