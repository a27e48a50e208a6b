// Chromium and the native CLI on different nodes of a two-node Redis
// cluster behind haproxy: a call (/call and `switchboard echo`) and file
// transfers (/chat with `switchboard recv` and `send`, SHA-256 checked);
// then kill -9 of the node one side is on, mid-transfer: that side resumes
// through the balancer on the other node, the other side sees no peer-left,
// and the file arrives intact.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  startCluster, launchBrowser, newPage, screenshot, waitFor, roomName, randomFile, runCli,
  sha256File, withLogs, until,
} from './harness.mjs';
import {
  landApart, cliArgs, recordRoomEvents, roomEvents, waitRoomEvent, waitVideoPlaying, pagePeerState,
} from './browser.mjs';

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

/** Resumes a node accepted, from its /metrics (`switchboard_resumes_total{outcome="ok"}`). */
const resumesOk = (node) => node.metric('switchboard_resumes_total{outcome="ok"}');

test('/call in Chromium and `switchboard echo` on different nodes: video goes out and comes back', { timeout: 60_000 }, async () => {
  const room = roomName('cl-call');
  const page = await newPage(browser, 'cluster-call');
  /** @type {any} */
  let echo = null;
  try {
    const [pi, ei] = await landApart(cluster,
      async () => {
        await page.goto(`${cluster.lb.origin}/call?room=${room}&name=browser`);
        await waitFor(page, () => document.body.dataset.joined === 'true');
      },
      async () => {
        echo = runCli('echo', ['echo', ...cliArgs(cluster, room, 'native-echo')]);
        const joined = await echo.waitEvent((e) => e.event === 'joined', 'joined');
        assert.equal(joined.peers.length, 1, 'echo, on the other node, sees the page in the room');
      });
    await cluster.waitConnections([1, 1]);
    await echo.waitEvent((e) => e.event === 'connected', 'connected');
    await waitVideoPlaying(page, 1);
    assert.equal(await page.locator('.tile.peer .name').textContent(), 'native-echo');
    assert.equal((await pagePeerState(page))?.connection, 'connected');
    // Both nodes took part: each holds one of the two sessions.
    assert.deepEqual(await cluster.connections(), [1, 1]);
    assert.notEqual(pi, ei);
    await screenshot(page, 'cluster-call');
    assert.deepEqual(page.errors, []);
  } catch (err) {
    throw withLogs(err, cluster, echo);
  } finally {
    await echo?.kill();
    await page.context().close();
  }
});

/**
 * /chat sends a file to `switchboard recv --count 1`, each on another node.
 * recv joins first, so the page is the newcomer and offers. `during(ctx)`
 * runs once bytes are flowing.
 * @param {{label: string, size: number, during?: (ctx: {page: any, recv: any, pageNode: number, cliNode: number}) => Promise<void>}} o
 */
async function chatToRecv({ label, size, during }) {
  const room = roomName(label);
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'switchboard-cluster-recv-'));
  const file = randomFile(size, `${label}.bin`);
  const page = await newPage(browser, label);
  /** @type {any} */
  let recv = null;
  try {
    const [cliNode, pageNode] = await landApart(cluster,
      async () => {
        recv = runCli('recv', ['recv', ...cliArgs(cluster, room, 'native-recv'), '--out', out, '--count', '1']);
        await recv.waitEvent((e) => e.event === 'joined', 'joined');
      },
      async () => {
        await page.goto(`${cluster.lb.origin}/chat?room=${room}&name=browser`);
        await waitFor(page, () => document.body.dataset.joined === 'true');
      });
    await waitFor(page, () => document.body.dataset.chatReady === 'true', undefined, 30_000);
    await recv.waitEvent((e) => e.event === 'connected', 'connected');
    await recordRoomEvents(page);
    const started = Date.now();
    await page.setInputFiles('#file-input', file.path);
    if (during) {
      await recv.waitEvent((e) => e.event === 'progress' && e.bytes > 0, 'first progress');
      await during({ page, recv, pageNode, cliNode });
    }
    const got = await recv.waitEvent((e) => e.event === 'file-received', 'file-received', 45_000);
    const ms = Date.now() - started;
    assert.equal(got.ok, true);
    assert.equal(got.size, file.size);
    assert.equal(got.sha256, file.sha256);
    assert.equal(sha256File(got.path), file.sha256, 'the file on disk has the sender\'s SHA-256');
    await waitFor(page, () => document.querySelector('.transfer[data-direction="out"]')?.dataset.status === 'ok');
    const { code } = await recv.waitExit(15_000);
    assert.equal(code, 0, `recv exits 0:\n${recv.describe()}`);
    assert.ok(!recv.events.some((e) => e.event === 'peer-left'), 'recv saw no peer-left');
    assert.ok(!recv.events.some((e) => e.event === 'rejoined'), 'recv resumed, it did not have to rejoin');
    // recv leaves once it has the file; before that the page saw no peer-left.
    const early = (await roomEvents(page)).filter((e) => e.type === 'peerleft' && e.at <= got._at);
    assert.deepEqual(early, [], 'the page saw no peer-left during the transfer');
    await screenshot(page, label);
    assert.deepEqual(page.errors, []);
    return { ms, pageNode, cliNode };
  } catch (err) {
    throw withLogs(err, cluster, recv);
  } finally {
    await recv?.kill();
    await page.context().close();
    file.cleanup();
    fs.rmSync(out, { recursive: true, force: true });
  }
}

