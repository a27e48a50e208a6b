// /call: video between two browser contexts through `switchboard serve`.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, newPage, screenshot, waitFor, roomName } from './helpers.mjs';

let server;
let browser;

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** True once some remote tile in the page shows decoded video. */
const remoteVideoPlaying = () =>
  [...document.querySelectorAll('.tile.peer video')].some((v) => v.videoWidth > 0 && v.videoHeight > 0);

/** Timeline step names of the (only) remote peer in the page. */
const steps = (page) => page.evaluate(() => [...window.switchboardRoom.peers.values()][0].timeline.map((e) => e.step));

test('two browsers on /call receive each other\'s video', { timeout: 120_000 }, async () => {
  const room = roomName('call');
  const alice = await newPage(browser, 'alice');
  const bob = await newPage(browser, 'bob');

  await alice.goto(`${server.origin}/call?room=${room}&name=alice`);
  await waitFor(alice, () => document.body.dataset.joined === 'true');
  await bob.goto(`${server.origin}/call?room=${room}&name=bob`);
  await waitFor(bob, () => document.body.dataset.joined === 'true');

  for (const page of [alice, bob]) {
    await waitFor(page, remoteVideoPlaying, undefined, 45_000);
    await waitFor(page, () => document.querySelector('.tile.peer')?.dataset.state === 'connected');
  }

  // Each tile names the other side (meta from join is relayed).
  assert.equal(await alice.locator('.tile.peer .name').textContent(), 'bob');
  assert.equal(await bob.locator('.tile.peer .name').textContent(), 'alice');
  assert.equal(await alice.locator('.tile.peer .connection-state').textContent(), 'connected');

  // Roles (docs/protocol.md): bob is the newcomer and offers; alice answers.
  const bobSteps = await steps(bob);
  const aliceSteps = await steps(alice);
  assert.ok(bobSteps.includes('offer-sent'), `bob offered: ${bobSteps}`);
  assert.ok(bobSteps.includes('answer-received'), 'bob got an answer');
  assert.ok(aliceSteps.includes('offer-received'), 'alice got the offer');
  assert.ok(aliceSteps.includes('answer-sent'), 'alice answered');
  assert.ok(aliceSteps.indexOf('offer-received') < aliceSteps.indexOf('answer-sent'));
  assert.ok(!aliceSteps.includes('offer-sent'), 'alice never sent an offer of her own');
  for (const s of ['local-candidate', 'remote-candidate', 'end-of-local-candidates']) {
    assert.ok(bobSteps.includes(s), `bob timeline has ${s}`);
    assert.ok(aliceSteps.includes(s), `alice timeline has ${s}`);
  }
  // Answerer reused the offered transceivers: exactly one audio and one video m-line each.
  const mids = await alice.evaluate(() =>
    [...window.switchboardRoom.peers.values()][0].pc.getTransceivers().map((t) => `${t.mid}:${t.currentDirection}`));
  assert.deepEqual(mids, ['0:sendrecv', '1:sendrecv']);

  // Selected candidate pair is reported.
  const pair = await alice.evaluate(() => [...window.switchboardRoom.peers.values()][0].getSelectedCandidatePair());
  assert.ok(pair && pair.local && pair.remote, 'selected pair');
  assert.ok(['host', 'srflx', 'prflx', 'relay'].includes(pair.local.candidateType));
  assert.ok(pair.local.port > 0 && pair.remote.port > 0);
  await waitFor(alice, () => /selected pair: \w+\/\w+/.test(document.querySelector('.tile.peer .selected-pair').textContent));

  // Timeline and candidate table are rendered in the tile.
  await alice.click('.tile.peer summary');
  assert.ok(await alice.locator('.tile.peer .candidates tbody tr').count() >= 2);
  assert.match(await alice.locator('.tile.peer .timeline').textContent(), /\[\d+\.\d{3}\]offer-received/);

  await screenshot(alice, 'call-alice');
  await screenshot(bob, 'call-bob');

  // Mute toggles the local tracks off.
  await bob.click('#mute');
  assert.deepEqual(await bob.evaluate(() => window.switchboardRoom.localStream.getTracks().map((t) => t.enabled)), [false, false]);
  await bob.click('#mute');

  // Hang up: bob leaves, alice's tile for bob goes away.
  await bob.click('#hangup');
  await waitFor(alice, () => document.querySelectorAll('.tile.peer').length === 0);
  assert.equal(await bob.evaluate(() => document.body.dataset.joined), 'false');

  assert.deepEqual(alice.errors, []);
  assert.deepEqual(bob.errors, []);
  await alice.context().close();
  await bob.context().close();
});

