// Shared helpers for the end-to-end tests: start `switchboard serve` on a
// free 127.0.0.1 port, launch Debian's headless Chromium through
// playwright-core, capture page errors and write screenshots.

import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const screenshotDir = path.join(repoRoot, 'target', 'e2e-screenshots');

export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

const verbose = !!process.env.E2E_VERBOSE;

/** Binary under test: $SWITCHBOARD_BIN or target/debug/switchboard. */
export function serverBinary() {
  const bin = process.env.SWITCHBOARD_BIN || 'target/debug/switchboard';
  return path.isAbsolute(bin) ? bin : path.join(repoRoot, bin);
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = /** @type {net.AddressInfo} */ (srv.address());
      srv.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Start `switchboard serve --listen 127.0.0.1:<free port> ...extraArgs` and
 * wait until /healthz answers. The built-in STUN/TURN server listens on
 * another free 127.0.0.1 port, or is switched off with
 * `{turn: false}`, so that several servers can run at once and nothing
 * listens beyond loopback. With `{tlsCa: PEM}` the server is expected to
 * serve HTTPS (the caller passes --tls-cert/--tls-key) and the health check
 * trusts that CA.
 * @param {string[]} [extraArgs]
 * @param {{turn?: boolean, tlsCa?: string}} [opts]
 */
export async function startServer(extraArgs = [], opts = {}) {
  const bin = serverBinary();
  if (!fs.existsSync(bin)) {
    throw new Error(`switchboard binary not found at ${bin}: run "cargo build -p switchboard" or set SWITCHBOARD_BIN`);
  }
  // Another process may grab a port between freePort() and the bind: a
  // server that exits because an address is in use is retried on new ports.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startServerOnce(bin, extraArgs, opts);
    } catch (err) {
      if (attempt < 4 && /in use/i.test(String(err && err.message))) continue;
      throw err;
    }
  }
}

/**
 * GET `url` over https trusting only `ca`; resolves to the status code.
 * @param {string} url
 * @param {string} ca
 * @returns {Promise<number>}
 */
function httpsStatus(url, ca) {
  return new Promise((resolve, reject) => {
    const req = https.get(url, { ca }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
    req.setTimeout(5_000, () => req.destroy(new Error('timeout')));
  });
}

/**
 * @param {string} bin
 * @param {string[]} extraArgs
 * @param {{turn?: boolean, tlsCa?: string}} opts
 */
async function startServerOnce(bin, extraArgs, opts) {
  const port = await freePort();
  const args = ['serve', '--listen', `127.0.0.1:${port}`];
  let turnPort = null;
  if (opts.turn === false) {
    args.push('--no-turn');
  } else {
    do turnPort = await freePort(); while (turnPort === port);
    args.push('--turn-listen', `127.0.0.1:${turnPort}`);
  }
  args.push(...extraArgs);
  const proc = spawn(bin, args, { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const collect = (d) => {
    output += d.toString();
    if (verbose) process.stderr.write(`[server] ${d}`);
  };
  proc.stdout.on('data', collect);
  proc.stderr.on('data', collect);
  /** @type {{code: number | null, signal: string | null} | null} */
  let exited = null;
  const exitPromise = new Promise((resolve) => proc.on('exit', (code, signal) => {
    exited = { code, signal };
    resolve(exited);
  }));
  const failed = (why) => new Error(`switchboard ${args.join(' ')} ${why}:\n${output}`);

  const origin = opts.tlsCa ? `https://localhost:${port}` : `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (exited) throw failed(`exited early (${JSON.stringify(exited)})`);
    try {
      if (opts.tlsCa) {
        if ((await httpsStatus(`${origin}/healthz`, opts.tlsCa)) === 200) break;
      } else {
        const res = await fetch(`${origin}/healthz`);
        if (res.ok) break;
      }
    } catch { /* not up yet */ }
    if (Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw failed('did not answer /healthz within 30 s');
    }
    await sleep(100);
  }
  // The answer must come from our process, not from another server that
  // happened to hold the port: ours would have exited on the failed bind.
  await sleep(300);
  if (exited) throw failed(`exited right after start (${JSON.stringify(exited)})`);

  return {
    port,
    turnPort,
    args,
    origin,
    wsUrl: opts.tlsCa ? `wss://localhost:${port}/v1/ws` : `ws://127.0.0.1:${port}/v1/ws`,
    get output() { return output; },
    async stop() {
      if (exited) return exited;
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 5_000);
      const r = await exitPromise;
      clearTimeout(timer);
      return r;
    },
  };
}

/**
 * Launch headless Chromium with fake camera/microphone. `{home}` runs it
 * with that HOME, whose `.pki/nssdb` is the certificate store Chromium
 * trusts on Linux.
 * @param {{home?: string}} [opts]
 */
export async function launchBrowser(opts = {}) {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(`Chromium not found at ${CHROMIUM}: apt-get install -y chromium`);
  }
  const env = opts.home ? { ...process.env, HOME: opts.home } : undefined;
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, env });
}

/**
 * A page in its own browser context (separate storage, like a separate
 * browser). Page errors and console errors are collected in `page.errors`.
 * @param {import('playwright-core').Browser} browser
 * @param {string} name used in log lines
 * @param {{initScript?: string | Function}} [opts]
 */
