// Chromium's mDNS host candidates (`<uuid>.local`, its default when the page
// has no camera/microphone permission) resolved by crates/mdns through its
// `mdns-resolve` example: Chromium's own responder must answer our queries
// on this host, with an address of this host.
//
// The resolver binary is $SWITCHBOARD_MDNS_BIN, or
// target/debug/examples/mdns-resolve (`cargo build -p switchboard-mdns --examples`).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { newPage, repoRoot, CHROMIUM, CHROMIUM_ARGS } from './helpers.mjs';

const verbose = !!process.env.E2E_VERBOSE;

let browser;

before(async () => {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(`Chromium not found at ${CHROMIUM}: apt-get install -y chromium`);
  }
  // Without the fake-UI flag no camera permission is granted, so Chromium
  // hides host addresses behind mDNS names.
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS.filter((a) => a !== '--use-fake-ui-for-media-stream'),
  });
});

after(async () => {
  await browser?.close();
});

function resolverBinary() {
  const bin = process.env.SWITCHBOARD_MDNS_BIN || 'target/debug/examples/mdns-resolve';
  const abs = path.isAbsolute(bin) ? bin : path.join(repoRoot, bin);
  if (!fs.existsSync(abs)) {
    throw new Error(`mdns-resolve not found at ${abs}: run "cargo build -p switchboard-mdns --examples" or set SWITCHBOARD_MDNS_BIN`);
  }
  return abs;
}

/**
 * Run mdns-resolve; resolves to {code, stdout, stderr, ms}.
 * @param {string[]} args
 */
function runResolver(args) {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const proc = spawn(resolverBinary(), args, {
      cwd: repoRoot,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG || (verbose ? 'mdns=trace' : 'warn') },
    });
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (d) => { stdout += d; });
    proc.stderr.on('data', (d) => {
      stderr += d;
      if (verbose) process.stderr.write(`[mdns-resolve] ${d}`);
    });
    const timer = setTimeout(() => proc.kill('SIGKILL'), 30_000);
    proc.on('error', reject);
    proc.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, ms: Date.now() - started });
    });
  });
}

/** This host's addresses, as mdns-resolve prints them. */
function hostAddresses() {
  return new Set(Object.values(os.networkInterfaces()).flat().map((i) => i.address.replace(/%.*$/, '')));
}

/**
 * Gather Chromium's ICE candidates for a data-channel offer.
 * @param {import('playwright-core').Page} page
 */
async function gatherCandidates(page) {
  return page.evaluate(async () => {
    const pc = new RTCPeerConnection();
    pc.createDataChannel('mdns');
    const candidates = [];
    const complete = new Promise((resolve) => {
      pc.onicecandidate = (e) => { if (e.candidate) candidates.push(e.candidate.candidate); else resolve(); };
      setTimeout(resolve, 10_000);
    });
    await pc.setLocalDescription(await pc.createOffer());
    await complete;
    // Kept open: closing the connection may withdraw the names.
    globalThis.keep = pc;
    return candidates;
  });
}

test('Chromium\'s .local host candidates resolve to this host\'s addresses', { timeout: 90_000 }, async () => {
  const page = await newPage(browser, 'mdns');
  const candidates = await gatherCandidates(page);
  const hosts = candidates.map((c) => c.split(' ')).filter((f) => f[7] === 'host');
  // No silent skip: a host without candidates is a broken test machine.
  if (hosts.length === 0) await page.context().close();
  assert.ok(hosts.length > 0, `Chromium gathered no host candidates (no usable interface): ${JSON.stringify(candidates)}`);
  const names = [...new Set(hosts.map((f) => f[4]))];
  assert.ok(names.every((n) => /^[0-9a-f-]{36}\.local$/.test(n)), `host candidates use mDNS names: ${names}`);

  // Upper-case copies check case-insensitive matching against a real responder.
  const r = await runResolver(['--timeout-ms', '3000', ...names, ...names.map((n) => n.toUpperCase())]);
  assert.equal(r.code, 0, `mdns-resolve failed (exit ${r.code}); is multicast to 224.0.0.251 looped back here?\n${r.stderr}`);
  const resolved = new Map(r.stdout.trim().split('\n').map((l) => {
    const [name, ...addrs] = l.split(' ');
    return [name, addrs];
  }));
  const mine = hostAddresses();
  for (const n of names) {
    const addrs = resolved.get(n);
    assert.ok(addrs && addrs.length > 0, `${n} resolved: ${r.stdout}`);
    for (const a of addrs) assert.ok(mine.has(a), `${n} -> ${a} is an address of this host (${[...mine]})`);
    assert.deepEqual(resolved.get(n.toUpperCase()), addrs, `${n} upper-cased resolves the same`);
  }
  // Chromium's answer carries an NSEC record, so no retransmission or grace
  // period should be needed: well under the first retransmission at 750 ms.
  if (verbose) process.stderr.write(`[mdns] resolved ${names.length} names in ${r.ms} ms: ${r.stdout}`);
  assert.ok(r.ms < 2_000, `resolution took ${r.ms} ms`);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('a .local name nobody owns times out', { timeout: 30_000 }, async () => {
  // Chromium must not answer for names it did not create.
  const page = await newPage(browser, 'mdns-unknown');
  await gatherCandidates(page);
  const name = `${crypto.randomUUID()}.local`;
  const r = await runResolver(['--timeout-ms', '1000', name]);
  assert.equal(r.code, 1, `exit code: ${r.stdout}${r.stderr}`);
  assert.match(r.stderr, /no mDNS answer/);
  assert.equal(r.stdout, '');
  await page.context().close();
});