test('a peer without a camera joins receive-only and still sees the other', { timeout: 120_000 }, async () => {
  const room = roomName('nocam');
  const carol = await newPage(browser, 'carol');
  // dave's camera and microphone are denied.
  const dave = await newPage(browser, 'dave', {
    initScript: () => {
      navigator.mediaDevices.getUserMedia = () =>
        Promise.reject(new DOMException('Permission denied', 'NotAllowedError'));
    },
  });

  await carol.goto(`${server.origin}/call?room=${room}&name=carol`);
  await waitFor(carol, () => document.body.dataset.joined === 'true');
  await dave.goto(`${server.origin}/call?room=${room}&name=dave`);
  await waitFor(dave, () => document.body.dataset.joined === 'true');

  const notice = dave.locator('#notices [data-code="camera-denied"]');
  await notice.waitFor();
  assert.match(await notice.textContent(), /denied.*receive-only/s);

  // dave (newcomer, no tracks) offered recvonly transceivers, so he sees carol.
  await waitFor(dave, remoteVideoPlaying, undefined, 45_000);
  await waitFor(carol, () => document.querySelector('.tile.peer')?.dataset.state === 'connected');
  const daveDirs = await dave.evaluate(() =>
    [...window.switchboardRoom.peers.values()][0].pc.getTransceivers().map((t) => t.currentDirection));
  assert.deepEqual(daveDirs.sort(), ['recvonly', 'recvonly']);

  await screenshot(dave, 'call-receive-only');
  await screenshot(carol, 'call-receive-only-other');
  assert.deepEqual(carol.errors, []);
  assert.deepEqual(dave.errors, []);
  await carol.context().close();
  await dave.context().close();
});

test('/call?relay=1 connects through the built-in TURN server only', { timeout: 120_000 }, async () => {
  // Both browsers are on this machine, so the relay must be allowed to reach loopback peers.
  const turnServer = await startServer(['--allow-peer', '127.0.0.0/8']);
  const room = roomName('relay');
  const erin = await newPage(browser, 'relay-erin');
  const frank = await newPage(browser, 'relay-frank');
  try {
    for (const [page, name] of [[erin, 'erin'], [frank, 'frank']]) {
      await page.goto(`${turnServer.origin}/call?room=${room}&relay=1&name=${name}`);
      await waitFor(page, () => document.body.dataset.joined === 'true');
      const notice = page.locator('#notices [data-code="relay"]');
      await notice.waitFor();
      assert.match(await notice.textContent(), /TURN only/);
    }
    for (const page of [erin, frank]) {
      await waitFor(page, remoteVideoPlaying, undefined, 45_000);
      const r = await page.evaluate(async () => {
        const peer = [...window.switchboardRoom.peers.values()][0];
        return {
          policy: peer.pc.getConfiguration().iceTransportPolicy,
          types: [...new Set(peer.candidates.local.map((c) => c.type))],
          pair: await peer.getSelectedCandidatePair(),
        };
      });
      assert.equal(r.policy, 'relay');
      assert.deepEqual(r.types, ['relay'], 'only relay candidates are gathered');
      assert.equal(r.pair.local.candidateType, 'relay');
      assert.equal(r.pair.remote.candidateType, 'relay');
    }
    await screenshot(erin, 'call-relay-erin');
    await screenshot(frank, 'call-relay-frank');
    assert.deepEqual(erin.errors, []);
    assert.deepEqual(frank.errors, []);
  } finally {
    await erin.context().close();
    await frank.context().close();
    await turnServer.stop();
  }
});

test('/call?relay=1 warns when the server hands out no TURN server', { timeout: 60_000 }, async () => {
  const noTurn = await startServer([], { turn: false });
  const page = await newPage(browser, 'relay-no-turn');
  try {
    await page.goto(`${noTurn.origin}/call?room=${roomName('relay')}&relay=1`);
    await waitFor(page, () => document.body.dataset.joined === 'true');
    assert.equal(await page.evaluate(() => window.switchboardRoom.options.iceTransportPolicy), 'relay');
    const notice = page.locator('#notices [data-code="relay-no-turn"]');
    await notice.waitFor();
    assert.match(await notice.textContent(), /no TURN server/);
    await screenshot(page, 'call-relay-no-turn');
    assert.deepEqual(page.errors, []);
  } finally {
    await page.context().close();
    await noTurn.stop();
  }
});