test('/chat on one node sends a file to `switchboard recv` on the other, SHA-256 checked', { timeout: 60_000 }, async (t) => {
  const r = await chatToRecv({ label: 'cl-chat-recv', size: 4 * 1024 * 1024 });
  t.diagnostic(`4 MiB in ${r.ms} ms (page on n${r.pageNode + 1}, recv on n${r.cliNode + 1})`);
});

test('kill -9 of recv\'s node mid-transfer: recv resumes through the balancer on the other node, the file arrives intact', { timeout: 60_000 }, async (t) => {
  /** @type {number} */
  let victim = -1;
  try {
    const r = await chatToRecv({
      label: 'cl-kill-recv',
      // /chat -> recv runs at about 25 MB/s here; this keeps the transfer
      // going for a few seconds, past the resume (about 1 s).
      size: 96 * 1024 * 1024,
      async during({ recv, pageNode, cliNode }) {
        victim = cliNode;
        const survivor = cluster.nodes[pageNode];
        const okBefore = await resumesOk(survivor);
        await cluster.nodes[cliNode].kill9();
        assert.ok(!recv.events.some((e) => e.event === 'file-received'), 'the node died mid-transfer');
        // recv's signaling comes back on the survivor, as a resume.
        await until(async () => (await survivor.connections()) === 2, 'recv\'s connection on the survivor', 15_000);
        await until(async () => (await resumesOk(survivor)) > okBefore, 'a resume on the survivor', 5_000);
        await recv.waitEvent((e) => e.event === 'resumed', 'recv\'s resumed event', 5_000);
        assert.ok(recv.events.some((e) => e.event === 'reconnecting'), 'recv reported reconnecting');
        t.diagnostic(`resumed on n${pageNode + 1} before the file was complete: ${!recv.events.some((e) => e.event === 'file-received')}`);
      },
    });
    t.diagnostic(`96 MiB in ${r.ms} ms with n${victim + 1} killed`);
  } catch (err) {
    throw withLogs(err, cluster);
  } finally {
    if (victim >= 0) await cluster.nodes[victim].restart();
    await cluster.lb.waitState(cluster.nodes[Math.max(victim, 0)].name, 'UP');
  }
});

test('kill -9 of the page\'s node mid-transfer: the page resumes through the balancer, `switchboard send` finishes with a matching SHA-256', { timeout: 60_000 }, async (t) => {
  const room = roomName('cl-kill-page');
  // `send` -> /chat runs at about 9 MB/s here: several seconds, past the resume.
  const file = randomFile(40 * 1024 * 1024 + 4321, 'to-the-page.bin');
  const page = await newPage(browser, 'cl-kill-page');
  /** @type {any} */
  let send = null;
  let victim = -1;
  try {
    const [pageNode, cliNode] = await landApart(cluster,
      async () => {
        await page.goto(`${cluster.lb.origin}/chat?room=${room}&name=browser`);
        await waitFor(page, () => document.body.dataset.joined === 'true');
        await recordRoomEvents(page);
      },
      async () => {
        send = runCli('send', ['send', ...cliArgs(cluster, room, 'native-send'), file.path]);
        await send.waitEvent((e) => e.event === 'joined', 'joined');
      });
    await send.waitEvent((e) => e.event === 'progress' && e.bytes > 0, 'first progress');
    const survivor = cluster.nodes[cliNode];
    const okBefore = await resumesOk(survivor);
    victim = pageNode;
    await cluster.nodes[pageNode].kill9();
    assert.ok(!send.events.some((e) => e.event === 'file-sent'), 'the node died mid-transfer');

    await waitRoomEvent(page, 'reconnecting');
    await waitRoomEvent(page, 'resumed');
    await until(async () => (await survivor.connections()) === 2, 'the page\'s connection on the survivor', 10_000);
    assert.ok(await resumesOk(survivor) > okBefore, 'the survivor counted the resume');
    t.diagnostic(`resumed before the file was complete: ${!send.events.some((e) => e.event === 'file-sent')}`);

    await waitFor(page, () => ['ok', 'mismatch'].includes(document.querySelector('.transfer[data-direction="in"]')?.dataset.status), undefined, 45_000);
    const card = page.locator('.transfer[data-direction="in"]').first();
    assert.equal(await card.getAttribute('data-status'), 'ok');
    assert.equal(await card.getAttribute('data-sha256'), file.sha256);
    assert.equal(await card.getAttribute('data-size'), String(file.size));
    const sent = await send.waitEvent((e) => e.event === 'file-sent', 'file-sent', 30_000);
    assert.equal(sent.ok, true);
    assert.equal(sent.sha256, file.sha256);
    const { code } = await send.waitExit(15_000);
    assert.equal(code, 0, `send exits 0:\n${send.describe()}`);

    // send leaves once its file is acknowledged; before that the page saw
    // no peer-left, and at no time a rejoin.
    const events = await roomEvents(page);
    assert.ok(!events.some((e) => e.type === 'rejoined' || (e.type === 'peerleft' && e.at <= sent._at)), `a resume, not a rejoin, and no peer-left: ${JSON.stringify(events)}`);
    assert.ok(!send.events.some((e) => e.event === 'peer-left'), 'send saw no peer-left');
    const killedAt = events.find((e) => e.type === 'reconnecting')?.at ?? 0;
    const touched = events.filter((e) => e.type.startsWith('timeline:') && e.at >= killedAt && e.at <= sent._at);
    assert.deepEqual(touched, [], 'the page\'s peer connection was not touched by the resume');
    await screenshot(page, 'cl-kill-page');
    assert.deepEqual(page.errors, []);
  } catch (err) {
    throw withLogs(err, cluster, send);
  } finally {
    await send?.kill();
    await page.context().close();
    file.cleanup();
    if (victim >= 0) await cluster.nodes[victim].restart();
  }
});
