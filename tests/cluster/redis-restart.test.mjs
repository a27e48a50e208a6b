// Redis restarts empty in the middle of a call between Chromium (/call) and
// `switchboard echo` on different nodes. The sessions are gone with it: a
// raw client's resume fails with `resume-failed` and its join with the old
// token gets its id back; the page and echo, whose sockets the server closes
// (4002 session lost) or the balancer cuts, rejoin under their old ids, the
// call is ICE-restarted, and it goes on. A newcomer afterwards finds exactly
// the two peers: no ghost, no duplicate. And without any cut: a client
// whose socket stays up through the restart is not left talking into the void.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startCluster, launchBrowser, newPage, screenshot, waitFor, roomName, runCli, withLogs, until,
} from './harness.mjs';
import {
  landApart, cliArgs, recordRoomEvents, roomEvents, waitRoomEvent, waitVideoPlaying, pagePeerState,
  inboundVideoBytes, iceUfrags,
} from './browser.mjs';
import { RawClient } from './rawclient.mjs';

let cluster;
let browser;

before(async () => {
  cluster = await startCluster({ count: 2 });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await cluster?.stop();
});

/** Failed resumes over all nodes (`switchboard_resumes_total{outcome="failed"}`). */
const resumesFailed = async () => {
  let sum = 0;
  for (const n of cluster.nodes) sum += await n.metric('switchboard_resumes_total{outcome="failed"}');
  return sum;
};

test('Redis restarts empty mid-call: resume-failed, a clean rejoin with the same ids, and the call recovers', { timeout: 60_000 }, async () => {
  const room = roomName('cl-redis');
  const page = await newPage(browser, 'cluster-redis-restart');
  /** @type {any} */
  let echo = null;
  try {
    await landApart(cluster,
      async () => {
        await page.goto(`${cluster.lb.origin}/call?room=${room}&name=browser`);
        await waitFor(page, () => document.body.dataset.joined === 'true');
      },
      async () => {
        echo = runCli('echo', ['echo', ...cliArgs(cluster, room, 'native-echo')]);
        await echo.waitEvent((e) => e.event === 'joined', 'joined');
      });
    await echo.waitEvent((e) => e.event === 'connected', 'connected');
    await waitVideoPlaying(page, 1);
    await recordRoomEvents(page);
    const pageId = await page.evaluate(() => /** @type {any} */ (window).switchboardRoom.peerId);
    const echoId = (await echo.waitEvent((e) => e.event === 'joined', 'joined')).peer;
    const failedBefore = await resumesFailed();
    // A raw client in a room of its own, to see the protocol exchange itself.
    const raw = new RawClient('raw');
    const rawRoom = `${room}-raw`;
    const rawWelcome = await raw.join(cluster.nodes[0].wsUrl, rawRoom, 'raw');
    const ufragsBefore = await iceUfrags(page);
    assert.ok(ufragsBefore.local && ufragsBefore.remote, `ICE ufrags before: ${JSON.stringify(ufragsBefore)}`);

    // Redis loses everything; the nodes reconnect to the new, empty one.
    assert.ok(await cluster.redis.dbsize() > 0, 'the room was in Redis');
    await cluster.redis.restart();
    assert.equal(await cluster.redis.dbsize(), 0, 'Redis came back empty');
    await until(async () => {
      const s = await Promise.all(cluster.nodes.map((n) => n.healthStatus()));
      return s.every((x) => x === 200);
    }, 'both nodes healthy again', 15_000);

    // The raw client's socket drops (or the server already closed it with
    // 4002); its resume, on the other node, is refused; it joins again with
    // its old token and gets its id back.
    raw.cut();
    try {
      const r = await raw.resume(cluster.nodes[1].wsUrl);
      assert.equal(r.type, 'error', `no session to resume after Redis lost it: ${JSON.stringify(r)}`);
      assert.equal(r.code, 'resume-failed');
      const from = raw.frames.length;
      raw.send({ type: 'join', room: rawRoom, peer: 'raw', session: rawWelcome.session });
      const w = await raw.next((m) => m.type === 'welcome' || m.type === 'error', 'welcome after the refused resume', 10_000, from);
      assert.equal(w.type, 'welcome', JSON.stringify(w));
      assert.equal(w.peer, 'raw', 'the rejoin got the old id back');
    } finally {
      await raw.close();
    }
    assert.ok(await resumesFailed() >= failedBefore + 1, 'the refused resume was counted');

    // The page's and echo's signaling connections drop: the balancer cuts
    // them, if the server has not already closed them (4002).
    await cluster.lb.cutAll();
    await waitRoomEvent(page, 'reconnecting');
    await waitRoomEvent(page, 'rejoined');
    await until(async () => (await cluster.connections()).reduce((a, b) => a + b, 0) === 2, 'both clients connected again', 20_000);
    // echo's side (docs/cli.md): reconnecting, then rejoined under its old id.
    const rejoined = await echo.waitEvent((e) => e.event === 'rejoined', 'echo\'s rejoined event', 10_000);
    assert.equal(rejoined.peer, echoId, 'echo rejoined under its old id');
    // A later cut may resume the new session; the old one could not be.
    assert.ok(!echo.events.some((e) => e.event === 'resumed' && e._at < rejoined._at), 'echo did not resume: Redis lost its session');

    const events = await roomEvents(page);
    const firstRejoin = events.findIndex((e) => e.type === 'rejoined');
    // Either path is right: a resume refused, or the server's 4002 that
    // says a resume would be.
    const before = events.slice(0, firstRejoin);
    assert.ok(before.some((e) => e.type === 'resume-failed') || before.some((e) => e.type === 'reconnecting' && e.code === 4002),
      `resume-failed or 4002 before the rejoin: ${JSON.stringify(events)}`);
    assert.ok(!events.slice(0, firstRejoin).some((e) => e.type === 'resumed'), `nothing to resume after Redis lost it: ${JSON.stringify(events)}`);
    assert.equal(await page.evaluate(() => /** @type {any} */ (window).switchboardRoom.peerId), pageId, 'the page rejoined under its old id');

    // The call recovers: an ICE restart (new ufrags on both sides, whoever
    // started it) went through the rejoined signaling, ICE connects again,
    // and video keeps coming.
    await until(async () => {
      const u = await iceUfrags(page);
      return u.signaling === 'stable' && u.local !== ufragsBefore.local && u.remote !== ufragsBefore.remote;
    }, 'an ICE restart after the rejoin', 20_000);
    await waitFor(page, () => [.../** @type {any} */ (window).switchboardRoom.peers.values()][0]?.pc.connectionState === 'connected', undefined, 20_000);
    const bytes = await inboundVideoBytes(page);
    await waitVideoPlaying(page, 1);
    await until(async () => (await inboundVideoBytes(page)) > bytes + 10_000, 'more video after the rejoin', 10_000);
    const state = await pagePeerState(page);
    assert.equal(state?.id, echoId, 'the page still talks to the same echo peer');
    assert.equal(echo.exited, null, 'echo is still running');

    // A clean room: a newcomer (either node, through the balancer) sees
    // exactly the two peers, and Redis holds the room again.
    const probe = new RawClient('probe');
    try {
      const w = await probe.join(cluster.lb.wsUrl, room, 'probe');
      assert.deepEqual(w.peers.map((p) => p.peer).sort(), [pageId, echoId].sort(), 'no ghost, no duplicate');
    } finally {
      await probe.close();
    }
    assert.ok(await cluster.redis.dbsize() > 0, 'the rejoined room is in Redis again');
    await screenshot(page, 'cluster-redis-restart');
    assert.deepEqual(page.errors, []);
  } catch (err) {
    throw withLogs(err, cluster, echo);
  } finally {
    await echo?.kill();
    await page.context().close();
  }
});