export async function newPage(browser, name, opts = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  if (opts.initScript) await context.addInitScript(/** @type {any} */ (opts.initScript));
  const page = await context.newPage();
  /** @type {string[]} */
  const errors = [];
  page.on('pageerror', (err) => {
    errors.push(`pageerror: ${err.message}`);
    process.stderr.write(`[${name}] pageerror: ${err.stack || err.message}\n`);
  });
  page.on('console', (msg) => {
    if (verbose) process.stderr.write(`[${name}] console.${msg.type()}: ${msg.text()}\n`);
  });
  return Object.assign(page, { errors, label: name });
}

/**
 * Full-page screenshot to target/e2e-screenshots/<name>.png.
 * @param {import('playwright-core').Page} page
 * @param {string} name
 */
export async function screenshot(page, name) {
  fs.mkdirSync(screenshotDir, { recursive: true });
  const file = path.join(screenshotDir, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

/** Random bytes in a temp file; returns {path, sha256, size, cleanup}. */
export function randomFile(size, name = 'random.bin') {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'switchboard-e2e-'));
  const file = path.join(dir, name);
  const hash = createHash('sha256');
  const fd = fs.openSync(file, 'w');
  const block = 1 << 20;
  for (let off = 0; off < size; off += block) {
    const buf = randomBytesFast(Math.min(block, size - off));
    hash.update(buf);
    fs.writeSync(fd, buf);
  }
  fs.closeSync(fd);
  return {
    path: file,
    size,
    sha256: hash.digest('hex'),
    cleanup: () => fs.rmSync(dir, { recursive: true, force: true }),
  };
}

/** @param {number} n */
function randomBytesFast(n) {
  // crypto.randomFillSync caps at 2^31-1 bytes; blocks here are 1 MiB.
  const buf = Buffer.allocUnsafe(n);
  for (let off = 0; off < n; off += 65536) {
    globalThis.crypto.getRandomValues(buf.subarray(off, Math.min(off + 65536, n)));
  }
  return buf;
}

/** A unique room name per test run. */
export function roomName(prefix) {
  return `${prefix}-${Date.now().toString(36)}-${Math.floor(Math.random() * 1e6).toString(36)}`;
}

/**
 * Wait for `fn` in the page to return truthy; on timeout, the error names the
 * page and includes its status banner to make failures readable.
 * @param {any} page
 * @param {Function} fn
 * @param {any} [arg]
 * @param {number} [timeout]
 */
export async function waitFor(page, fn, arg, timeout = 30_000) {
  try {
    return await page.waitForFunction(fn, arg, { timeout, polling: 200 });
  } catch (err) {
    const status = await page.evaluate(() => {
      const s = document.querySelector('#status');
      const n = document.querySelector('#notices');
      return `${s ? s.textContent : ''} ${n ? n.textContent : ''}`.trim();
    }).catch(() => '(page gone)');
    throw new Error(`[${page.label ?? 'page'}] ${err.message}\nstatus on page: ${status || '(none)'}`);
  }
}

