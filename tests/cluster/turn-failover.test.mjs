// A relay-only call whose TURN server dies with its node: /call (relay only)
// and `switchboard echo --relay-only` on different nodes, each relaying
// through its own node's TURN. kill -9 of the page's node takes its
// signaling and its TURN allocation down. The page resumes on the other
// node, gets that node's TURN in `resumed.iceServers`, ICE fails on the dead
// relay and restarts through the live one, and video flows again.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startCluster, launchBrowser, newPage, screenshot, waitFor, roomName, runCli, withLogs, until } from './harness.mjs';
import { landApart, cliArgs, recordRoomEvents, roomEvents, waitRoomEvent, waitVideoPlaying, inboundVideoBytes, iceUfrags } from './browser.mjs';

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

/** The TURN port of the page's selected local (relay) candidate's server, from getStats. */
const selectedRelay = (page) => page.evaluate(async () => {
  const peer = [.../** @type {any} */ (window).switchboardRoom.peers.values()][0];
  const stats = await peer.pc.getStats();
  let pair = null;
  stats.forEach((s) => { if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId); });
  const local = pair ? stats.get(/** @type {any} */ (pair).localCandidateId) : null;
  return local ? { type: local.candidateType, url: local.url ?? null } : null;
});

test('relay-only call: the page\'s node and TURN die; it resumes elsewhere and ICE-restarts through the live node\'s TURN', { timeout: 90_000 }, async (t) => {
  const room = roomName('cl-turn-failover');
  const page = await newPage(browser, 'cluster-turn-failover');
  /** @type {any} */
  let echo = null;
  let victim = -1;
  try {
    const [pageNode, echoNode] = await landApart(cluster,
      async () => {
        await page.goto(`${cluster.lb.origin}/call?room=${room}&name=browser&relay=1`);
        await waitFor(page, () => document.body.dataset.joined === 'true');
        await recordRoomEvents(page);
      },
      async () => {
        echo = runCli('echo', ['echo', ...cliArgs(cluster, room, 'native-echo'), '--relay-only']);
        await echo.waitEvent((e) => e.event === 'joined', 'joined');
      });
    await waitVideoPlaying(page, 1);
    const dead = cluster.nodes[pageNode];
    const live = cluster.nodes[echoNode];
    const relayBefore = await selectedRelay(page);
    assert.equal(relayBefore?.type, 'relay', `relayed before: ${JSON.stringify(relayBefore)}`);
    assert.ok(String(relayBefore.url).includes(`:${dead.turnPort}`), `the page relays through its own node's TURN: ${JSON.stringify(relayBefore)}`);

    const ufragsBefore = await iceUfrags(page);
    victim = pageNode;
    await dead.kill9();
    await waitRoomEvent(page, 'resumed');
    // The dead relay breaks ICE; an ICE restart (new ufrags, whichever side
    // starts it) gathers from the live node's TURN, which the page got with
    // `resumed`.
    await until(async () => {
      const u = await iceUfrags(page);
      return u.signaling === 'stable' && u.local !== ufragsBefore.local && u.remote !== ufragsBefore.remote;
    }, 'an ICE restart after the node died', 45_000);
    await waitFor(page, () => ['connected', 'completed'].includes([.../** @type {any} */ (window).switchboardRoom.peers.values()][0]?.pc.iceConnectionState), undefined, 20_000);
    const relayAfter = await until(async () => {
      const r = await selectedRelay(page);
      return r && r.type === 'relay' && String(r.url).includes(`:${live.turnPort}`) && r;
    }, 'a selected relay on the live node\'s TURN', 15_000);
    const bytes = await inboundVideoBytes(page);
    await until(async () => (await inboundVideoBytes(page)) > bytes + 10_000, 'video again after the ICE restart', 15_000);
    await waitVideoPlaying(page, 1);
    const events = await roomEvents(page);
    assert.ok(!events.some((e) => e.type === 'rejoined' || e.type === 'peerleft'), `resumed, not rejoined: ${JSON.stringify(events)}`);
    t.diagnostic(`relay before ${JSON.stringify(relayBefore)}, after ${JSON.stringify(relayAfter)}`);
    await screenshot(page, 'cluster-turn-failover');
    assert.deepEqual(page.errors, []);
  } catch (err) {
    const tl = await page.evaluate(() => [.../** @type {any} */ (window).switchboardRoom.peers.values()][0]?.timeline.filter((e) => /state|restart|icecandidateerror/.test(e.step)).map((e) => `${Math.round(e.t)} ${e.step} ${e.detail}`)).catch(() => []);
    if (err instanceof Error) err.message += `\n--- page timeline ---\n${(tl ?? []).join('\n')}`;
    throw withLogs(err, cluster, echo);
  } finally {
    await echo?.kill();
    await page.context().close();
    if (victim >= 0) await cluster.nodes[victim].restart();
  }
});
