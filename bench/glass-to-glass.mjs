#!/usr/bin/env node
// Glass-to-glass delay from `switchboard play` to Chromium's /call page,
// on loopback through `switchboard serve`.
//
//   node bench/glass-to-glass.mjs --ivf FILE [--ogg FILE] [--warmup SECS] [--json FILE]
//
// The IVF file (bench/glass-to-glass.sh makes it) carries each frame's
// index as a barcode: 16 columns 40 px wide (bit i of the index in column
// i, white = 1) in the top third of a 640x360 picture, the same bits
// inverted in the middle third, ffmpeg's testsrc in the bottom third.
//
// - `play --frame-log` writes, per frame, the wall-clock time it handed the
//   frame to the connection (before packetizing and SRTP).
// - In the page, `requestVideoFrameCallback` on the remote <video> gives,
//   per presented frame, `expectedDisplayTime` (when the compositor expects
//   it on screen), `receiveTime` (when its last packet arrived) and its RTP
//   timestamp, and the callback draws the video to a canvas and reads the
//   two barcodes back (they must be each other's inverse, else the frame
//   counts as unreadable).
// - Which send a presented frame was: its RTP timestamp is play's logged
//   media time plus one random offset; the offset is the most common
//   difference among frames whose barcode names a send (the barcode is
//   ffmpeg's frame number N, and play logs each frame's file timestamp,
//   N / 30 s; the encoder may drop frames, so N is not the index in the
//   file). The barcode then checks every match: `barcode_agrees` counts the
//   frames whose drawn picture is the frame the metadata describes,
//   `barcode_ahead` those where the canvas already held a newer frame.
// - Times: `performance.timeOrigin` plus the offset to `Date.now()`
//   (sampled in every callback; Date.now() is whole ms rounded down, so the
//   largest sample is the closest) puts them on the same wall clock as
//   play's (one machine, one clock).
// - delay(display) = expectedDisplayTime - play's send time of that frame;
//   delay(receive) = receiveTime - send time. Frames of the first --warmup
//   seconds (default 3) after the first picture are left out of the figures
//   (the jitter buffer settles) but reported as `startup`.
// - getStats() of the inbound video, over the same window: the jitter
//   buffer's mean delay (jitterBufferDelay / jitterBufferEmittedCount),
//   its target, mean decode time, mean processing delay (first packet in to
//   decoded, totalProcessingDelay / framesDecoded), mean assembly time,
//   and the loss, NACK, PLI and freeze counters.
//
// SWITCHBOARD_BIN picks the binary (helpers.mjs: target/debug by default).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  startServer, launchBrowser, newPage, waitFor, roomName, runCli,
} from '../tests/e2e/helpers.mjs';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const ivf = opt('ivf');
if (!ivf) throw new Error('--ivf FILE is required');
const warmupMs = Number(opt('warmup', '3')) * 1000;
const jsonOut = opt('json');
/** The barcoded file's frame rate (glass-to-glass.sh makes it). */
const FPS = 30;

/** Nearest-rank percentile of sorted numbers. */
function pct(sorted, p) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}
function summary(values) {
  const s = [...values].sort((a, b) => a - b);
  const r = (x) => (x == null ? null : Math.round(x * 10) / 10);
  return {
    n: s.length, min: r(s[0]), p50: r(pct(s, 50)), p95: r(pct(s, 95)), max: r(s[s.length - 1]),
    mean: r(s.reduce((a, b) => a + b, 0) / (s.length || 1)),
  };
}

