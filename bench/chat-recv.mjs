#!/usr/bin/env node
// A receiving /chat page for bench/lossy-link.sh: headless Chromium opens
// /chat, waits for one incoming file and prints one JSON line:
//   {"ok":true,"status":"ok","ms":N,"bytes":N}
// `ms` runs from the moment the page shows the incoming transfer (its
// file-start) to the moment it verified the SHA-256, both seen by a
// MutationObserver in the page.
// Exits 0 only for a verified file. With tests/nat/browser-chat.mjs as the
// sender, it makes the Chromium <-> Chromium row.
//
//   node bench/chat-recv.mjs SERVER_ORIGIN ROOM TIMEOUT_SECS
import { runPage } from '../tests/nat/chromium.mjs';

const [origin, room, timeoutSecs = '120'] = process.argv.slice(2);
const timeout = Number(timeoutSecs) * 1000;

await runPage(origin, async (page) => {
  await page.goto(`${origin}/chat?room=${encodeURIComponent(room)}&name=bench-recv`, { timeout });
  // Ready to receive as soon as the page has joined; the sender comes later.
  await page.waitForFunction(() => document.body.dataset.joined === 'true', undefined, { timeout });
  // Timed inside the page: polling from here lagged by tens of ms, which
  // made a 4 MiB transfer look like 200 MB/s.
  await page.evaluate(() => {
    window.benchTimes = {};
    new MutationObserver(() => {
      const card = document.querySelector('.transfer[data-direction="in"]');
      if (!card) return;
      window.benchTimes.start ??= performance.now();
      if (['ok', 'mismatch', 'failed'].includes(card.dataset.status)) window.benchTimes.end ??= performance.now();
    }).observe(document.body, { subtree: true, childList: true, attributes: true });
  });
  process.stderr.write('joined\n');
  await page.waitForFunction(() => window.benchTimes.end !== undefined, undefined, { timeout, polling: 100 });
  const ms = Math.round(await page.evaluate(() => window.benchTimes.end - window.benchTimes.start));
  const card = page.locator('.transfer[data-direction="in"]').first();
  const status = await card.getAttribute('data-status');
  const bytes = Number(await card.getAttribute('data-size'));
  return { ok: status === 'ok', status, ms, bytes };
});
