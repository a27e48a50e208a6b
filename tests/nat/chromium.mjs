// Headless Chromium for the pages that run inside lab (and bench) network
// namespaces: tests/nat/browser-chat.mjs and bench/chat-recv.mjs, and the
// run-print-exit frame both share (runPage). Debian's
// /usr/bin/chromium (or $CHROMIUM_PATH) through tests/e2e's playwright-core.
import path from 'node:path';
import fs from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/**
 * Launches Chromium for pages served by `origin`. Throws an Error whose
 * message says what is missing.
 * @param {string} origin
 */
export async function launchChromium(origin) {
  let pw;
  try {
    pw = await import(pathToFileURL(path.join(repo, 'tests/e2e/node_modules/playwright-core/index.mjs')).href);
  } catch (e) {
    throw new Error(`playwright-core missing (npm ci in tests/e2e): ${e.message}`);
  }
  const chromiumPath = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
  if (!fs.existsSync(chromiumPath)) throw new Error(`Chromium not found at ${chromiumPath}`);
  return pw.chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      // The lab serves /chat over plain http on a non-loopback address, which
      // is not a secure context: received files would go to memory, not to
      // the Origin Private File System. A real deployment puts serve behind
      // TLS; the lab tells Chromium to treat it as secure.
      `--unsafely-treat-insecure-origin-as-secure=${origin}`,
      // Extra flags from the caller (bench/lossy-link.sh turns mDNS off).
      ...(process.env.BROWSER_CHAT_ARGS ?? '').split(' ').filter(Boolean),
    ],
  });
}

/**
 * The whole life of a one-page script: launches Chromium for `origin`, runs
 * `body(page)` (which returns the result object, with `ok` true only on
 * success), closes the browser, prints the result as one JSON line on
 * stdout and exits 0 for ok, 5 for a transfer that finished badly, 1 for
 * an error (then the result is {ok:false,error}).
 * @param {string} origin
 * @param {(page: any) => Promise<object>} body
 */
export async function runPage(origin, body) {
  let browser;
  let result;
  let code;
  try {
    browser = await launchChromium(origin);
    result = await body(await browser.newPage());
    code = result.ok ? 0 : 5;
  } catch (e) {
    result = { ok: false, error: String(e.message || e).split('\n')[0] };
    code = 1;
  } finally {
    await browser?.close().catch(() => {});
  }
  process.stdout.write(`${JSON.stringify(result)}\n`);
  process.exit(code);
}