/** Drop terminal colour codes, which tracing writes even to a pipe. @param {string} s */
const stripAnsi = (s) => s.replace(/\x1b\[[0-9;]*m/g, '');

/**
 * Run `switchboard <args> --json` and parse its stdout, one JSON event a
 * line (docs/cli.md). Lines that are not JSON objects with an `event` are
 * kept in `badLines`.
 * @param {string} name log label
 * @param {string[]} args
 * @param {Record<string, string>} [env] extra environment (RUST_LOG, say)
 */
export function runCli(name, args, env = {}) {
  const bin = serverBinary();
  const proc = spawn(bin, args, { cwd: repoRoot, stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  /** @type {any[]} */
  const events = [];
  /** @type {string[]} */
  const badLines = [];
  let stdout = '';
  let stderr = '';
  let partial = '';
  /** @type {Array<() => void>} */
  let waiters = [];
  const wake = () => { for (const w of waiters) w(); };
  proc.stdout.on('data', (d) => {
    stdout += d;
    partial += d;
    let nl;
    while ((nl = partial.indexOf('\n')) >= 0) {
      const line = partial.slice(0, nl).trim();
      partial = partial.slice(nl + 1);
      if (!line) continue;
      if (verbose) process.stderr.write(`[${name}] ${line}\n`);
      try {
        const ev = JSON.parse(line);
        if (ev && typeof ev === 'object' && typeof ev.event === 'string') events.push(ev);
        else badLines.push(line);
      } catch {
        badLines.push(line);
      }
    }
    wake();
  });
  proc.stderr.on('data', (d) => {
    stderr += d;
    if (verbose) process.stderr.write(`[${name} stderr] ${d}`);
    wake();
  });
  /** @type {{code: number | null, signal: string | null} | null} */
  let exited = null;
  const exit = new Promise((resolve) => proc.on('exit', (code, signal) => {
    exited = { code, signal };
    wake();
    resolve(exited);
  }));
  const command = `${path.relative(repoRoot, bin)} ${args.join(' ')}`;
  const describe = () => `${command}\nexit: ${JSON.stringify(exited)}\nstdout:\n${stdout}\nstderr:\n${stripAnsi(stderr).slice(-4000)}`;

  return {
    proc,
    events,
    badLines,
    command,
    describe,
    get exited() { return exited; },
    /** Everything on stderr so far, without colour codes. */
    get stderr() { return stripAnsi(stderr); },
    /**
     * The first event matching `pred` (already seen or still to come).
     * Fails when the process exits first or after `timeout` ms.
     * @param {(ev: any) => boolean} pred
     * @param {string} what
     */
    waitEvent(pred, what, timeout = 60_000) {
      return this.waitFor(() => events.find(pred), what, timeout);
    },
    /**
     * The first truthy value of `probe()`, re-checked whenever the process
     * writes or exits. Fails when the process exits first or after `timeout` ms.
     * @template T
     * @param {() => T | undefined | null | false} probe
     * @param {string} what
     * @returns {Promise<T>}
     */
    waitFor(probe, what, timeout = 60_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const ev = probe();
          if (ev) return done(() => resolve(ev));
          if (exited) return done(() => reject(new Error(`${name} exited before ${what}:\n${describe()}`)));
        };
        const timer = setTimeout(() => done(() => reject(new Error(`${name}: no ${what} within ${timeout} ms:\n${describe()}`))), timeout);
        const done = (fn) => {
          clearTimeout(timer);
          waiters = waiters.filter((w) => w !== check);
          fn();
        };
        waiters.push(check);
        check();
      });
    },
    /** Wait for the exit; fails after `timeout` ms. */
    async waitExit(timeout = 60_000) {
      let timer;
      const r = await Promise.race([
        exit,
        new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${name} did not exit within ${timeout} ms:\n${describe()}`)), timeout); }),
      ]);
      clearTimeout(timer);
      return /** @type {{code: number | null, signal: string | null}} */ (r);
    },
    /** SIGTERM, then SIGKILL after 3 s; resolves once it is gone. */
    async kill() {
      if (exited) return exited;
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 3_000);
      const r = await exit;
      clearTimeout(timer);
      return r;
    },
  };
}

/**
 * Add the CLI's command line and output to an error: a page-side timeout is
 * usually explained there.
 * @param {unknown} err
 * @param {{describe: () => string}} cli
 */
export function withCliOutput(err, cli) {
  if (err instanceof Error) {
    err.message += `\n--- CLI ---\n${cli.describe()}`;
    return err;
  }
  return new Error(`${err}\n--- CLI ---\n${cli.describe()}`);
}

/**
 * Samples, every `everyMs` until `stop()`, a page's JS heap (CDP
 * `Performance.getMetrics`, `JSHeapUsedSize`) and the resident memory of
 * Chromium's renderer processes (`SystemInfo.getProcessInfo` for their
 * pids, then /proc/PID/status). The heap alone would miss file data: the
 * bytes of ArrayBuffers and Blobs live outside it. `stop()` resolves to the
 * largest heap sample, the largest growth of any renderer's RSS over its
 * first sample, both in bytes, and the number of samples.
 * @param {import('playwright-core').Page} page
 */
export async function sampleHeap(page, everyMs = 250) {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Performance.enable');
  const browserCdp = await page.context().browser().newBrowserCDPSession();
  /** @type {Map<number, number>} first RSS seen per renderer pid */
  const firstRss = new Map();
  const rss = (pid) => {
    try {
      const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
      return m ? Number(m[1]) * 1024 : null;
    } catch {
      return null;
    }
  };
  let max = 0;
  let rssGrowth = 0;
  let samples = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      try {
        const { metrics } = await cdp.send('Performance.getMetrics');
        max = Math.max(max, metrics.find((m) => m.name === 'JSHeapUsedSize')?.value ?? 0);
        const { processInfo } = await browserCdp.send('SystemInfo.getProcessInfo');
        for (const p of processInfo.filter((x) => x.type === 'renderer')) {
          const now = rss(p.id);
          if (now === null) continue;
          if (!firstRss.has(p.id)) firstRss.set(p.id, now);
          rssGrowth = Math.max(rssGrowth, now - /** @type {number} */ (firstRss.get(p.id)));
        }
        samples += 1;
      } catch {
        // The page is closing: stop quietly, the samples so far stand.
        break;
      }
      await new Promise((r) => setTimeout(r, everyMs));
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      await cdp.detach().catch(() => {});
      await browserCdp.detach().catch(() => {});
      return { max, rssGrowth, samples };
    },
  };
}

/**
 * Size of the large-file transfers in MiB: E2E_BIG_MIB, or 512, which at
 * this machine's 8-13 MB/s (debug CLI, both cores shared) keeps each test
 * near two minutes. Memory is what the test is about, and the old pages
 * held the whole file, so 512 MiB is already past the heap limit for them.
 */
export const BIG_MIB = Number(process.env.E2E_BIG_MIB || 512);
/**
 * A page's JS heap, and the growth of any renderer's resident memory, must
 * stay under this while a large file moves.
 */
export const HEAP_LIMIT = 200 * 1024 * 1024;
