// The NAT lab's browser peer: headless Chromium, run inside a lab host by
// tests/nat/lab.sh (`ip netns exec ... node tests/nat/browser-chat.mjs`),
// opens /chat on the lab's serve and sends one file to whoever is in the
// room (a `switchboard recv`). Prints one JSON line on stdout:
//   {"ok":true,"status":"ok","pair":{local,remote},"ms":N}
// or {"ok":false,"error":"..."}; exits 0 only when the receiver acknowledged
// a matching SHA-256.
//
//   node browser-chat.mjs SERVER_ORIGIN ROOM FILE TIMEOUT_SECS
import { runPage } from './chromium.mjs';

const [origin, room, file, timeoutSecs = '60'] = process.argv.slice(2);
const timeout = Number(timeoutSecs) * 1000;

await runPage(origin, async (page) => {
  const t0 = Date.now();
  await page.goto(`${origin}/chat?room=${encodeURIComponent(room)}&name=browser`, { timeout });
  if (!(await page.evaluate(() => window.isSecureContext && !!navigator.storage?.getDirectory))) {
    throw new Error('the page is not a secure context (no Origin Private File System)');
  }
  await page.waitForFunction(() => document.body.dataset.chatReady === 'true', undefined, { timeout });
  await page.waitForFunction(
    () => [...window.switchboardRoom.peers.values()][0]?.pc.connectionState === 'connected',
    undefined, { timeout },
  );
  const setupMs = Date.now() - t0;
  const pair = await page.evaluate(async () => {
    const peer = [...window.switchboardRoom.peers.values()][0];
    return peer.getSelectedCandidatePair();
  });
  const t1 = Date.now();
  await page.setInputFiles('#file-input', file);
  await page.waitForFunction(
    () => ['ok', 'mismatch'].includes(document.querySelector('.transfer[data-direction="out"]')?.dataset.status),
    undefined, { timeout },
  );
  const status = await page.locator('.transfer[data-direction="out"]').first().getAttribute('data-status');
  return { ok: status === 'ok', status, pair, page_setup_ms: setupMs, ms: Date.now() - t1 };
});
