// The browser SDK against the real server: protocol v1 conformance of
// SignalingChannel, perfect negotiation under a forced offer collision, and a
// three-peer mesh.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, newPage, waitFor, roomName, screenshot } from './helpers.mjs';

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

test('server serves the SDK, its types and the pages', async () => {
  for (const [path, type] of [
    ['/sdk/switchboard.js', 'javascript'], ['/sdk/switchboard.d.ts', ''],
    ['/sdk/transfer.js', 'javascript'], ['/sdk/transfer.d.ts', ''],
    ['/sdk/session.js', 'javascript'], ['/sdk/session.d.ts', ''], ['/assets/style.css', 'css'],
    ['/assets/ui.js', 'javascript'], ['/', 'html'], ['/local', 'html'], ['/call', 'html'], ['/chat', 'html'],
  ]) {
    const res = await fetch(server.origin + path);
    assert.equal(res.status, 200, path);
    if (type) assert.match(res.headers.get('content-type') ?? '', new RegExp(type), path);
    await res.arrayBuffer();
  }
  const dts = await (await fetch(`${server.origin}/sdk/switchboard.d.ts`)).text();
  for (const name of ['joinRoom', 'SignalingChannel', 'RemotePeer', 'Room', 'TimelineEntry', 'getSelectedCandidatePair',
    'reconnecting: FieldsEvent', 'resumed: FieldsEvent', 'rejoined: FieldsEvent', 'ReconnectOptions', 'reconnect-failed']) {
    assert.ok(dts.includes(name), `d.ts declares ${name}`);
  }
  const sessionDts = await (await fetch(`${server.origin}/sdk/session.d.ts`)).text();
  for (const name of ['SessionTracker', 'backoffDelay', 'DEFAULT_RECONNECT', 'maxAttempts']) {
    assert.ok(sessionDts.includes(name), `session.d.ts declares ${name}`);
  }
  const transferDts = await (await fetch(`${server.origin}/sdk/transfer.d.ts`)).text();
  for (const name of ['parse', 'Sender', 'Receiver', 'sendFile', 'FileStartFrame', 'AckOutcome']) {
    assert.ok(transferDts.includes(name), `transfer.d.ts declares ${name}`);
  }
});

