// Browser and CLI steps shared by the cluster tests: put two clients on
// different nodes through the balancer, record the SDK's reconnect events in
// a page, and the CLI arguments every test uses.

import assert from 'node:assert/strict';
import { waitFor } from './harness.mjs';

/**
 * Start `first` and `second` through the balancer so that they land on
 * different nodes: `first` lands wherever round-robin puts it, then its node
 * is drained (no new connections) while `second` connects. Returns the node
 * indices [first, second].
 * @param {any} cluster
 * @param {() => Promise<unknown>} first
 * @param {() => Promise<unknown>} second
 */
export async function landApart(cluster, first, second) {
  const before = await cluster.connections();
  await first();
  const i = await cluster.newConnectionOn(before);
  const name = cluster.nodes[i].name;
  await cluster.lb.drain(name);
  let j;
  try {
    const mid = await cluster.connections();
    await second();
    j = await cluster.newConnectionOn(mid);
  } finally {
    await cluster.lb.ready(name);
  }
  assert.notEqual(i, j, 'the two clients are on different nodes');
  return [i, j];
}

/** CLI arguments: the balancer, the room, JSON events, loopback candidates. */
export const cliArgs = (cluster, room, name) =>
  ['--server', cluster.lb.origin, '--room', room, '--json', '--loopback', '--name', name];

/**
 * Record the Room's reconnect events in `window.__sb` (SDK docs in
 * web/sdk/switchboard.js: 'reconnecting', 'resumed', 'rejoined',
 * 'peerleft', 'peerrejoined', the channel's 'resume-failed', and as
 * `timeline:STEP` the peer timeline steps that touch a connection).
 * @param {import('playwright-core').Page} page
 */
export async function recordRoomEvents(page) {
  await page.evaluate(() => {
    const w = /** @type {any} */ (window);
    w.__sb = [];
    const room = w.switchboardRoom;
    const push = (type, e) => {
      const d = e.detail ?? {};
      w.__sb.push({
        type,
        at: Date.now(),
        peer: d.peer?.id ?? d.peer,
        code: d.code,
        fresh: d.fresh,
      });
    };
    for (const type of ['reconnecting', 'resumed', 'rejoined', 'peerleft', 'peerrejoined', 'signalingclose']) {
      room.addEventListener(type, (e) => push(type, e));
    }
    room.signaling.addEventListener('resume-failed', (e) => push('resume-failed', e));
    // Steps that touch a peer connection: a resume must cause none of them.
    room.addEventListener('timeline', (e) => {
      const step = e.detail?.entry?.step;
      if (['pc-created', 'ice-restart', 'peer-replaced', 'close'].includes(step)) push(`timeline:${step}`, e);
    });
  });
}

/** The events recorded by recordRoomEvents. @param {any} page */
export const roomEvents = (page) => page.evaluate(() => /** @type {any} */ (window).__sb);

/**
 * Wait until the page recorded an event of `type`.
 * @param {any} page
 * @param {string} type
 */
export const waitRoomEvent = (page, type, timeout = 20_000) =>
  waitFor(page, (t) => /** @type {any} */ (window).__sb.some((e) => e.type === t), type, timeout);

/** The page's (only) remote peer's connection state. @param {any} page */
export const pagePeerState = (page) => page.evaluate(() => {
  const peer = [.../** @type {any} */ (window).switchboardRoom.peers.values()][0];
  return peer ? { id: peer.id, connection: peer.pc.connectionState, ice: peer.pc.iceConnectionState } : null;
});

/** Wait until /call's remote tile plays video whose time moves on by `seconds`. @param {any} page */
export async function waitVideoPlaying(page, seconds = 1, timeout = 30_000) {
  await waitFor(page, () => [...document.querySelectorAll('.tile.peer video')].some((v) => /** @type {HTMLVideoElement} */ (v).videoWidth > 0), undefined, timeout);
  const t0 = await page.evaluate(() => /** @type {HTMLVideoElement} */ (document.querySelector('.tile.peer video')).currentTime);
  await waitFor(page, ([t, s]) => /** @type {HTMLVideoElement} */ (document.querySelector('.tile.peer video')).currentTime > t + s, [t0, seconds], timeout);
}

/** Bytes of video the page received so far from its peer. @param {any} page */
export const inboundVideoBytes = (page) => page.evaluate(async () => {
  const peer = [.../** @type {any} */ (window).switchboardRoom.peers.values()][0];
  let bytes = 0;
  (await peer.pc.getStats()).forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'video') bytes += s.bytesReceived; });
  return bytes;
});

/**
 * The ICE ufrags of the page's (only) peer connection's current local and
 * remote descriptions: both change with an ICE restart, whichever side ran it.
 * @param {any} page
 */
export const iceUfrags = (page) => page.evaluate(() => {
  const peer = [.../** @type {any} */ (window).switchboardRoom.peers.values()][0];
  const ufrag = (d) => d?.sdp?.match(/^a=ice-ufrag:(\S+)/m)?.[1] ?? null;
  return { local: ufrag(peer?.pc.currentLocalDescription), remote: ufrag(peer?.pc.currentRemoteDescription), signaling: peer?.pc.signalingState };
});
