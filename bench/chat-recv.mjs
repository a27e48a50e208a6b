#!/usr/bin/env node
// A receiving /chat page for bench/lossy-link.sh: headless Chromium opens
// /chat, waits for one incoming file and prints one JSON line:
//   {"ok":true,"status":"ok","ms":N,"bytes":N}
// `ms` runs from the moment the page shows the incoming transfer (its
// file-start) to the moment it verified the SHA-256, polled every 20 ms.
// Exits 0 only for a verified file. With tests/nat/browser-chat.mjs as the
// sender, it makes the Chromium <-> Chromium row.
//
//   node bench/chat-recv.mjs SERVER_ORIGIN ROOM TIMEOUT_SECS
import { launchChromium } from '../tests/nat/chromium.mjs';

const [origin, room, timeoutSecs = '120'] = process.argv.slice(2);
const timeout = Number(timeoutSecs) * 1000;

function out(obj, code) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
  process.exit(code);
}

let browser;
let result = { ok: false, error: 'not run' };
let code = 1;
try {
  browser = await launchChromium(origin);
  const page = await browser.newPage();
  await page.goto(`${origin}/chat?room=${encodeURIComponent(room)}&name=bench-recv`, { timeout });
  // Ready to receive as soon as the page has joined; the sender comes later.
  await page.waitForFunction(() => document.body.dataset.joined === 'true', undefined, { timeout });
  process.stderr.write('joined\n');
  await page.waitForSelector('.transfer[data-direction="in"]', { timeout, state: 'attached' });
  const t0 = Date.now();
  await page.waitForFunction(
    () => ['ok', 'mismatch', 'failed'].includes(document.querySelector('.transfer[data-direction="in"]')?.dataset.status),
    undefined, { timeout, polling: 20 },
  );
  const ms = Date.now() - t0;
  const card = page.locator('.transfer[data-direction="in"]').first();
  const status = await card.getAttribute('data-status');
  const bytes = Number(await card.getAttribute('data-size'));
  result = { ok: status === 'ok', status, ms, bytes };
  code = status === 'ok' ? 0 : 5;
} catch (e) {
  result = { ok: false, error: String(e.message || e).split('\n')[0] };
} finally {
  await browser?.close().catch(() => {});
}
out(result, code);