test('SignalingChannel speaks protocol v1', { timeout: 60_000 }, async () => {
  const page = await newPage(browser, 'signaling');
  await page.goto(`${server.origin}/`);
  const room = roomName('sig');
  const r = await page.evaluate(async ({ url, room }) => {
    const { SignalingChannel } = await import('/sdk/switchboard.js');
    const next = (target, type) => new Promise((resolve) => target.addEventListener(type, resolve, { once: true }));
    const codeOf = (p) => p.then(() => 'resolved', (e) => e.code);
    const out = {};

    const a = new SignalingChannel(url);
    const wa = await a.join(room, { peer: 'alpha', meta: { name: 'Alpha' } });
    out.wa = { peer: wa.peer, room: wa.room, peers: wa.peers, iceServers: Array.isArray(wa.iceServers) };

    const b = new SignalingChannel(url);
    const joinedP = next(a, 'peer-joined');
    const wb = await b.join(room, { peer: 'beta' });
    out.wb = { peer: wb.peer, peers: wb.peers };
    const joined = await joinedP;
    out.joined = { peer: joined.peer, meta: joined.meta };

    // Seed-004 shape: signaling.send({description}) / send({candidate}), 'message' events.
    const got = [];
    a.to('beta').addEventListener('message', ({ from, description, candidate }) => got.push({ from, description, candidate }));
    b.to('alpha').send({ description: { type: 'offer', sdp: 'v=0\r\n' } });
    b.to('alpha').send({ candidate: { candidate: 'candidate:1 1 udp 2122260223 192.0.2.7 50123 typ host', sdpMid: '0', sdpMLineIndex: 0 } });
    b.to('alpha').send({ candidate: null });
    await new Promise((r) => { const t = setInterval(() => { if (got.length >= 3) { clearInterval(t); r(); } }, 20); });
    out.got = got;

    const errP = next(a, 'error');
    a.signal('nobody', { candidate: null });
    out.unknownPeer = (await errP).code;

    const pongP = next(a, 'pong');
    a.ping();
    out.pong = (await pongP).type;

    // A refused join leaves the socket open: retry on it with another id.
    const c = new SignalingChannel(url);
    out.taken = await codeOf(c.join(room, { peer: 'alpha' }));
    const leftGammaP = next(a, 'peer-left');
    out.retry = (await c.join(room, { peer: 'gamma' })).peers.map((p) => p.peer);
    c.close();
    out.gammaLeft = (await leftGammaP).peer;
    out.invalidRoom = await codeOf(new SignalingChannel(url).join('not a room!'));
    out.invalidPeer = await codeOf(new SignalingChannel(url).join(room, { peer: 'x'.repeat(65) }));

    const leftP = next(a, 'peer-left');
    b.close();
    out.left = (await leftP).peer;

    // leave keeps the socket: join again (server picks the id).
    a.leave();
    const again = await a.join(`${room}-2`);
    out.rejoin = { room: again.room, peerIsString: typeof again.peer === 'string' && again.peer.length > 0 };
    a.close();
    return out;
  }, { url: server.wsUrl, room });

  assert.deepEqual(r.wa, { peer: 'alpha', room, peers: [], iceServers: true });
  assert.deepEqual(r.wb, { peer: 'beta', peers: [{ peer: 'alpha', meta: { name: 'Alpha' } }] });
  assert.deepEqual(r.joined, { peer: 'beta', meta: {} });
  assert.deepEqual(r.got, [
    { from: 'beta', description: { type: 'offer', sdp: 'v=0\r\n' }, candidate: undefined },
    { from: 'beta', description: undefined, candidate: { candidate: 'candidate:1 1 udp 2122260223 192.0.2.7 50123 typ host', sdpMid: '0', sdpMLineIndex: 0 } },
    { from: 'beta', description: undefined, candidate: null },
  ]);
  assert.equal(r.unknownPeer, 'unknown-peer');
  assert.equal(r.pong, 'pong');
  assert.equal(r.taken, 'peer-id-taken');
  assert.deepEqual(r.retry, ['alpha', 'beta']);
  assert.equal(r.gammaLeft, 'gamma');
  assert.equal(r.invalidRoom, 'invalid-room');
  assert.equal(r.invalidPeer, 'invalid-peer');
  assert.equal(r.left, 'beta');
  assert.deepEqual(r.rejoin, { room: `${room}-2`, peerIsString: true });
  await screenshot(page, 'sdk-signaling');
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

/** In a page on the server origin: joinRoom and keep the room in window.room. */
async function join(page, url, room, peer, extra = {}) {
  await page.goto(`${server.origin}/`);
  await page.evaluate(async ({ url, room, peer, extra }) => {
    const { joinRoom } = await import('/sdk/switchboard.js');
    window.errors = [];
    window.room = await joinRoom(url, room, { peer, dataChannels: [{ label: 'ctl' }], ...extra });
    window.room.addEventListener('error', (e) => window.errors.push(String(e.error?.message ?? e.code)));
  }, { url, room, peer, extra });
}

test('perfect negotiation resolves a forced offer collision (newcomer polite)', { timeout: 90_000 }, async () => {
  const room = roomName('glare');
  const old = await newPage(browser, 'glare-old');
  const newcomer = await newPage(browser, 'glare-new');
  await join(old, server.wsUrl, room, 'old');
  await join(newcomer, server.wsUrl, room, 'newcomer');
  for (const page of [old, newcomer]) {
    await waitFor(page, () => {
      const p = window.room.peers.values().next().value;
      return p && p.pc.connectionState === 'connected' && p.channels.get('ctl')?.readyState === 'open';
    });
  }
  assert.equal(await old.evaluate(() => window.room.peers.get('newcomer').polite), false);
  assert.equal(await newcomer.evaluate(() => window.room.peers.get('old').polite), true);

  // Hold incoming signals on both sides, make both add a transceiver so both
  // send an offer, and only then let the crossed offers through.
  const arm = (page) => page.evaluate(() => {
    const peer = window.room.peers.values().next().value;
    const sig = window.room.signaling.to(peer.id);
    const deliver = sig._deliver.bind(sig);
    window.held = [];
    window.holding = true;
    sig._deliver = (d) => (window.holding ? window.held.push(d) : deliver(d));
    window.release = () => { window.holding = false; for (const d of window.held.splice(0)) deliver(d); };
  });
  await arm(old);
  await arm(newcomer);
  const addTransceiver = (page) => page.evaluate(() => window.room.peers.values().next().value.pc.addTransceiver('audio'));
  await addTransceiver(old);
  await addTransceiver(newcomer);
  for (const page of [old, newcomer]) {
    await waitFor(page, () => window.room.peers.values().next().value.pc.signalingState === 'have-local-offer' &&
      window.room.peers.values().next().value.timeline.filter((e) => e.step === 'offer-sent').length >= (window.room.peers.values().next().value.initiator ? 2 : 1));
  }
  // Both offers are out; let the messages through.
  await Promise.all([old.evaluate(() => window.release()), newcomer.evaluate(() => window.release())]);

  const settled = () => {
    const p = window.room.peers.values().next().value;
    const tr = p.pc.getTransceivers();
    return p.pc.signalingState === 'stable' && tr.length === 2 && tr.every((t) => t.mid !== null && t.currentDirection) &&
      p.pc.connectionState === 'connected';
  };
  await waitFor(old, settled);
  await waitFor(newcomer, settled);

  const steps = (page) => page.evaluate(() => window.room.peers.values().next().value.timeline.map((e) => e.step));
  const oldSteps = await steps(old);
  const newSteps = await steps(newcomer);
  if (process.env.E2E_DUMP) {
    const dump = (page) => page.evaluate(() => window.room.peers.values().next().value.timeline.map((e) => `${e.t.toFixed(1)} ${e.step} ${e.step.includes('candidate') ? '' : e.detail}`).join('\n'));
    console.log('--- old\n' + await dump(old) + '\n--- newcomer\n' + await dump(newcomer));
  }
  assert.ok(oldSteps.includes('offer-ignored'), 'impolite (older) peer ignored the colliding offer');
  assert.ok(!oldSteps.includes('rollback'), 'impolite peer never rolls back');
  assert.ok(newSteps.includes('rollback'), 'polite newcomer rolled back its offer');
  assert.ok(!newSteps.includes('offer-ignored'));
  // Both ends agree on the same m-lines.
  const mids = (page) => page.evaluate(() => window.room.peers.values().next().value.pc.getTransceivers().map((t) => t.mid).sort());
  assert.deepEqual(await mids(old), await mids(newcomer));
  // The data channel survived the renegotiation.
  await old.evaluate(() => window.room.peers.get('newcomer').channels.get('ctl')
    .addEventListener('message', (e) => { window.ctlReceived = e.data; }));
  await newcomer.evaluate(() => window.room.peers.get('old').channels.get('ctl').send('still here'));
  await waitFor(old, () => window.ctlReceived === 'still here');
  await screenshot(old, 'sdk-glare-old');
  await screenshot(newcomer, 'sdk-glare-newcomer');
  assert.deepEqual(await old.evaluate(() => window.errors), []);
  assert.deepEqual(await newcomer.evaluate(() => window.errors), []);
  await old.context().close();
  await newcomer.context().close();
});

test('three peers form a full mesh', { timeout: 90_000 }, async () => {
  const room = roomName('mesh');
  const pages = [];
  for (const id of ['p1', 'p2', 'p3']) {
    const page = await newPage(browser, `mesh-${id}`);
    await join(page, server.wsUrl, room, id);
    pages.push(page);
  }
  for (const page of pages) {
    await waitFor(page, () => window.room.peers.size === 2 &&
      [...window.room.peers.values()].every((p) => p.pc.connectionState === 'connected' && p.channels.get('ctl')?.readyState === 'open'));
  }
  // p3 joined last: it is the newcomer (initiator, polite) towards both others.
  const roles = await pages[2].evaluate(() => [...window.room.peers.values()].map((p) => [p.id, p.initiator, p.polite]));
  assert.deepEqual(roles.sort(), [['p1', true, true], ['p2', true, true]]);
  const p1roles = await pages[0].evaluate(() => [...window.room.peers.values()].map((p) => [p.id, p.initiator, p.polite]));
  assert.deepEqual(p1roles.sort(), [['p2', false, false], ['p3', false, false]]);

  // p2 leaves: the others see peerleft and keep their link to each other.
  await pages[0].evaluate(() => window.room.addEventListener('peerleft', (e) => { window.leftPeer = e.peer.id; }));
  await pages[1].evaluate(() => window.room.leave());
  await waitFor(pages[0], () => window.leftPeer === 'p2' && window.room.peers.size === 1);
  await waitFor(pages[2], () => window.room.peers.size === 1 && window.room.peers.get('p1').pc.connectionState === 'connected');
  for (const [i, page] of pages.entries()) {
    await screenshot(page, `sdk-mesh-p${i + 1}`);
    assert.deepEqual(await page.evaluate(() => window.errors), []);
    assert.deepEqual(page.errors, []);
    await page.context().close();
  }
});

test('iceTransportPolicy "relay" reaches the peer connections', { timeout: 60_000 }, async () => {
  const room = roomName('relay');
  const a = await newPage(browser, 'relay-a');
  const b = await newPage(browser, 'relay-b');
  await join(a, server.wsUrl, room, 'a');
  await join(b, server.wsUrl, room, 'b', { iceTransportPolicy: 'relay' });
  // b offers; relay-only ICE gathers no host or server-reflexive candidates.
  await waitFor(b, () => {
    const p = window.room.peers.get('a');
    return p && p.timeline.some((e) => e.step === 'end-of-local-candidates');
  });
  const r = await b.evaluate(() => {
    const p = window.room.peers.get('a');
    return { policy: p.pc.getConfiguration().iceTransportPolicy, types: p.candidates.local.map((c) => c.type) };
  });
  assert.equal(r.policy, 'relay');
  assert.ok(r.types.every((t) => t === 'relay'), `local candidate types ${r.types}`);
  assert.equal(await a.evaluate(() => window.room.peers.get('b').pc.getConfiguration().iceTransportPolicy), 'all');
  await screenshot(a, 'sdk-relay-a');
  await screenshot(b, 'sdk-relay-b');
  await a.context().close();
  await b.context().close();
});
