// /call with its signaling socket cut mid-call. The pages' WebSocket goes
// through a TCP proxy (proxy.mjs) that the test resets without a close
// frame: the video keeps playing, the SDK resumes the session (or, when the
// server lost it, rejoins and ICE-restarts), and renegotiation still works.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, newPage, screenshot, waitFor, roomName } from './helpers.mjs';
import { startProxy } from './proxy.mjs';

let browser;

before(async () => {
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Decoded video frames of the page's (only) remote peer, from getStats(). */
const framesDecoded = (page) => page.evaluate(async () => {
  const peer = [...window.switchboardRoom.peers.values()][0];
  let n = 0;
  (await peer.pc.getStats()).forEach((s) => {
    if (s.type === 'inbound-rtp' && s.kind === 'video') n += s.framesDecoded ?? 0;
  });
  return n;
});

/** currentTime of the remote video element. */
const videoTime = (page) => page.evaluate(() => document.querySelector('.tile.peer video').currentTime);

/** Record the room's reconnect events in window.__events; remember the peer connection. */
const watch = (page) => page.evaluate(() => {
  window.__events = [];
  const room = window.switchboardRoom;
  for (const type of ['reconnecting', 'resumed', 'rejoined', 'peerrejoined', 'signalingclose', 'peerleft', 'peer', 'error']) {
    room.addEventListener(type, (e) => window.__events.push({
      type, attempt: e.attempt, fresh: e.fresh, resent: e.resent, restarted: e.restarted,
      peer: e.peer?.id ?? e.peer, reason: e.reason, error: e.error ? String(e.error.message ?? e.error) : undefined,
    }));
  }
  const peer = [...room.peers.values()][0];
  window.__pc0 = peer.pc;
  window.__steps0 = peer.timeline.length;
});

const events = (page) => page.evaluate(() => window.__events.map((e) => e.type));
const samePc = (page) => page.evaluate(() => [...window.switchboardRoom.peers.values()][0]?.pc === window.__pc0);
/** Timeline steps of the remote peer since watch(). */
const newSteps = (page) => page.evaluate(() =>
  [...window.switchboardRoom.peers.values()][0].timeline.slice(window.__steps0).map((e) => `${e.step} ${e.detail}`));
/** The remote description's ICE ufrag (changes with every ICE restart). */
const remoteUfrag = (page) => page.evaluate(() =>
  /a=ice-ufrag:(\S+)/.exec([...window.switchboardRoom.peers.values()][0].pc.remoteDescription?.sdp ?? '')?.[1]);

const remoteVideoPlaying = () =>
  [...document.querySelectorAll('.tile.peer video')].some((v) => v.videoWidth > 0 && v.videoHeight > 0);
const connected = () => document.querySelector('.tile.peer')?.dataset.state === 'connected';

/** Room 'error' events recorded by watch(). */
const roomErrors = (page) => page.evaluate(() => window.__events.filter((e) => e.type === 'error').map((e) => e.error));

/** Two pages in a call on `origin`, signaling through `signalUrl` (bob's through `bobSignalUrl`). */
async function call(origin, signalUrl, prefix, bobSignalUrl = signalUrl) {
  const room = roomName(prefix);
  const alice = await newPage(browser, `${prefix}-alice`);
  const bob = await newPage(browser, `${prefix}-bob`);
  await alice.goto(`${origin}/call?room=${room}&name=alice&peer=alice&signal=${encodeURIComponent(signalUrl)}`);
  await waitFor(alice, () => document.body.dataset.joined === 'true');
  await bob.goto(`${origin}/call?room=${room}&name=bob&peer=bob&signal=${encodeURIComponent(bobSignalUrl)}`);
  await waitFor(bob, () => document.body.dataset.joined === 'true');
  for (const page of [alice, bob]) {
    await waitFor(page, remoteVideoPlaying, undefined, 45_000);
    await waitFor(page, connected);
    await watch(page);
  }
  return { alice, bob };
}

test('/call: signaling cut mid-call resumes; video keeps playing; renegotiation works after', { timeout: 150_000 }, async () => {
  const server = await startServer();
  const proxy = await startProxy(server.port);
  const { alice, bob } = await call(server.origin, proxy.wsUrl, 'cut');
  try {
    assert.equal(proxy.open, 2, 'both signaling sockets go through the proxy');
    for (const page of [alice, bob]) {
      const s = await page.evaluate(() => ({ session: window.switchboardRoom.signaling.session, seq: window.switchboardRoom.signaling.lastSeq }));
      assert.ok(typeof s.session === 'string' && s.session.length > 0, 'welcome carried a session');
      assert.ok(s.seq > 0, 'server messages carry seq');
    }
    const frames0 = [await framesDecoded(alice), await framesDecoded(bob)];
    const time0 = await videoTime(alice);

    // Cut both sockets, RST, no close frame, and keep the network "down".
    assert.equal(proxy.cut({ block: true }), 2);
    for (const page of [alice, bob]) {
      await waitFor(page, () => document.body.dataset.signaling === 'reconnecting', undefined, 10_000);
      assert.ok(await page.locator('#signaling-badge').isVisible(), 'badge shown');
      assert.equal(await page.locator('#signaling-badge').textContent(), 'reconnecting…');
    }
    await screenshot(alice, 'call-reconnecting');

    // Renegotiate while signaling is down: alice's offer for a new data
    // channel waits in the SDK's outbox and goes out after the resume.
    await alice.evaluate(() => {
      const peer = [...window.switchboardRoom.peers.values()][0];
      window.__dc = peer.pc.createDataChannel('during-outage');
    });
    await waitFor(alice, () => window.switchboardRoom.signaling.unackedSignals > 0, undefined, 10_000);
    await sleep(2500);
    // Both clients retried into the "down" network at least once by now.
    assert.ok(proxy.refused >= 2, `reconnect attempts while down: ${proxy.refused}`);
    const frames1 = [await framesDecoded(alice), await framesDecoded(bob)];
    assert.ok(frames1[0] > frames0[0] + 20 && frames1[1] > frames0[1] + 20,
      `video decodes while signaling is down: ${frames0} -> ${frames1}`);
    assert.ok(await videoTime(alice) > time0 + 1, 'remote video currentTime advances');

    proxy.unblock();
    for (const page of [alice, bob]) {
      await waitFor(page, () => window.__events.some((e) => e.type === 'resumed'), undefined, 20_000);
      await waitFor(page, () => document.body.dataset.signaling === 'resumed');
      assert.equal(await page.locator('#signaling-badge').isVisible(), false, 'badge hidden again');
      const ev = await events(page);
      assert.equal(ev[0], 'reconnecting', `first event: ${ev}`);
      assert.ok(ev.indexOf('resumed') > 0, `resumed after reconnecting: ${ev}`);
      assert.ok(!ev.includes('rejoined') && !ev.includes('peerleft') && !ev.includes('signalingclose'), `events ${ev}`);
      assert.ok(await samePc(page), 'the RTCPeerConnection survived the resume');
    }
    assert.equal(proxy.open, 2, 'both sockets are back through the proxy');
    const resent = await alice.evaluate(() => window.__events.find((e) => e.type === 'resumed').resent);
    assert.ok(resent >= 1, `alice re-sent her queued signals (${resent})`);

    // The offer queued during the outage completed: the channel opens and carries data.
    await waitFor(bob, () => [...window.switchboardRoom.peers.values()][0].channels.get('during-outage')?.readyState === 'open', undefined, 20_000);
    await bob.evaluate(() => {
      window.__got = [];
      [...window.switchboardRoom.peers.values()][0].channels.get('during-outage')
        .addEventListener('message', (e) => window.__got.push(e.data));
    });
    await waitFor(alice, () => window.__dc.readyState === 'open');
    await alice.evaluate(() => window.__dc.send('sent after the resume'));
    await waitFor(bob, () => window.__got.includes('sent after the resume'));

    // No ICE restart was needed for the resume itself; the connections only
    // took the fresh TURN credentials of `resumed` for later gathering.
    for (const page of [alice, bob]) {
      const steps = await newSteps(page);
      assert.ok(!steps.some((s) => s.startsWith('ice-restart') || s.startsWith('setConfiguration-warning')),
        `no ICE restart: ${steps.join(' | ')}`);
      const ice = await page.evaluate(() => ({
        pc: [...window.switchboardRoom.peers.values()][0].pc.getConfiguration().iceServers,
        resumed: window.switchboardRoom.signaling.iceServers,
        welcome: window.switchboardRoom.welcome.iceServers,
      }));
      assert.ok(ice.resumed.some((s) => s.credential), 'resumed carried TURN credentials');
      assert.notDeepEqual(ice.resumed, ice.welcome, 'fresh credentials, not the ones of welcome');
      assert.deepEqual(ice.pc.map((s) => [s.urls, s.username, s.credential].flat().join(' ')).sort(),
        ice.resumed.map((s) => [s.urls, s.username, s.credential].flat().join(' ')).sort());
    }

    // A later renegotiation through the resumed signaling: bob ICE-restarts.
    const ufrag = await remoteUfrag(alice);
    await bob.evaluate(() => [...window.switchboardRoom.peers.values()][0].pc.restartIce());
    await waitFor(alice, (old) => {
      const pc = [...window.switchboardRoom.peers.values()][0].pc;
      const u = /a=ice-ufrag:(\S+)/.exec(pc.remoteDescription?.sdp ?? '')?.[1];
      return u && u !== old && pc.signalingState === 'stable';
    }, ufrag, 20_000);
    for (const page of [alice, bob]) {
      await waitFor(page, () => {
        const pc = [...window.switchboardRoom.peers.values()][0].pc;
        return pc.signalingState === 'stable' && pc.connectionState === 'connected';
      });
    }
    const frames2 = [await framesDecoded(alice), await framesDecoded(bob)];
    await sleep(1000);
    const frames3 = [await framesDecoded(alice), await framesDecoded(bob)];
    assert.ok(frames3[0] > frames2[0] && frames3[1] > frames2[1], `video still decodes: ${frames2} -> ${frames3}`);

    await screenshot(alice, 'call-resumed-alice');
    await screenshot(bob, 'call-resumed-bob');
    assert.deepEqual(await roomErrors(alice), []);
    assert.deepEqual(await roomErrors(bob), []);
    assert.deepEqual(alice.errors, []);
    assert.deepEqual(bob.errors, []);
  } finally {
    await alice.context().close();
    await bob.context().close();
    await proxy.close();
    await server.stop();
  }
});

test('/call: the server restarts (sessions lost): resume fails, both rejoin with their ids, ICE restarts, media keeps flowing', { timeout: 150_000 }, async () => {
  const first = await startServer();
  const proxy = await startProxy(first.port);
  const { alice, bob } = await call(first.origin, proxy.wsUrl, 'restart');
  // The pages came from the first server; nothing else is fetched from it.
  let second;
  try {
    const frames0 = [await framesDecoded(alice), await framesDecoded(bob)];
    const ufrags0 = [await remoteUfrag(alice), await remoteUfrag(bob)];

    proxy.cut({ block: true });
    await first.stop();
    // A new server knows nothing of the old sessions. Its short window lets
    // the test see that peers who come back are not dropped after it.
    second = await startServer(['--resume-window', '2']);
    proxy.retarget(second.port);
    proxy.unblock();

    for (const page of [alice, bob]) {
      await waitFor(page, () => window.__events.some((e) => e.type === 'rejoined'), undefined, 30_000);
      await waitFor(page, () => document.body.dataset.signaling === 'rejoined');
      const r = await page.evaluate(() => ({
        ev: window.__events.find((e) => e.type === 'rejoined'),
        id: window.switchboardRoom.peerId,
      }));
      assert.equal(r.ev.fresh, false, 'same id, within the window: calls are kept');
      assert.ok(['alice', 'bob'].includes(r.id), `kept its peer id (${r.id})`);
      assert.ok(!(await events(page)).includes('resumed'));
    }
    // One of them got the other in its welcome and ICE-restarted; the other
    // saw peer-joined for a peer it still had a call with and kept it.
    const steps = [await newSteps(alice), await newSteps(bob)];
    const restarted = steps.map((s) => s.some((x) => x.startsWith('ice-restart') && x.includes('rejoined')));
    const kept = steps.map((s) => s.some((x) => x.startsWith('peer-rejoined')));
    assert.ok(restarted[0] !== restarted[1] && kept[0] !== kept[1] && restarted[0] === kept[1],
      `one side restarts ICE, the other keeps the call: restarted ${restarted}, kept ${kept}`);

    for (const [i, page] of [alice, bob].entries()) {
      await waitFor(page, (old) => {
        const pc = [...window.switchboardRoom.peers.values()][0]?.pc;
        const u = /a=ice-ufrag:(\S+)/.exec(pc?.remoteDescription?.sdp ?? '')?.[1];
        return u && u !== old && pc.signalingState === 'stable' && pc.connectionState === 'connected';
      }, ufrags0[i], 30_000);
      assert.ok(await samePc(page), 'the RTCPeerConnection was kept and ICE-restarted');
      const ev = await events(page);
      assert.ok(!ev.includes('peerleft') && !ev.includes('peer'), `no peer torn down or re-created: ${ev}`);
    }
    // Past the new server's window the call is still there (the peer that
    // was missing from the first welcome came back with peer-joined).
    await sleep(3000);
    const frames1 = [await framesDecoded(alice), await framesDecoded(bob)];
    assert.ok(frames1[0] > frames0[0] + 30 && frames1[1] > frames0[1] + 30, `video kept decoding: ${frames0} -> ${frames1}`);
    for (const page of [alice, bob]) {
      assert.equal(await page.evaluate(() => window.switchboardRoom.peers.size), 1);
      assert.ok(await samePc(page));
      assert.equal(await page.evaluate(() => document.querySelector('.tile.peer')?.dataset.state), 'connected');
    }
    // The new session signals normally: a renegotiation from alice completes.
    await alice.evaluate(() => { window.__dc2 = [...window.switchboardRoom.peers.values()][0].pc.createDataChannel('after-rejoin'); });
    await waitFor(bob, () => [...window.switchboardRoom.peers.values()][0].channels.get('after-rejoin')?.readyState === 'open', undefined, 20_000);

    await screenshot(alice, 'call-rejoined-alice');
    await screenshot(bob, 'call-rejoined-bob');
    assert.deepEqual(await roomErrors(alice), []);
    assert.deepEqual(await roomErrors(bob), []);
    assert.deepEqual(alice.errors, []);
    assert.deepEqual(bob.errors, []);
  } finally {
    await alice.context().close();
    await bob.context().close();
    await proxy.close();
    await first.stop();
    await second?.stop();
  }
});

test('/call: the others dropped us while we were away (our session overflowed): the rejoin gets the call back', { timeout: 150_000 }, async () => {
  // A tiny buffer, so a few signals to the detached alice end her session:
  // bob sees her leave and closes his side, while alice, back within the
  // window under her id, expects to ICE-restart. The changed DTLS
  // fingerprints tell both sides the other has a new connection.
  const server = await startServer(['--resume-buffer', '8']);
  const proxy = await startProxy(server.port);
  const { alice, bob } = await call(server.origin, proxy.wsUrl, 'dropped', server.wsUrl);
  try {
    assert.equal(proxy.cut({ block: true }), 1, 'only alice goes through the proxy');
    await waitFor(alice, () => document.body.dataset.signaling === 'reconnecting', undefined, 10_000);
    // The server may not have seen alice's socket die yet when bob's first
    // signals go out (they are then written to it, not buffered): send more
    // each second until her buffer overflows and bob hears her leave.
    const left = () => window.__events.some((e) => e.type === 'peerleft' && e.peer === 'alice');
    for (let round = 0; round < 10 && !(await bob.evaluate(left)); round++) {
      await bob.evaluate(() => { for (let i = 0; i < 20; i++) window.switchboardRoom.signaling.signal('alice', { note: i }); });
      await bob.waitForFunction(left, undefined, { timeout: 1000 }).catch(() => {});
    }
    await waitFor(bob, left, undefined, 10_000);
    proxy.unblock();
    await waitFor(alice, () => window.__events.some((e) => e.type === 'rejoined'), undefined, 20_000);
    assert.equal(await alice.evaluate(() => window.__events.find((e) => e.type === 'rejoined').fresh), false);

    for (const page of [alice, bob]) {
      await waitFor(page, remoteVideoPlaying, undefined, 30_000);
      await waitFor(page, () => {
        const peers = [...window.switchboardRoom.peers.values()];
        return peers.length === 1 && peers[0].pc !== window.__pc0 && peers[0].pc.connectionState === 'connected';
      }, undefined, 30_000);
      const f0 = await framesDecoded(page);
      await sleep(1000);
      assert.ok(await framesDecoded(page) > f0, 'the new call decodes video');
      assert.equal(await page.evaluate(() => document.querySelectorAll('.tile.peer').length), 1, 'one tile for the other peer');
    }
    const replaced = await alice.evaluate(() => window.__events.filter((e) => e.type === 'peerleft').map((e) => e.reason));
    assert.ok(replaced.includes('the remote peer started a new connection'), `alice replaced her call: ${replaced}`);
    assert.deepEqual(await roomErrors(alice), []);
    assert.deepEqual(await roomErrors(bob), []);
    await screenshot(alice, 'call-dropped-alice');
    assert.deepEqual(alice.errors, []);
    assert.deepEqual(bob.errors, []);
  } finally {
    await alice.context().close();
    await bob.context().close();
    await proxy.close();
    await server.stop();
  }
});
