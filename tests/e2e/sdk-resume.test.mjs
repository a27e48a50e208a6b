// SignalingChannel's sessions against the real server: seq, ack, replay and
// re-send across a socket cut mid-stream (through the TCP proxy of
// proxy.mjs), giving up after reconnect.maxAttempts, and a rejoin once the
// resume window has passed.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, newPage, waitFor, roomName } from './helpers.mjs';
import { startProxy } from './proxy.mjs';

let browser;
/**
 * A server that lets one connection send a few thousand messages quickly,
 * and buffers 600 unacked messages per session: more than a 500-message
 * stream, so a resume works however long the outage.
 */
let server;
const RESUME_BUFFER = 600;

before(async () => {
  server = await startServer(['--max-message-rate', '5000', '--message-burst', '5000',
    '--resume-buffer', String(RESUME_BUFFER)], { turn: false });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * In `page`: channel `a` (through `aUrl`) and `b` (direct) joined to `room`,
 * each recording the `i` of every signal from the other, and a's events.
 */
async function pair(page, aUrl, bUrl, room, aOptions = {}) {
  await page.goto(`${server.origin}/`);
  await page.evaluate(async ({ aUrl, bUrl, room, aOptions }) => {
    const { SignalingChannel } = await import('/sdk/switchboard.js');
    const a = new SignalingChannel(aUrl, aOptions);
    const b = new SignalingChannel(bUrl);
    await a.join(room, { peer: 'a' });
    await b.join(room, { peer: 'b' });
    const t = { a, b, gotA: [], gotB: [], aEvents: [], bEvents: [] };
    a.to('b').addEventListener('message', (e) => t.gotA.push(e.data.i));
    b.to('a').addEventListener('message', (e) => t.gotB.push(e.data.i));
    for (const type of ['reconnecting', 'resumed', 'resume-failed', 'rejoined', 'error', 'close']) {
      a.addEventListener(type, (e) => t.aEvents.push({
        type, attempt: e.attempt, code: e.code, reason: e.reason, fresh: e.fresh, peer: e.peer, resent: e.resent, byClient: e.byClient,
      }));
    }
    for (const type of ['peer-left', 'peer-joined']) b.addEventListener(type, (e) => t.bEvents.push(`${type} ${e.peer}`));
    window.t = t;
    /** Send `n` signals from `from` to `to` numbered from 1, `perTick` every 10 ms. */
    window.stream = (from, to, n, perTick) => new Promise((resolve) => {
      let i = 0;
      const tick = setInterval(() => {
        for (let k = 0; k < perTick && i < n; k++) {
          i += 1;
          t[from].to(to).send({ i });
        }
        if (i >= n) { clearInterval(tick); resolve(); }
      }, 10);
    });
  }, { aUrl, bUrl, room, aOptions });
}

const range = (n) => Array.from({ length: n }, (_, k) => k + 1);

/** waitFor, but a timeout reports what each side got and a's events. */
async function until(page, fn, timeout) {
  try {
    await waitFor(page, fn, undefined, timeout);
  } catch (err) {
    const state = await page.evaluate(() => JSON.stringify({
      gotA: window.t.gotA.length, gotB: window.t.gotB.length, aState: window.t.a.state,
      aUnacked: window.t.a.unackedSignals, aLastSeq: window.t.a.lastSeq, aEvents: window.t.aEvents, bEvents: window.t.bEvents,
    })).catch(() => '(page gone)');
    throw new Error(`${err.message}\nstate: ${state}`);
  }
}

test('a socket cut mid-stream loses no signal and duplicates none, both ways', { timeout: 90_000 }, async () => {
  const proxy = await startProxy(server.port);
  const page = await newPage(browser, 'resume-stream');
  try {
    await pair(page, proxy.wsUrl, server.wsUrl, roomName('stream'));
    // 500 each way over ~2.5 s; the cut comes after about a fifth.
    await page.evaluate(() => { window.done = Promise.all([window.stream('a', 'b', 500, 2), window.stream('b', 'a', 500, 2)]); });
    await waitFor(page, () => window.t.gotA.length >= 100, undefined, 10_000);
    assert.equal(proxy.cut({ block: true }), 1);
    await sleep(600);
    const mid = await page.evaluate(() => ({ state: window.t.a.state, gotA: window.t.gotA.length, queued: window.t.a.unackedSignals }));
    assert.equal(mid.state, 'reconnecting');
    assert.ok(mid.gotA < 500, `cut mid-stream (a had ${mid.gotA})`);
    assert.ok(mid.queued > 0, 'signals sent while down wait in the outbox');
    proxy.unblock();
    await page.evaluate(() => window.done);
    await until(page, () => window.t.gotA.length >= 500 && window.t.gotB.length >= 500, 30_000);
    await sleep(300); // a late duplicate would show up here
    const r = await page.evaluate(() => ({
      gotA: window.t.gotA, gotB: window.t.gotB, aEvents: window.t.aEvents, bEvents: window.t.bEvents,
      state: window.t.a.state, lastSeq: window.t.a.lastSeq,
    }));
    assert.deepEqual(r.gotA, range(500), 'b -> a: every signal once, in order');
    assert.deepEqual(r.gotB, range(500), 'a -> b: every signal once, in order');
    assert.deepEqual(r.aEvents.map((e) => e.type), ['reconnecting', ...r.aEvents.slice(1, -1).map(() => 'reconnecting'), 'resumed'],
      `events: ${JSON.stringify(r.aEvents)}`);
    assert.equal(r.state, 'joined');
    assert.ok(r.lastSeq >= 500, `server seqs counted (${r.lastSeq})`);
    assert.deepEqual(r.bEvents, [], 'b never saw a leave');
    // The server acks client seqs at least once a second.
    await waitFor(page, () => window.t.a.unackedSignals === 0, undefined, 5_000);
    assert.deepEqual(page.errors, []);
  } finally {
    await page.context().close();
    await proxy.close();
  }
});

/** The server's count of unacked messages it keeps for sessions. */
async function buffered(origin) {
  const text = await (await fetch(`${origin}/metrics`)).text();
  const m = /^switchboard_session_buffered_messages (\d+)/m.exec(text);
  assert.ok(m, 'metrics report switchboard_session_buffered_messages');
  return Number(m[1]);
}

test('the client acks what it got, so the server can forget it; a resume after 1000 messages works', { timeout: 60_000 }, async () => {
  // Its own server: the buffered-messages gauge then counts only this pair.
  const own = await startServer(['--max-message-rate', '5000', '--message-burst', '5000'], { turn: false });
  const proxy = await startProxy(own.port);
  const page = await newPage(browser, 'resume-acks');
  try {
    await pair(page, proxy.wsUrl, own.wsUrl, roomName('acks'));
    await page.evaluate(() => window.stream('b', 'a', 1000, 20));
    await until(page, () => window.t.gotA.length >= 1000, 20_000);
    // Acks go out every 64 messages and once a second for the tail.
    const deadline = Date.now() + 5000;
    let n = await buffered(own.origin);
    while (n > 0 && Date.now() < deadline) {
      await sleep(200);
      n = await buffered(own.origin);
    }
    assert.equal(n, 0, 'every message a received was acked, none is kept');
    proxy.cut({ block: true });
    await sleep(300);
    proxy.unblock();
    await until(page, () => window.t.aEvents.some((e) => e.type === 'resumed' || e.type === 'rejoined'), 20_000);
    const types = await page.evaluate(() => window.t.aEvents.map((e) => e.type));
    assert.ok(types.includes('resumed') && !types.includes('resume-failed'), `events ${types}`);
    // And the session carries on: one more each way.
    await page.evaluate(() => { window.t.b.to('a').send({ i: 1001 }); window.t.a.to('b').send({ i: 1 }); });
    await until(page, () => window.t.gotA.at(-1) === 1001 && window.t.gotB.at(-1) === 1, 10_000);
    assert.deepEqual(await page.evaluate(() => window.t.gotA), range(1001));
    assert.deepEqual(page.errors, []);
  } finally {
    await page.context().close();
    await proxy.close();
    await own.stop();
  }
});

test('a silent network (no reset, no close) is caught by the ping timeout and resumed', { timeout: 60_000 }, async () => {
  const proxy = await startProxy(server.port);
  const page = await newPage(browser, 'resume-silent');
  try {
    await pair(page, proxy.wsUrl, server.wsUrl, roomName('silent'), { pingInterval: 500, pongTimeout: 700 });
    assert.equal(proxy.freeze(), 1);
    // While a's old socket is silent, b's signals wait for it on the server.
    await page.evaluate(() => { for (let i = 1; i <= 5; i++) window.t.b.to('a').send({ i }); });
    await until(page, () => window.t.aEvents.some((e) => e.type === 'resumed'), 10_000);
    const r = await page.evaluate(() => ({ ev: window.t.aEvents, gotA: window.t.gotA, bEvents: window.t.bEvents }));
    assert.equal(r.ev[0].type, 'reconnecting');
    assert.equal(r.ev[0].code, 1006);
    await until(page, () => window.t.gotA.length >= 5, 5_000);
    assert.deepEqual(await page.evaluate(() => window.t.gotA), range(5));
    assert.deepEqual(r.bEvents, []);
    assert.equal(proxy.accepted, 2, 'one new connection');
    assert.deepEqual(page.errors, []);
  } finally {
    await page.context().close();
    await proxy.close();
  }
});

test('gives up after reconnect.maxAttempts failures with a reconnect-failed error', { timeout: 60_000 }, async () => {
  const proxy = await startProxy(server.port);
  const page = await newPage(browser, 'resume-give-up');
  try {
    await pair(page, proxy.wsUrl, server.wsUrl, roomName('giveup'),
      { reconnect: { maxAttempts: 3, initialDelay: 100, maxDelay: 200 } });
    proxy.cut({ block: true });
    await waitFor(page, () => window.t.aEvents.some((e) => e.type === 'close'), undefined, 10_000);
    const r = await page.evaluate(() => ({ ev: window.t.aEvents, state: window.t.a.state }));
    assert.deepEqual(r.ev.map((e) => e.type), ['reconnecting', 'reconnecting', 'reconnecting', 'error', 'close']);
    assert.deepEqual(r.ev.slice(0, 3).map((e) => e.attempt), [1, 2, 3]);
    assert.equal(r.ev[3].code, 'reconnect-failed');
    assert.equal(r.ev[4].byClient, false);
    assert.equal(r.state, 'closed');
    assert.equal(proxy.refused, 3, 'exactly maxAttempts connection attempts');
    // Nothing more happens once it gave up.
    proxy.unblock();
    await sleep(800);
    assert.equal(proxy.accepted, 1);
    assert.deepEqual(page.errors, []);
  } finally {
    await page.context().close();
    await proxy.close();
  }
});

test('the pages\' badge follows a Room: reconnecting…, then offline once the SDK gives up', { timeout: 60_000 }, async () => {
  const proxy = await startProxy(server.port);
  const page = await newPage(browser, 'resume-badge');
  try {
    await page.goto(`${server.origin}/`);
    await page.evaluate(async ({ url, room }) => {
      const { joinRoom } = await import('/sdk/switchboard.js');
      const { trackSignaling } = await import('/assets/ui.js');
      const badge = Object.assign(document.createElement('span'), { id: 'signaling-badge', className: 'badge hidden' });
      document.body.append(badge);
      window.room = await joinRoom(url, room, { reconnect: { maxAttempts: 2, initialDelay: 300, maxDelay: 300 } });
      window.roomErrors = [];
      window.room.addEventListener('error', (e) => window.roomErrors.push({ code: e.code, recoverable: e.recoverable }));
      trackSignaling(window.room, badge);
    }, { url: proxy.wsUrl, room: roomName('badge') });
    const badge = page.locator('#signaling-badge');
    assert.equal(await badge.isVisible(), false);
    assert.equal(await page.evaluate(() => document.body.dataset.signaling), 'connected');
    proxy.cut({ block: true });
    await page.locator('#signaling-badge[data-state="reconnecting"]').waitFor({ timeout: 5_000 });
    assert.equal(await badge.textContent(), 'reconnecting…');
    await page.locator('#signaling-badge[data-state="lost"]').waitFor({ timeout: 10_000 });
    assert.equal(await badge.textContent(), 'offline');
    assert.equal(await page.evaluate(() => document.body.dataset.signaling), 'lost');
    assert.deepEqual(await page.evaluate(() => window.roomErrors), [{ code: 'reconnect-failed', recoverable: false }]);
    assert.deepEqual(page.errors, []);
  } finally {
    await page.context().close();
    await proxy.close();
  }
});

test('once the resume window has passed it joins again with the same id, as a new session', { timeout: 60_000 }, async () => {
  const short = await startServer(['--resume-window', '1'], { turn: false });
  const proxy = await startProxy(short.port);
  const page = await newPage(browser, 'resume-window');
  try {
    await pair(page, proxy.wsUrl, short.wsUrl, roomName('window'));
    proxy.cut({ block: true });
    // b sees a leave once the window ends without a resume.
    await waitFor(page, () => window.t.bEvents.includes('peer-left a'), undefined, 10_000);
    proxy.unblock();
    await waitFor(page, () => window.t.aEvents.some((e) => e.type === 'rejoined'), undefined, 20_000);
    const r = await page.evaluate(() => ({ ev: window.t.aEvents, bEvents: window.t.bEvents, id: window.t.a.peerId, seq: window.t.a.lastSeq }));
    const types = r.ev.map((e) => e.type);
    assert.ok(!types.includes('resume-failed') && !types.includes('resumed'), `no resume was tried: ${types}`);
    const rejoined = r.ev.find((e) => e.type === 'rejoined');
    assert.equal(rejoined.fresh, true, 'the others dropped us: a new session');
    assert.equal(r.id, 'a', 'same peer id');
    assert.deepEqual(r.bEvents, ['peer-left a', 'peer-joined a']);
    // The new session relays both ways (b's view of a is new since a left).
    await page.evaluate(() => {
      window.t.b.to('a').addEventListener('message', (e) => window.t.gotB.push(e.data.i));
      window.t.b.to('a').send({ i: 7 });
      window.t.a.to('b').send({ i: 8 });
    });
    await until(page, () => window.t.gotA.includes(7) && window.t.gotB.includes(8), 10_000);
    assert.deepEqual(page.errors, []);
  } finally {
    await page.context().close();
    await proxy.close();
    await short.stop();
  }
});
