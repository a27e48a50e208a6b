#!/usr/bin/env node
// Chromium<->Chromium peer benchmark: the browser baseline for the
// native peer's figures.
//
//   node bench/chromium-peer.mjs [--runs N] [--bytes N] [--json] [--no-serve]
//        [--high-water BYTES] [--low-water BYTES] [--out FILE]
//
// Two figures, measured in headless Chromium (Debian's /usr/bin/chromium
// through playwright-core from tests/e2e/node_modules, with the same launch
// flags as the e2e tests):
//
//  (a) Setup time: performance.now() just before the first createOffer() to
//      the offerer's data channel firing `open`. Median and p95 over --runs
//      runs (default 20), every run with a fresh pair of RTCPeerConnections.
//      One warm-up run before them is not counted (it pays for loading the
//      WebRTC stack in the renderer) but is reported as `warmup_ms`.
//  (b) Throughput of one reliable, ordered data channel: 64 KiB messages,
//      --bytes in total (default 1 GiB), sender paced with bufferedAmount /
//      bufferedAmountLowThreshold (stop sending above --high-water, resume at
//      `bufferedamountlow`, threshold --low-water). The clock runs from the
//      first send() until the receiver has counted every byte. MB/s is
//      10^6 bytes per second.
//
// Main variant ("in-page"): both RTCPeerConnections in one page; the
// descriptions and candidates are handed over directly in JS (trickle, no
// signaling server), which is how the native side is measured in-process.
// No ICE servers are configured, so only host candidates are gathered.
//
// Second variant ("serve", skip with --no-serve): two pages in separate
// browser contexts join a room on a `switchboard serve` (target/debug, or
// $SWITCHBOARD_BIN) through the browser SDK at /sdk/switchboard.js, the way
// /chat does; the newcomer creates the channel and offers. Setup time is
// from the SDK's `createOffer` timeline step to the channel's `open`, in the
// newcomer's page. Throughput runs from the newcomer to the other page; the
// receiver answers a small text message once it has every byte and the
// clock stops when that answer arrives (one extra one-way trip on loopback).
// The server runs with --no-turn so both variants gather the same host
// candidates.
//
// mDNS: a page that has not been granted camera/microphone permission gets
// its host candidates obfuscated as `<uuid>.local` (Chromium's default,
// "WebRtcHideLocalIpsWithMdns"). The in-page variant runs on about:blank,
// an opaque origin that holds no permission, so it gathers .local
// candidates. But the e2e launch flags include
// --use-fake-ui-for-media-stream, which makes the camera/microphone
// permission read "granted" on every secure origin, and http://127.0.0.1 is
// one: pages served by a `switchboard serve` on 127.0.0.1 (the serve variant,
// and the e2e tests) therefore gather raw IPs (192.0.2.2 and fd00::2 here)
// and never send a .local candidate, although they never call getUserMedia.
// (Checked with Chromium 156: without that flag the same 127.0.0.1 page gets
// .local candidates and permissions.query({name:'camera'}) says "prompt".)
// So the in-page setup runs are repeated on the server's http://127.0.0.1
// origin (`in_page_localhost_origin`) to show what mDNS costs.
// The .local names are resolved by multicast DNS (Chromium's own responder,
// 224.0.0.251:5353); when a check arrives before the name is resolved (or
// resolution fails, e.g. without a multicast route), the receiving side
// learns the sender as a peer-reflexive (prflx) remote candidate, so a pair
// "host -> prflx" is normal too. The serve variant shows prflx as well: its
// checks often beat the remote candidate through the signaling server.
// The script records the gathered candidates and the selected pair (from
// getStats) of every run and prints how often each pair type was selected.
// getStats() hides the addresses of mDNS candidates, so the address family
// of the throughput connection is looked up with `ss` from its local port.
//
// The VM this runs on may be shared, and Chromium's throughput here is CPU
// bound (renderer and network service process each near one core, mostly in
// the kernel). Around each throughput run the script reads /proc: CPU time
// of the whole machine (user+nice+system+irq+softirq+steal) and of the
// Chromium processes plus this node process; `throughput_cpu` reports both
// and `other_s`, the CPU seconds used by anything else meanwhile. An
// `other_s` that is more than a few percent of `wall_s` means the figure
// was measured against competing work.
//
// Output: a human summary, or with --json one JSON object:
//   {setup_ms:{median,p95,runs:[...]}, throughput_mb_s, bytes, chromium_version,
//    warmup_ms, selected_pairs, candidates, serve:{...same...}|null, ...}
// p95 is nearest-rank: the ceil(0.95 * n)-th smallest run.

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import { launchBrowser, startServer, CHROMIUM, CHROMIUM_ARGS } from '../tests/e2e/helpers.mjs';