test('Redis restarts empty under attached clients: a signal is delivered, refused or its connection closed, never silently lost', { timeout: 30_000 }, async () => {
  const [n1, n2] = cluster.nodes;
  const room = roomName('cl-redis-attached');
  const alice = new RawClient('alice');
  const bob = new RawClient('bob');
  try {
    await alice.join(n1.wsUrl, room, 'alice');
    await bob.join(n2.wsUrl, room, 'bob');
    await alice.next((m) => m.type === 'peer-joined', 'peer-joined bob');
    alice.signal('bob', { n: 'before' });
    await bob.next((m) => m.type === 'signal' && m.data.n === 'before', 'a signal before the restart');

    await cluster.redis.restart();
    await until(async () => (await Promise.all(cluster.nodes.map((n) => n.healthStatus()))).every((x) => x === 200), 'both nodes healthy again', 15_000);
    const fa = alice.frames.length;
    // One numbered signal and one v1 signal (no seq) from alice to bob.
    const seq = alice.signal('bob', { n: 'numbered' });
    if (alice.attached) alice.trySend({ type: 'signal', to: 'bob', data: { n: 'v1' } });

    // Within 10 s each must have an outcome the sender can see: bob got it,
    // alice got an error for it, or alice's connection was closed (so she
    // resumes, is refused, and rejoins).
    const outcome = async () => {
      const got = bob.signals.map((m) => m.data.n);
      const errors = alice.frames.slice(fa).filter((f) => f.msg.type === 'error');
      const closed = !alice.ws;
      return {
        numbered: got.includes('numbered') || closed || errors.length > 0,
        v1: got.includes('v1') || closed || errors.length > 0,
        acked: alice.serverAck >= seq,
        got, errors: errors.map((f) => f.msg), closed,
      };
    };
    let last;
    try {
      await until(async () => { last = await outcome(); return last.numbered && last.v1; }, 'an outcome for both signals', 10_000);
    } catch (err) {
      throw new Error(`${err.message}: ${JSON.stringify(last)} (the signals vanished: not relayed, not refused, connection still open)`);
    }
    // A numbered signal is acked only if it really went through.
    if (last.acked) assert.ok(last.got.includes('numbered'), `acked but not delivered: ${JSON.stringify(last)}`);
  } catch (err) {
    throw withLogs(err, cluster);
  } finally {
    await alice.close();
    await bob.close();
  }
});