// Keeps every RTCPeerConnection the page makes, for getStats().
const initScript = () => {
  const Orig = window.RTCPeerConnection;
  /** @type {RTCPeerConnection[]} */
  const pcs = [];
  // @ts-ignore
  window.__pcs = pcs;
  // @ts-ignore
  window.RTCPeerConnection = function (...a) { const pc = new Orig(...a); pcs.push(pc); return pc; };
  window.RTCPeerConnection.prototype = Orig.prototype;
  Object.setPrototypeOf(window.RTCPeerConnection, Orig);
};

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'switchboard-g2g-'));
const frameLog = path.join(dir, 'frames.jsonl');
const server = await startServer();
const browser = await launchBrowser();
let play = null;
try {
  const room = roomName('g2g');
  const page = await newPage(browser, 'g2g', { initScript });
  await page.goto(`${server.origin}/call?room=${room}&name=viewer`);
  await waitFor(page, () => document.body.dataset.joined === 'true');
  // The page starts watching before play joins, so the first frame counts.
  await page.evaluate(() => {
    /** @type {any} */
    const w = window;
    w.__g2g = { frames: [], offsets: [], bad: 0, stats: [] };
    const canvas = document.createElement('canvas');
    const g = /** @type {CanvasRenderingContext2D} */ (canvas.getContext('2d', { willReadFrequently: true }));
    /** Reads one 16-bit barcode row at height y of a w-wide picture. */
    const read = (y, width) => {
      const row = g.getImageData(0, y, width, 1).data;
      let n = 0;
      for (let i = 0; i < 16; i++) {
        const x = Math.floor(((i * 40 + 20) * width) / 640);
        if (row[x * 4] > 128) n |= 1 << i;
      }
      return n;
    };
    const watch = () => {
      const v = [...document.querySelectorAll('.tile.peer video')].find((e) => /** @type {HTMLVideoElement} */ (e).srcObject);
      if (!v) { setTimeout(watch, 20); return; }
      const video = /** @type {HTMLVideoElement} */ (v);
      const onFrame = (_now, meta) => {
        const { width, height } = meta;
        if (canvas.width !== width || canvas.height !== height) {
          canvas.width = width;
          canvas.height = height;
        }
        g.drawImage(video, 0, 0, width, height);
        const a = read(Math.floor(height / 6), width);
        const b = read(Math.floor(height / 2), width);
        w.__g2g.offsets.push(Date.now() - (performance.timeOrigin + performance.now()));
        if ((a ^ 0xffff) !== b) w.__g2g.bad++;
        w.__g2g.frames.push({
          index: (a ^ 0xffff) === b ? a : null,
          display: performance.timeOrigin + meta.expectedDisplayTime,
          receive: meta.receiveTime != null ? performance.timeOrigin + meta.receiveTime : null,
          rtp: meta.rtpTimestamp ?? null,
        });
        video.requestVideoFrameCallback(onFrame);
      };
      video.requestVideoFrameCallback(onFrame);
    };
    watch();
  });
  // The compositor's frame interval: a frame waits for the next one.
  const rafMs = await page.evaluate(() => new Promise((resolve) => {
    const t = [];
    const step = (now) => {
      t.push(now);
      if (t.length < 61) requestAnimationFrame(step);
      else resolve(t.slice(1).map((x, i) => x - t[i]).sort((a, b) => a - b)[30]);
    };
    requestAnimationFrame(step);
  }));
  play = runCli('play', ['play', '--server', server.origin, '--room', room, '--json', '--loopback',
    '--name', 'native-play', '--frame-log', frameLog, ivf, ...(opt('ogg') ? [opt('ogg')] : [])]);
  await play.waitEvent((e) => e.event === 'connected', 'connected', 30_000);
  await waitFor(page, () => /** @type {any} */ (window).__g2g.frames.length + /** @type {any} */ (window).__g2g.bad > 0, undefined, 30_000);
  const firstPicture = Date.now();
  /** The inbound video's counters. */
  const inbound = () => page.evaluate(async () => {
    for (const pc of /** @type {any} */ (window).__pcs) {
      const rep = await pc.getStats();
      for (const s of rep.values()) if (s.type === 'inbound-rtp' && s.kind === 'video') return s;
    }
    return null;
  });
  await new Promise((r) => setTimeout(r, warmupMs));
  const s0 = await inbound();
  // The last reading before play leaves (its connection closes then).
  let s1 = s0;
  const poll = setInterval(async () => { s1 = (await inbound().catch(() => null)) ?? s1; }, 500);
  // play leaves at the end of the file; the page's last frames follow.
  const exit = await play.waitExit(600_000);
  clearInterval(poll);
  await new Promise((r) => setTimeout(r, 200));
  const page_ = await page.evaluate(() => /** @type {any} */ (window).__g2g);
  const sends = fs.readFileSync(frameLog, 'utf8').trim().split('\n').map((l) => JSON.parse(l))
    .filter((f) => f.kind === 'video');

  const offsets = [...page_.offsets].sort((a, b) => a - b);
  // Date.now() is whole milliseconds, cut down: each sample is the true
  // offset minus [0, 1) ms, so the largest is the closest to it.
  const offset = offsets[offsets.length - 1];
  // The frame numbers (barcodes) of play's sends, and the sends by media
  // time (it only goes up, so it names one send).
  const frameNo = (f) => Math.round((f.file_time * FPS) / 90_000);
  const byMedia = new Map(sends.map((f) => [f.media_time, f]));
  // The RTP timestamp is the media time plus one random offset: the most
  // common difference over the frames whose barcode names a send.
  const votes = new Map();
  const byNo = new Map();
  for (const f of sends) if (!byNo.has(frameNo(f))) byNo.set(frameNo(f), f);
  for (const f of page_.frames) {
    const send = f.index != null && f.rtp != null && byNo.get(f.index);
    if (!send) continue;
    const o = (f.rtp - send.media_time + 2 ** 32) % 2 ** 32;
    votes.set(o, (votes.get(o) ?? 0) + 1);
  }
  const [rtpOffset] = [...votes.entries()].reduce((a, b) => (b[1] > a[1] ? b : a), [0, 0]);
  const steadyFrom = firstPicture + warmupMs;
  const rows = [];
  let unmatched = 0;
  let barcodeAgrees = 0;
  let barcodeAhead = 0;
  for (const f of page_.frames) {
    const display = f.display + offset;
    const receive = f.receive != null ? f.receive + offset : null;
    // The metadata's own frame, by its RTP timestamp.
    const send = f.rtp != null && byMedia.get((f.rtp - rtpOffset + 2 ** 32) % 2 ** 32);
    if (!send) { unmatched++; continue; }
    // What the canvas showed: that frame, or (drawn a moment later) a newer one.
    if (f.index === frameNo(send)) barcodeAgrees++;
    else if (f.index != null && f.index > frameNo(send)) barcodeAhead++;
    const sent = send.unix_us / 1000;
    rows.push({ frame: frameNo(send), steady: display >= steadyFrom, display: display - sent, receive: receive == null ? null : receive - sent });
  }
  const steady = rows.filter((r) => r.steady);
  const startup = rows.filter((r) => !r.steady);
  const d = (k) => (s1 && s0 ? s1[k] - s0[k] : null);
  const per = (num, den, scale = 1000) => (d(num) != null && d(den) ? Math.round((d(num) / d(den)) * scale * 10) / 10 : null);
  const result = {
    when: new Date().toISOString(),
    exit,
    frames_sent: sends.length,
    frames_seen: page_.frames.length,
    unreadable: page_.bad,
    unmatched,
    barcode_agrees: barcodeAgrees,
    barcode_ahead: barcodeAhead,
    clock_offset_ms: Math.round(offset * 1000) / 1000,
    clock_offset_spread_ms: Math.round((pct(offsets, 95) - pct(offsets, 5)) * 1000) / 1000,
    warmup_s: warmupMs / 1000,
    raf_interval_ms: Math.round(rafMs * 10) / 10,
    display_ms: summary(steady.map((r) => r.display)),
    receive_ms: summary(steady.filter((r) => r.receive != null).map((r) => r.receive)),
    receive_to_display_ms: summary(steady.filter((r) => r.receive != null).map((r) => r.display - r.receive)),
    startup_display_ms: summary(startup.map((r) => r.display)),
    stats_window: s0 && s1 ? {
      seconds: Math.round((s1.timestamp - s0.timestamp) / 100) / 10,
      jitter_buffer_ms: per('jitterBufferDelay', 'jitterBufferEmittedCount'),
      jitter_buffer_target_ms: per('jitterBufferTargetDelay', 'jitterBufferEmittedCount'),
      decode_ms: per('totalDecodeTime', 'framesDecoded'),
      processing_ms: per('totalProcessingDelay', 'framesDecoded'),
      assembly_ms: per('totalAssemblyTime', 'framesAssembledFromMultiplePackets'),
      frames_received: d('framesReceived'),
      frames_decoded: d('framesDecoded'),
      frames_dropped: d('framesDropped'),
      packets_lost: d('packetsLost'),
      nacks: d('nackCount'),
      plis: d('pliCount'),
      freezes: d('freezeCount'),
      frame_size: `${s1.frameWidth}x${s1.frameHeight}`,
    } : null,
    chromium: browser.version(),
  };
  console.log(JSON.stringify(result, null, 2));
  if (jsonOut) fs.writeFileSync(jsonOut, JSON.stringify({ ...result, rows }, null, 1));
} finally {
  await play?.kill();
  await browser.close();
  await server.stop();
  fs.rmSync(dir, { recursive: true, force: true });
}