const MSG = 64 * 1024;

function parseArgs(argv) {
  const o = {
    runs: 20,
    bytes: 1024 ** 3,
    json: false,
    serve: true,
    highWater: 8 * 1024 * 1024,
    lowWater: 1024 * 1024,
    out: null,
    timeoutMs: 30_000,
  };
  const num = (name, v) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0 || !Number.isInteger(n)) usage(`${name} needs a positive integer, got ${JSON.stringify(v)}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) usage(`${a} needs a value`);
      return argv[++i];
    };
    switch (a) {
      case '--runs': o.runs = num(a, next()); break;
      case '--bytes': o.bytes = num(a, next()); break;
      case '--high-water': o.highWater = num(a, next()); break;
      case '--low-water': o.lowWater = num(a, next()); break;
      case '--timeout-ms': o.timeoutMs = num(a, next()); break;
      case '--out': o.out = next(); break;
      case '--json': o.json = true; break;
      case '--no-serve': o.serve = false; break;
      case '-h': case '--help': usage(); break;
      default: usage(`unknown argument ${a}`);
    }
  }
  if (o.lowWater >= o.highWater) usage('--low-water must be below --high-water');
  // Chromium refuses send() once 16 MiB are queued.
  if (o.highWater + MSG > 16 * 1024 * 1024) usage('--high-water + 64 KiB must stay within Chromium\'s 16 MiB send queue');
  return o;
}

function usage(err) {
  const text = 'usage: node bench/chromium-peer.mjs [--runs N] [--bytes N] [--json] [--no-serve] ' +
    '[--high-water BYTES] [--low-water BYTES] [--timeout-ms MS] [--out FILE]';
  if (err) {
    process.stderr.write(`chromium-peer: ${err}\n${text}\n`);
    process.exit(2);
  }
  process.stdout.write(`${text}\n`);
  process.exit(0);
}

const opts = parseArgs(process.argv.slice(2));
const log = (msg) => process.stderr.write(`${msg}\n`);

/** @param {number[]} xs */
function summary(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const rank = (p) => s[Math.min(s.length, Math.max(1, Math.ceil(p * s.length))) - 1];
  const mid = s.length / 2;
  const median = s.length % 2 ? s[Math.floor(mid)] : (s[mid - 1] + s[mid]) / 2;
  const r3 = (x) => Math.round(x * 1000) / 1000;
  return { median: r3(median), p95: r3(rank(0.95)), min: r3(s[0]), max: r3(s[s.length - 1]), runs: xs.map(r3) };
}

/** "host/udp -> prflx/udp" for a pair from getStats. */
const pairLabel = (p) => p ? `${p.local?.candidateType}/${p.local?.protocol} -> ${p.remote?.candidateType}/${p.remote?.protocol}` : 'none';

/** Count how often each selected-pair label occurs. */
function tally(pairs) {
  /** @type {Record<string, number>} */
  const t = {};
  for (const p of pairs) t[pairLabel(p)] = (t[pairLabel(p)] ?? 0) + 1;
  return t;
}

// ---------------------------------------------------------------------------
// Browser side. Installed into a page as window.__bench; everything runs in
// the page, node only collects the results.
function pageLib() {
  /** The selected candidate pair from getStats(), like the SDK reports it. */
  async function selectedPair(pc) {
    const stats = await pc.getStats();
    let pair = null;
    stats.forEach((s) => {
      if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId) ?? pair;
    });
    if (!pair) stats.forEach((s) => { if (!pair && s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s; });
    if (!pair) return null;
    const side = (c) => c ? { candidateType: c.candidateType, protocol: c.protocol, address: c.address ?? c.ip, port: c.port } : null;
    return { local: side(stats.get(pair.localCandidateId)), remote: side(stats.get(pair.remoteCandidateId)), rtt: pair.currentRoundTripTime };
  }

  function deferred() {
    let resolve, reject;
    const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
    return { promise, resolve, reject };
  }

  function timeout(ms, what) {
    return new Promise((_, rej) => setTimeout(() => rej(new Error(`${what} did not happen within ${ms} ms`)), ms));
  }

  /**
   * Connect pc1 -> pc2 with a reliable ordered channel created by pc1.
   * Candidates trickle straight into the other connection as soon as its
   * remote description is set. Returns the timings and both channels.
   */
  async function connect(timeoutMs) {
    const pc1 = new RTCPeerConnection();
    const pc2 = new RTCPeerConnection();
    const candidates = { pc1: [], pc2: [] };
    const remoteSet = { pc1: deferred(), pc2: deferred() };
    const trickle = (from, to, name, otherName) => {
      from.addEventListener('icecandidate', (e) => {
        if (e.candidate) candidates[name].push(e.candidate.candidate);
        remoteSet[otherName].promise
          .then(() => to.addIceCandidate(e.candidate ?? undefined))
          .catch((err) => console.warn(`addIceCandidate on ${otherName}:`, err));
      });
    };
    trickle(pc1, pc2, 'pc1', 'pc2');
    trickle(pc2, pc1, 'pc2', 'pc1');

    const dc1 = pc1.createDataChannel('bench', { ordered: true });
    dc1.binaryType = 'arraybuffer';
    const open1 = new Promise((res) => dc1.addEventListener('open', () => res(performance.now()), { once: true }));
    const dc2p = new Promise((res) => pc2.addEventListener('datachannel', (e) => {
      e.channel.binaryType = 'arraybuffer';
      if (e.channel.readyState === 'open') res({ channel: e.channel, t: performance.now() });
      else e.channel.addEventListener('open', () => res({ channel: e.channel, t: performance.now() }), { once: true });
    }, { once: true }));

    const t0 = performance.now();
    const offer = await pc1.createOffer();
    await pc1.setLocalDescription(offer);
    await pc2.setRemoteDescription(offer);
    remoteSet.pc2.resolve();
    const answer = await pc2.createAnswer();
    await pc2.setLocalDescription(answer);
    await pc1.setRemoteDescription(answer);
    remoteSet.pc1.resolve();
    const close = () => { pc1.close(); pc2.close(); };
    try {
      const t1 = await Promise.race([open1, timeout(timeoutMs, 'data channel open')]);
      const { channel: dc2, t: t2 } = await Promise.race([dc2p, timeout(timeoutMs, 'remote data channel open')]);
      return { pc1, pc2, dc1, dc2, close, setupMs: t1 - t0, answererOpenMs: t2 - t0, candidates };
    } catch (err) {
      close();
      throw err;
    }
  }

  /**
   * Send `total` bytes in 64 KiB messages from dc to rx, paced by
   * bufferedAmount. `done` resolves with performance.now() when the
   * receiving side has all bytes (or got the receiver's "done" answer).
   */
  async function pump(dc, total, highWater, lowWater, done) {
    const MSG = 64 * 1024;
    const buf = new Uint8Array(MSG);
    for (let i = 0; i < MSG; i++) buf[i] = i * 7;
    dc.bufferedAmountLowThreshold = lowWater;
    const low = () => new Promise((res, rej) => {
      const ok = () => { dc.removeEventListener('close', bad); res(); };
      const bad = () => { dc.removeEventListener('bufferedamountlow', ok); rej(new Error('data channel closed while sending')); };
      dc.addEventListener('bufferedamountlow', ok, { once: true });
      dc.addEventListener('close', bad, { once: true });
    });
    let stalls = 0;
    const t0 = performance.now();
    let sent = 0;
    while (sent < total) {
      if (dc.bufferedAmount > highWater) {
        stalls++;
        await low();
      }
      const n = Math.min(MSG, total - sent);
      dc.send(n === MSG ? buf : buf.subarray(0, n));
      sent += n;
    }
    const tSent = performance.now();
    const t1 = await done;
    return { ms: t1 - t0, sendLoopMs: tSent - t0, stalls };
  }

  /** Receiver: count bytes, resolve with the time the last one arrived. */
  function counter(ch, total) {
    return new Promise((res) => {
      let got = 0;
      ch.addEventListener('message', (e) => {
        got += typeof e.data === 'string' ? 0 : e.data.byteLength;
        if (got >= total) res(performance.now());
      });
    });
  }

  async function setupRun(timeoutMs) {
    const c = await connect(timeoutMs);
    try {
      return {
        setupMs: c.setupMs,
        answererOpenMs: c.answererOpenMs,
        pair: await selectedPair(c.pc1),
        answererPair: await selectedPair(c.pc2),
        candidates: c.candidates,
      };
    } finally {
      c.close();
    }
  }

  async function throughputRun(total, highWater, lowWater, timeoutMs) {
    const c = await connect(timeoutMs);
    try {
      window.__tpPair = await selectedPair(c.pc1);
      const r = await pump(c.dc1, total, highWater, lowWater, counter(c.dc2, total));
      return { ...r, pair: await selectedPair(c.pc1) };
    } finally {
      c.close();
    }
  }

  // ---- serve variant: two pages, SDK over a real signaling server ---------

  let sdk = null;
  /** Join `room`; the newcomer creates the `bench` channel. */
  async function sbJoin(room, newcomer) {
    sdk ??= await import('/sdk/switchboard.js');
    const r = await sdk.joinRoom(sdk.defaultSignalingUrl(), room, {
      meta: { name: newcomer ? 'bench-offerer' : 'bench-answerer' },
      dataChannels: newcomer ? [{ label: 'bench', options: { ordered: true } }] : [],
    });
    const channel = new Promise((res) => r.addEventListener('datachannel', (ev) => {
      const { channel: ch, peer } = /** @type {any} */ (ev).detail ?? ev;
      if (ch.label !== 'bench') return;
      ch.binaryType = 'arraybuffer';
      const opened = () => res({ ch, peer, t: performance.now() - r.t0 });
      if (ch.readyState === 'open') opened();
      else ch.addEventListener('open', opened, { once: true });
    }));
    window.__room = r;
    window.__channel = channel;
    return r.peerId;
  }

  /** Newcomer side: setup time from the SDK's createOffer step to open. */
  async function sbSetup(timeoutMs) {
    const { peer, t } = await Promise.race([window.__channel, timeout(timeoutMs, 'data channel open')]);
    const offer = peer.timeline.find((e) => e.step === 'createOffer');
    if (!offer) throw new Error(`no createOffer step in the timeline: ${peer.timeline.map((e) => e.step)}`);
    return { setupMs: t - offer.t, pair: await peer.getSelectedCandidatePair(), candidates: peer.candidates.local.map((c) => c.candidate ?? c) };
  }

  /** Receiver side: count bytes, then answer "done". */
  async function sbReceive(total, timeoutMs) {
    const { ch } = await Promise.race([window.__channel, timeout(timeoutMs, 'data channel open')]);
    counter(ch, total).then(() => ch.send('done'));
    return true;
  }

  async function sbSend(total, highWater, lowWater, timeoutMs) {
    const { ch, peer } = await Promise.race([window.__channel, timeout(timeoutMs, 'data channel open')]);
    const done = new Promise((res) => ch.addEventListener('message', (e) => { if (e.data === 'done') res(performance.now()); }));
    window.__tpPair = await peer.getSelectedCandidatePair();
    const r = await pump(ch, total, highWater, lowWater, done);
    return { ...r, pair: await peer.getSelectedCandidatePair() };
  }

  function sbLeave() {
    window.__room?.leave();
    window.__room = null;
  }

  window.__bench = { setupRun, throughputRun, sbJoin, sbSetup, sbReceive, sbSend, sbLeave };
}

// ---------------------------------------------------------------------------

/** USER_HZ: /proc/stat and /proc/PID/stat count in 1/100 s on Linux. */
const HZ = 100;

/**
 * CPU time so far, in ticks: the whole machine (busy, not idle/iowait) and
 * the Chromium processes plus this one. Null where /proc is missing.
 */
function cpuSnapshot() {
  try {
    const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal
    const busy = f[0] + f[1] + f[2] + f[5] + f[6] + (f[7] || 0);
    let ours = 0;
    for (const pid of fs.readdirSync('/proc')) {
      if (!/^\d+$/.test(pid)) continue;
      let stat;
      try { stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8'); } catch { continue; }
      const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      if (comm !== 'chromium' && comm !== 'chrome' && Number(pid) !== process.pid) continue;
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ours += Number(rest[11]) + Number(rest[12]); // utime, stime
    }
    return { busy, ours, t: performance.now() };
  } catch {
    return null;
  }
}

/** CPU seconds between two snapshots: machine, ours, everything else. */
function cpuDelta(a, b) {
  if (!a || !b) return null;
  const r1 = (x) => Math.round(x * 10) / 10;
  const busy = (b.busy - a.busy) / HZ;
  const ours = (b.ours - a.ours) / HZ;
  // Processes that exited in between are missing from `ours`; clamp at 0.
  return { wall_s: r1((b.t - a.t) / 1000), busy_s: r1(busy), chromium_s: r1(ours), other_s: r1(Math.max(0, busy - ours)) };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Chromium hides the addresses of mDNS-obfuscated host candidates in
 * getStats() too, so the address family of the selected pair is looked up
 * from the local port in `ss -uan` while the connection is up ("0.0.0.0:P"
 * is IPv4, "[::]:P" / "*:P" IPv6). Returns e.g. "0.0.0.0:49148", or null.
 */
async function socketOf(page) {
  const deadline = Date.now() + opts.timeoutMs;
  while (Date.now() < deadline) {
    const pair = await page.evaluate(() => window.__tpPair ?? null);
    if (pair?.local?.port) {
      try {
        const out = execFileSync('ss', ['-uanH'], { encoding: 'utf8' });
        for (const line of out.split('\n')) {
          const local = line.trim().split(/\s+/)[3];
          if (local && local.endsWith(`:${pair.local.port}`)) return local;
        }
      } catch { /* no ss */ }
      return null;
    }
    await sleep(50);
  }
  return null;
}

/** "IPv4" / "IPv6" for a socket address from ss. */
const family = (addr) => addr == null ? null : (/^(\[|\*)/.test(addr) || addr.split(':').length > 2 ? 'IPv6' : 'IPv4');

const mbps = (bytes, ms) => Math.round((bytes / 1e6) / (ms / 1000) * 100) / 100;

/**
 * Run the in-page variant in one page at `url`: --runs setup runs and, with
 * `throughput`, the throughput run.
 * @param {import('playwright-core').Browser} browser
 * @param {string} url
 * @param {string} name
 * @param {boolean} throughput
 */
async function inPage(browser, url, name, throughput) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') log(`[${name}] ${m.text()}`); });
  try {
    await page.goto(url);
    await page.evaluate(pageLib);
    log(`${name}: warm-up run`);
    const warm = await page.evaluate(([t]) => window.__bench.setupRun(t), [opts.timeoutMs]);
    const runs = [];
    for (let i = 0; i < opts.runs; i++) {
      const r = await page.evaluate(([t]) => window.__bench.setupRun(t), [opts.timeoutMs]);
      runs.push(r);
      log(`${name} setup ${i + 1}/${opts.runs}: ${r.setupMs.toFixed(1)} ms (${pairLabel(r.pair)})`);
    }
    const res = {
      page_url: url,
      setup_ms: summary(runs.map((r) => r.setupMs)),
      answerer_open_ms: summary(runs.map((r) => r.answererOpenMs)),
      warmup_ms: Math.round(warm.setupMs * 1000) / 1000,
      selected_pairs: tally(runs.map((r) => r.pair)),
      answerer_selected_pairs: tally(runs.map((r) => r.answererPair)),
      example_pair: runs[0]?.pair ?? null,
      candidates: runs[0]?.candidates ?? warm.candidates,
    };
    if (!throughput) return res;
    log(`${name}: throughput, ${opts.bytes} bytes in 64 KiB messages`);
    const cpuBefore = cpuSnapshot();
    const tpP = page.evaluate(([b, h, l, t]) => window.__bench.throughputRun(b, h, l, t),
      [opts.bytes, opts.highWater, opts.lowWater, opts.timeoutMs]);
    const socket = await socketOf(page);
    const tp = await tpP;
    log(`${name} throughput: ${mbps(opts.bytes, tp.ms)} MB/s (${(tp.ms / 1000).toFixed(2)} s, ${tp.stalls} waits for bufferedamountlow)`);
    return {
      ...res,
      throughput_mb_s: mbps(opts.bytes, tp.ms),
      throughput_ms: Math.round(tp.ms),
      send_loop_ms: Math.round(tp.sendLoopMs),
      throughput_pair: tp.pair,
      throughput_socket: socket,
      throughput_family: family(socket),
      throughput_cpu: cpuDelta(cpuBefore, cpuSnapshot()),
    };
  } finally {
    await context.close();
  }
}

/** Run the two-page variant through `switchboard serve`. */
async function viaServe(browser, server) {
  const pages = [];
  try {
    for (const name of ['answerer', 'offerer']) {
      const context = await browser.newContext();
      const page = await context.newPage();
      page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') log(`[${name}] ${m.text()}`); });
      await page.goto(`${server.origin}/healthz`);
      await page.evaluate(pageLib);
      pages.push(page);
    }
    const [answerer, offerer] = pages;
    const tag = `${Date.now().toString(36)}-${process.pid}`;
    const join = async (room) => {
      await answerer.evaluate(([r]) => window.__bench.sbJoin(r, false), [room]);
      await offerer.evaluate(([r]) => window.__bench.sbJoin(r, true), [room]);
    };
    const leave = async () => {
      await offerer.evaluate(() => window.__bench.sbLeave());
      await answerer.evaluate(() => window.__bench.sbLeave());
    };
    const runs = [];
    let warm = null;
    for (let i = -1; i < opts.runs; i++) {
      await join(`bench-${tag}-${i + 1}`);
      const r = await offerer.evaluate(([t]) => window.__bench.sbSetup(t), [opts.timeoutMs]);
      await leave();
      if (i < 0) { warm = r; log('serve: warm-up run'); continue; }
      runs.push(r);
      log(`serve setup ${i + 1}/${opts.runs}: ${r.setupMs.toFixed(1)} ms (${pairLabel(r.pair)})`);
    }
    await join(`bench-${tag}-throughput`);
    const cpuBefore = cpuSnapshot();
    await answerer.evaluate(([b, t]) => window.__bench.sbReceive(b, t), [opts.bytes, opts.timeoutMs]);
    const tpP = offerer.evaluate(([b, h, l, t]) => window.__bench.sbSend(b, h, l, t),
      [opts.bytes, opts.highWater, opts.lowWater, opts.timeoutMs]);
    const socket = await socketOf(offerer);
    const tp = await tpP;
    await leave();
    log(`serve throughput: ${mbps(opts.bytes, tp.ms)} MB/s (${(tp.ms / 1000).toFixed(2)} s, ${tp.stalls} waits for bufferedamountlow)`);
    return {
      setup_ms: summary(runs.map((r) => r.setupMs)),
      warmup_ms: Math.round(warm.setupMs * 1000) / 1000,
      throughput_mb_s: mbps(opts.bytes, tp.ms),
      throughput_ms: Math.round(tp.ms),
      selected_pairs: tally(runs.map((r) => r.pair)),
      example_pair: runs[0]?.pair ?? null,
      throughput_pair: tp.pair,
      throughput_socket: socket,
      throughput_family: family(socket),
      throughput_cpu: cpuDelta(cpuBefore, cpuSnapshot()),
      candidates: runs[0]?.candidates ?? [],
    };
  } finally {
    for (const p of pages) await p.context().close().catch(() => {});
  }
}

const server = opts.serve ? await startServer([], { turn: false }) : null;
let browser;
let result;
try {
  browser = await launchBrowser();
  const version = browser.version();
  log(`Chromium ${version} (${CHROMIUM}), ${os.cpus().length} CPUs, ${opts.runs} runs, ${opts.bytes} bytes`);
  const local = await inPage(browser, 'about:blank', 'in-page', true);
  // Same, on an http://127.0.0.1 page: a secure origin where the fake media
  // UI flag grants camera permission, so no mDNS, raw IPs (see the top).
  const localhost = server ? await inPage(browser, `${server.origin}/healthz`, 'in-page@127.0.0.1', false) : null;
  const serve = server ? await viaServe(browser, server) : null;
  result = {
    setup_ms: local.setup_ms,
    throughput_mb_s: local.throughput_mb_s,
    bytes: opts.bytes,
    chromium_version: version,
    message_bytes: MSG,
    high_water: opts.highWater,
    low_water: opts.lowWater,
    ...Object.fromEntries(Object.entries(local).filter(([k]) => !['setup_ms', 'throughput_mb_s'].includes(k))),
    in_page_localhost_origin: localhost,
    serve,
    host: { cpus: os.cpus().length, cpu_model: os.cpus()[0]?.model, node: process.version, chromium_args: CHROMIUM_ARGS },
    date: new Date().toISOString(),
  };
} finally {
  await browser?.close();
  await server?.stop();
}

if (opts.out) {
  fs.mkdirSync(path.dirname(path.resolve(opts.out)), { recursive: true });
  fs.writeFileSync(opts.out, `${JSON.stringify(result, null, 2)}\n`);
}

if (opts.json) {
  process.stdout.write(`${JSON.stringify(result)}\n`);
} else {
  const line = (name, r) => {
    process.stdout.write(`${name}: setup median ${r.setup_ms.median} ms, p95 ${r.setup_ms.p95} ms ` +
      `(min ${r.setup_ms.min}, max ${r.setup_ms.max}, warm-up ${r.warmup_ms}); ` +
      `throughput ${r.throughput_mb_s} MB/s; selected pairs ${JSON.stringify(r.selected_pairs)}\n`);
  };
  process.stdout.write(`Chromium ${result.chromium_version}, ${result.bytes} bytes in 64 KiB messages, ${opts.runs} setup runs\n`);
  line('in-page (two RTCPeerConnections, direct)', result);
  process.stdout.write(`  offerer's host candidates: ${result.candidates.pc1?.join(' | ')}\n`);
  const cpu = (c) => c ? `; CPU during it: ${c.chromium_s} s Chromium, ${c.other_s} s other, in ${c.wall_s} s` : '';
  process.stdout.write(`  throughput pair: ${pairLabel(result.throughput_pair)} over ${result.throughput_family} (${result.throughput_socket})${cpu(result.throughput_cpu)}\n`);
  const lh = result.in_page_localhost_origin;
  if (lh) {
    process.stdout.write(`in-page on ${lh.page_url} (raw IPs, no mDNS): setup median ${lh.setup_ms.median} ms, p95 ${lh.setup_ms.p95} ms; ` +
      `selected pairs ${JSON.stringify(lh.selected_pairs)}\n`);
  }
  if (result.serve) {
    line('two pages via switchboard serve (SDK; raw IPs, no mDNS)', result.serve);
    process.stdout.write(`  throughput pair: ${pairLabel(result.serve.throughput_pair)} over ${result.serve.throughput_family} (${result.serve.throughput_socket})${cpu(result.serve.throughput_cpu)}\n`);
  }
}
