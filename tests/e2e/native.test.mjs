// Chromium <-> native peer: /chat and /call in headless Chromium against the
// `switchboard send | recv | echo` CLI (docs/cli.md), through `switchboard
// serve` on loopback: files both ways with SHA-256 checks, the fake camera
// coming back from `echo`, the same relay-only through serve's TURN, and
// Chromium's default mDNS (.local) host candidates.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import {
  startServer, launchBrowser, newPage, screenshot, waitFor, roomName, randomFile,
  serverBinary, repoRoot, CHROMIUM, CHROMIUM_ARGS, runCli, withCliOutput, sampleHeap, BIG_MIB, HEAP_LIMIT,
} from './helpers.mjs';

const CANDIDATE_TYPES = ['host', 'srflx', 'prflx', 'relay'];

let server;
/** serve with loopback peers allowed on its TURN relay, for the relay-only tests. */
let relayServer;
let browser;

before(async () => {
  server = await startServer();
  // Both sides are relay-only and the TURN server listens on 127.0.0.1, so
  // every relayed peer address is a loopback one, which serve refuses unless
  // allowed.
  relayServer = await startServer(['--allow-peer', '127.0.0.0/8']);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
  await relayServer?.stop();
});

/** Common CLI arguments: the server, the room, JSON events, loopback candidates (unless `loopback` is false). */
const cliArgs = (srv, room, extra = [], loopback = true) =>
  ['--server', srv.origin, '--room', room, '--json', ...(loopback ? ['--loopback'] : []), ...extra];

/** SHA-256 of a file on disk. */
const sha256File = (file) => createHash('sha256').update(fs.readFileSync(file)).digest('hex');

/**
 * Check a `connected` event against docs/cli.md and return its pair.
 * @param {any} ev
 */
function checkConnected(ev) {
  assert.equal(typeof ev.peer, 'string');
  assert.ok(Number.isFinite(ev.setup_ms) && ev.setup_ms >= 0, `setup_ms ${ev.setup_ms}`);
  const { local, remote } = ev.pair ?? {};
  assert.ok(local && remote, `connected has a pair: ${JSON.stringify(ev)}`);
  for (const c of [local, remote]) {
    assert.ok(CANDIDATE_TYPES.includes(c.type), `candidate type ${c.type}`);
    assert.equal(c.protocol, 'udp');
    assert.match(c.address, /:\d+$/, 'address is IP:PORT');
  }
  return ev.pair;
}

/**
 * Make every RTCPeerConnection of the page relay-only. /chat has no
 * `?relay=1` switch (only /call has), so the page's SDK config is forced
 * from an init script instead.
 */
function forceRelayInPage() {
  const Native = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends Native {
    constructor(config = {}, ...rest) {
      super({ ...config, iceTransportPolicy: 'relay' }, ...rest);
    }
  };
}

/** The page's (only) remote peer: ICE policy, local candidate types, selected pair. */
const pagePeerInfo = (page) => page.evaluate(async () => {
  const peer = [...window.switchboardRoom.peers.values()][0];
  return {
    name: peer.meta?.name,
    policy: peer.pc.getConfiguration().iceTransportPolicy,
    localTypes: [...new Set(peer.candidates.local.map((c) => c.type))],
    hostAddresses: peer.candidates.local.filter((c) => c.type === 'host').map((c) => c.address),
    pair: await peer.getSelectedCandidatePair(),
  };
});

/**
 * /chat sends a file to `switchboard recv --count 1`. recv joins first, so the
 * page is the newcomer: it creates the `chat` channel and offers.
 * `beforeConnect(recv)` runs once the page is loaded, before waiting for the
 * channel to open; its result is returned as `before`.
 * @param {{srv: any, page: any, label: string, cliExtra?: string[], loopback?: boolean, cliEnv?: Record<string, string>, beforeConnect?: (recv: ReturnType<typeof runCli>) => Promise<any>}} o
 */
async function chatToRecv({ srv, page, label, cliExtra = [], loopback = true, cliEnv = {}, beforeConnect }) {
  const room = roomName(label);
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'switchboard-recv-'));
  const file = randomFile(3 * 1024 * 1024, 'three-megabytes.bin');
  const recv = runCli('recv', ['recv', ...cliArgs(srv, room, cliExtra, loopback), '--name', 'native-recv', '--out', out, '--count', '1'], cliEnv);
  try {
    const joined = await recv.waitEvent((e) => e.event === 'joined', 'joined', 20_000);
    assert.equal(joined.room, room);
    assert.deepEqual(joined.peers, []);

    await page.goto(`${srv.origin}/chat?room=${room}&name=browser`);
    const before = await beforeConnect?.(recv);
    await waitFor(page, () => document.body.dataset.chatReady === 'true', undefined, 45_000);
    await waitFor(page, () => [...document.querySelectorAll('#peers li span')].some((s) => s.textContent === 'native-recv'));
    const connected = await recv.waitEvent((e) => e.event === 'connected', 'connected', 30_000);
    const pair = checkConnected(connected);
    await waitFor(page, () => [...window.switchboardRoom.peers.values()][0]?.pc.connectionState === 'connected');
    const pageInfo = await pagePeerInfo(page);

    await page.setInputFiles('#file-input', file.path);
    const got = await recv.waitEvent((e) => e.event === 'file-received', 'file-received', 120_000);
    assert.equal(got.name, 'three-megabytes.bin');
    assert.equal(got.size, file.size);
    assert.equal(got.ok, true);
    assert.equal(got.sha256, file.sha256);
    assert.equal(path.resolve(got.path), path.join(fs.realpathSync(out), 'three-megabytes.bin'));
    assert.equal(sha256File(got.path), file.sha256, 'the file on disk has the sender\'s SHA-256');

    // The page shows recv's file-ack.
    await waitFor(page, () => ['ok', 'mismatch'].includes(document.querySelector('.transfer[data-direction="out"]')?.dataset.status));
    const card = page.locator('.transfer[data-direction="out"]').first();
    assert.equal(await card.getAttribute('data-status'), 'ok');
    assert.equal(await card.getAttribute('data-ack-sha256'), file.sha256);

    const { code } = await recv.waitExit(30_000);
    assert.equal(code, 0, `recv --count 1 exits 0:\n${recv.describe()}`);
    // Nothing else (no partial or temporary file) is left in --out.
    assert.deepEqual(fs.readdirSync(out), ['three-megabytes.bin']);
    assert.deepEqual(recv.badLines, [], 'every stdout line is a JSON event');
    return { pair, recv, page: pageInfo, before };
  } catch (err) {
    throw withCliOutput(err, recv);
  } finally {
    await recv.kill();
    file.cleanup();
    fs.rmSync(out, { recursive: true, force: true });
  }
}

/**
 * `switchboard send` sends a file to /chat. The page joins first, so the CLI
 * is the newcomer: it creates the channel and offers.
 * @param {{srv: any, page: any, label: string, cliExtra?: string[]}} o
 */
async function sendToChat({ srv, page, label, cliExtra = [] }) {
  const room = roomName(label);
  const file = randomFile(3 * 1024 * 1024 + 12345, 'from-native.bin');
  await page.goto(`${srv.origin}/chat?room=${room}&name=browser`);
  await waitFor(page, () => document.body.dataset.joined === 'true');
  const send = runCli('send', ['send', ...cliArgs(srv, room, cliExtra), '--name', 'native-send', file.path]);
  try {
    const joined = await send.waitEvent((e) => e.event === 'joined', 'joined', 20_000);
    assert.equal(joined.peers.length, 1, 'the page is already in the room');
    const connected = await send.waitEvent((e) => e.event === 'connected', 'connected', 30_000);
    const pair = checkConnected(connected);
    await waitFor(page, () => [...window.switchboardRoom.peers.values()][0]?.pc.connectionState === 'connected');
    const pageInfo = await pagePeerInfo(page);
    assert.equal(pageInfo.name, 'native-send', 'the page got the CLI\'s --name as meta.name');

    await waitFor(page, () => ['ok', 'mismatch'].includes(document.querySelector('.transfer[data-direction="in"]')?.dataset.status), undefined, 120_000);
    const card = page.locator('.transfer[data-direction="in"]').first();
    assert.equal(await card.getAttribute('data-status'), 'ok');
    assert.equal(await card.getAttribute('data-sha256'), file.sha256, 'the page hashed the same bytes');
    assert.equal(await card.getAttribute('data-size'), String(file.size));
    assert.equal(await card.getAttribute('data-name'), 'from-native.bin');

    // Download it like a user would and hash it here, independent of the page's own hash.
    const [download] = await Promise.all([page.waitForEvent('download'), card.locator('a.download').click()]);
    assert.equal(download.suggestedFilename(), 'from-native.bin');
    assert.equal(sha256File(await download.path()), file.sha256);

    const sent = await send.waitEvent((e) => e.event === 'file-sent', 'file-sent', 30_000);
    assert.equal(sent.name, 'from-native.bin');
    assert.equal(sent.size, file.size);
    assert.equal(sent.sha256, file.sha256);
    assert.equal(sent.ok, true, 'the page acknowledged a matching hash');
    const { code } = await send.waitExit(30_000);
    assert.equal(code, 0, `send exits 0 once every file is acknowledged:\n${send.describe()}`);
    assert.deepEqual(send.badLines, [], 'every stdout line is a JSON event');
    return { pair, send, page: pageInfo };
  } catch (err) {
    throw withCliOutput(err, send);
  } finally {
    await send.kill();
    file.cleanup();
  }
}

test('/chat sends a 3 MB file to `switchboard recv` with a matching SHA-256', { timeout: 180_000 }, async () => {
  const page = await newPage(browser, 'native-chat-to-recv');
  try {
    await chatToRecv({ srv: server, page, label: 'n-recv' });
    await screenshot(page, 'native-chat-to-recv');
    assert.deepEqual(page.errors, []);
  } finally {
    await page.context().close();
  }
});

/** Every file under `dir`, as relative path -> SHA-256. @param {string} dir */
function treeHashes(dir) {
  /** @type {Record<string, string>} */
  const out = {};
  for (const rel of fs.readdirSync(dir, { recursive: true, encoding: 'utf8' })) {
    const full = path.join(dir, rel);
    if (fs.statSync(full).isFile()) out[rel.split(path.sep).join('/')] = sha256File(full);
  }
  return out;
}

test('/chat sends a folder (the folder picker) to `switchboard recv`, which recreates the tree', { timeout: 180_000 }, async () => {
  const page = await newPage(browser, 'native-folder');
  const room = roomName('n-folder');
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'switchboard-folder-'));
  const src = path.join(base, 'album été');
  const out = path.join(base, 'out');
  const files = ['a.txt', 'sub/b.bin', 'sub/deeper/ü 😀.dat', 'sub/empty', 'other/c.bin'];
  files.forEach((rel, i) => {
    fs.mkdirSync(path.dirname(path.join(src, rel)), { recursive: true });
    fs.writeFileSync(path.join(src, rel), rel.endsWith('empty') ? '' : Buffer.alloc(20_000 * (i + 1), i + 1));
  });
  const recv = runCli('recv', ['recv', ...cliArgs(server, room), '--name', 'native-recv', '--out', out, '--count', String(files.length)]);
  try {
    await recv.waitEvent((e) => e.event === 'joined', 'joined', 20_000);
    await page.goto(`${server.origin}/chat?room=${room}&name=browser`);
    await waitFor(page, () => document.body.dataset.chatReady === 'true', undefined, 45_000);
    await recv.waitEvent((e) => e.event === 'connected', 'connected', 30_000);
    await page.setInputFiles('#folder-input', src);
    const { code } = await recv.waitExit(60_000);
    assert.equal(code, 0, `recv exits 0 after ${files.length} files:\n${recv.describe()}`);
    const got = recv.events.filter((e) => e.event === 'file-received');
    assert.equal(got.length, files.length);
    assert.ok(got.every((e) => e.ok), JSON.stringify(got));
    // The tree arrived under the folder's own name, every file intact.
    assert.deepEqual(treeHashes(path.join(out, 'album été')), treeHashes(src));
    assert.deepEqual(fs.readdirSync(out), ['album été']);
    assert.deepEqual(page.errors, []);
  } catch (err) {
    throw withCliOutput(err, recv);
  } finally {
    await recv.kill();
    await page.context().close();
    fs.rmSync(base, { recursive: true, force: true });
  }
});

test('`switchboard send` sends a file to /chat with a matching SHA-256', { timeout: 180_000 }, async () => {
  const page = await newPage(browser, 'native-send-to-chat');
  try {
    await sendToChat({ srv: server, page, label: 'n-send' });
    await screenshot(page, 'native-send-to-chat');
    assert.deepEqual(page.errors, []);
  } finally {
    await page.context().close();
  }
});

test(`a ${BIG_MIB} MiB file both ways between /chat and the CLI, with the page's JS heap under ${HEAP_LIMIT >> 20} MB`, { timeout: 900_000 }, async () => {
  const file = randomFile(BIG_MIB * 1024 * 1024, 'large.bin');
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'switchboard-e2e-big-'));
  const page = await newPage(browser, 'native-large');
  let recv;
  let send;
  try {
    // /chat -> recv: the page reads and hashes the file block by block.
    const room = roomName('n-big');
    recv = runCli('recv', ['recv', ...cliArgs(server, room), '--name', 'native-recv', '--out', out, '--count', '1']);
    await recv.waitEvent((e) => e.event === 'joined', 'joined', 20_000);
    await page.goto(`${server.origin}/chat?room=${room}&name=browser`);
    await waitFor(page, () => document.body.dataset.chatReady === 'true', undefined, 45_000);
    const up = await sampleHeap(page);
    const t0 = Date.now();
    await page.setInputFiles('#file-input', file.path);
    const got = await recv.waitEvent((e) => e.event === 'file-received', 'file-received', 600_000);
    const upSecs = (Date.now() - t0) / 1000;
    const upHeap = await up.stop();
    assert.equal(got.ok, true);
    assert.equal(got.sha256, file.sha256);
    assert.equal(sha256File(got.path), file.sha256);
    assert.equal((await recv.waitExit(30_000)).code, 0, recv.describe());
    fs.rmSync(got.path);

    // send -> /chat: the page writes it to the Origin Private File System
    // as it arrives.
    await page.goto(`${server.origin}/chat?room=${room}-back&name=browser`);
    await waitFor(page, () => document.body.dataset.joined === 'true');
    const down = await sampleHeap(page);
    const t1 = Date.now();
    send = runCli('send', ['send', ...cliArgs(server, `${room}-back`), '--name', 'native-send', file.path]);
    const sent = await send.waitEvent((e) => e.event === 'file-sent', 'file-sent', 600_000);
    const downSecs = (Date.now() - t1) / 1000;
    const downHeap = await down.stop();
    assert.equal(sent.ok, true, 'the page verified the whole file');
    const card = page.locator('.transfer[data-direction="in"]').first();
    assert.equal(await card.getAttribute('data-sha256'), file.sha256);
    // The download is the file on disk: hashed here, independently.
    const [download] = await Promise.all([page.waitForEvent('download'), card.locator('a.download').click()]);
    assert.equal(sha256File(await download.path()), file.sha256);
    assert.equal((await send.waitExit(30_000)).code, 0, send.describe());

    const mb = (x) => (x / 1e6).toFixed(1);
    console.log(`large file ${BIG_MIB} MiB: /chat -> recv ${mb(file.size / upSecs)} MB/s, JS heap max ${mb(upHeap.max)} MB, renderer RSS growth ${mb(upHeap.rssGrowth)} MB (${upHeap.samples} samples); send -> /chat ${mb(file.size / downSecs)} MB/s, JS heap max ${mb(downHeap.max)} MB, renderer RSS growth ${mb(downHeap.rssGrowth)} MB (${downHeap.samples} samples)`);
    assert.ok(upHeap.samples >= 4 && downHeap.samples >= 4, 'the heap was sampled during both transfers');
    assert.ok(upHeap.max < HEAP_LIMIT, `sending page's heap peaked at ${mb(upHeap.max)} MB`);
    assert.ok(downHeap.max < HEAP_LIMIT, `receiving page's heap peaked at ${mb(downHeap.max)} MB`);
    assert.ok(upHeap.rssGrowth < HEAP_LIMIT, `a renderer grew by ${mb(upHeap.rssGrowth)} MB while the page sent`);
    assert.ok(downHeap.rssGrowth < HEAP_LIMIT, `a renderer grew by ${mb(downHeap.rssGrowth)} MB while the page received`);
    assert.deepEqual(page.errors, []);
  } catch (err) {
    throw recv || send ? withCliOutput(err, send ?? recv) : err;
  } finally {
    await recv?.kill();
    await send?.kill();
    await page.context().close();
    file.cleanup();
    fs.rmSync(out, { recursive: true, force: true });
  }
});

for (const [echoFirst, relay] of [[true, false], [false, false], [false, true]]) {
  const order = (echoFirst ? 'echo joins first, the page offers' : 'the page joins first, echo offers') + (relay ? ', relay only through serve\'s TURN' : '');
  test(`/call sees its own fake-camera video come back from \`switchboard echo\` (${order})`, { timeout: 180_000 }, async () => {
    const srv = relay ? relayServer : server;
    const room = roomName('n-echo');
    const page = await newPage(browser, `native-echo-${echoFirst ? 'first' : 'second'}${relay ? '-relay' : ''}`);
    /** @type {ReturnType<typeof runCli> | null} */
    let echo = null;
    const startEcho = async () => {
      echo = runCli('echo', ['echo', ...cliArgs(srv, room), '--name', 'native-echo', ...(relay ? ['--relay-only'] : [])]);
      await echo.waitEvent((e) => e.event === 'joined', 'joined', 20_000);
    };
    try {
      if (echoFirst) await startEcho();
      await page.goto(`${srv.origin}/call?room=${room}&name=browser${relay ? '&relay=1' : ''}`);
      await waitFor(page, () => document.body.dataset.joined === 'true');
      if (!echoFirst) await startEcho();
      const cli = /** @type {ReturnType<typeof runCli>} */ (echo);
      await cli.waitEvent((e) => e.event === 'state' && e.state === 'connected', 'ICE state connected', 30_000);
      if (relay) {
        const c = await cli.waitEvent((e) => e.event === 'connected', 'connected event', 30_000);
        assert.equal(c.pair.local.type, 'relay', `echo's local candidate is a relay: ${JSON.stringify(c.pair)}`);
      }

      // The remote tile (the echo peer) plays decoded video: the page's own camera, sent back.
      await waitFor(page, () => [...document.querySelectorAll('.tile.peer video')].some((v) => v.videoWidth > 0 && v.videoHeight > 0), undefined, 60_000);
      assert.equal(await page.locator('.tile.peer .name').textContent(), 'native-echo');
      const r = await page.evaluate(() => {
        const peer = [...window.switchboardRoom.peers.values()][0];
        const v = /** @type {HTMLVideoElement} */ (document.querySelector('.tile.peer video'));
        return {
          kinds: peer.pc.getReceivers().filter((x) => x.track?.readyState === 'live').map((x) => x.track.kind).sort(),
          width: v.videoWidth,
          time: v.currentTime,
        };
      });
      assert.ok(r.width > 0, `remote video width ${r.width}`);
      assert.deepEqual(r.kinds, ['audio', 'video'], 'live remote audio and video tracks');
      // It keeps playing (frames keep arriving), not a single stray frame.
      await waitFor(page, (t0) => document.querySelector('.tile.peer video').currentTime > t0 + 1, r.time, 30_000);

      // RTP flows back on both tracks: the page receives audio and video bytes from the echo peer.
      const inbound = await page.evaluate(async () => {
        const peer = [...window.switchboardRoom.peers.values()][0];
        /** @type {Record<string, number>} */
        const bytes = { audio: 0, video: 0 };
        (await peer.pc.getStats()).forEach((s) => { if (s.type === 'inbound-rtp') bytes[s.kind] += s.bytesReceived; });
        return bytes;
      });
      assert.ok(inbound.video > 0, `inbound video bytes ${inbound.video}`);
      assert.ok(inbound.audio > 0, `inbound audio bytes ${inbound.audio}`);
      assert.equal(cli.exited, null, 'echo is still running');
      await screenshot(page, `native-echo-${echoFirst ? 'first' : 'second'}${relay ? '-relay' : ''}`);
      assert.deepEqual(page.errors, []);
      assert.deepEqual(cli.badLines, [], 'every stdout line is a JSON event');
    } catch (err) {
      throw echo ? withCliOutput(err, echo) : err;
    } finally {
      await echo?.kill();
      await page.context().close();
    }
  });
}

test('relay only: /chat -> `recv --relay-only` and `send --relay-only` -> /chat through serve\'s TURN', { timeout: 300_000 }, async () => {
  for (const [label, run] of [['n-relay-recv', chatToRecv], ['n-relay-send', sendToChat]]) {
    const page = await newPage(browser, label, { initScript: forceRelayInPage });
    try {
      const r = await run({ srv: relayServer, page, label, cliExtra: ['--relay-only'] });
      assert.equal(r.pair.local.type, 'relay', `${label}: CLI's local candidate is a relay: ${JSON.stringify(r.pair)}`);
      assert.ok(['udp', 'tcp'].includes(r.pair.local.relay_protocol), `relay_protocol ${r.pair.local.relay_protocol}`);
      assert.ok(r.page, 'page peer info');
      assert.equal(r.page.policy, 'relay');
      assert.deepEqual(r.page.localTypes, ['relay'], `${label}: the page gathered only relay candidates`);
      assert.equal(r.page.pair?.local?.candidateType, 'relay', `${label}: the page's selected pair is relayed: ${JSON.stringify(r.page.pair)}`);
      await screenshot(page, label);
      assert.deepEqual(page.errors, []);
    } finally {
      await page.context().close();
    }
  }
  // The TURN server really relayed the data.
  const metrics = await (await fetch(`${relayServer.origin}/metrics`)).text();
  const relayed = [...metrics.matchAll(/^switchboard_turn_relayed_bytes_total\{[^}]*\} (\d+)/gm)].reduce((a, m) => a + Number(m[1]), 0);
  assert.ok(relayed > 2 * 3 * 1024 * 1024, `TURN relayed ${relayed} bytes`);
});

/**
 * Init script: hold every remote *answer* until the test calls
 * `window.releaseAnswer()`. Until the answer is applied the page cannot
 * send a connectivity check, so ICE cannot connect.
 *
 * Why the mDNS test needs this: Chromium emits a `.local` host candidate only
 * after its mDNS responder has registered the name, which takes a few tens of
 * milliseconds. On one machine ICE connects faster than that (the CLI's
 * answer already carries its candidates), and once a pair is writable
 * Chromium ends gathering ("All candidates gathered") and drops the host
 * candidates whose names arrive later ("Discarding candidate because port is
 * already done gathering", in its --enable-logging output), so no host
 * candidate is ever signaled and the CLI sees the page as prflx.
 * A `.local` candidate that is signaled can still lose: it reaches the CLI
 * through the signaling server and then needs an mDNS query (about a
 * millisecond here), while the page's first check needs neither; the CLI
 * reports the address as prflx when the check wins.
 */
function holdAnswerUntilReleased() {
  /** @type {() => void} */
  let release = () => {};
  const released = new Promise((resolve) => { release = () => resolve(undefined); });
  Object.assign(window, { releaseAnswer: () => release() });
  const setRemote = RTCPeerConnection.prototype.setRemoteDescription;
  RTCPeerConnection.prototype.setRemoteDescription = async function (desc, ...rest) {
    if (desc && desc.type === 'answer') await released;
    return setRemote.call(this, desc, ...rest);
  };
}

/** This host's addresses. */
const localAddresses = () => new Set(Object.values(os.networkInterfaces()).flat().map((i) => /** @type {any} */ (i).address.replace(/%.*$/, '')));

test('mDNS: /chat with Chromium\'s default .local host candidates sends a file to `recv`', { timeout: 180_000 }, async (t) => {
  // --use-fake-ui-for-media-stream makes the camera permission "granted" on
  // the secure http://127.0.0.1 origin, and a page with that permission gets
  // raw IPs. Without the flag the page holds no permission, and Chromium
  // hides its host addresses behind <uuid>.local names (its default).
  const mdnsBrowser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS.filter((a) => a !== '--use-fake-ui-for-media-stream'),
  });
  try {
    const page = await newPage(mdnsBrowser, 'native-mdns', { initScript: holdAnswerUntilReleased });
    /**
     * With the answer held: let the page finish gathering, then wait until
     * recv (which gets the candidates as they come) has resolved every
     * `.local` name, and only then let ICE connect.
     * @param {ReturnType<typeof runCli>} recv
     */
    const beforeConnect = async (recv) => {
      await waitFor(page, () => [...(window.switchboardRoom?.peers.values() ?? [])][0]?.pc.iceGatheringState === 'complete', undefined, 30_000);
      const gathered = await page.evaluate(() => [...window.switchboardRoom.peers.values()][0].candidates.local.map((c) => ({ type: c.type, address: c.address })));
      const names = [...new Set(gathered.filter((c) => c.type === 'host').map((c) => c.address))];
      assert.ok(names.length > 0, `the page gathered host candidates: ${JSON.stringify(gathered)}`);
      assert.ok(names.every((n) => /^[0-9a-f-]{36}\.local$/.test(n)), `the page's host candidates are mDNS names: ${names}`);
      // crates/mdns logs each name it resolved (RUST_LOG=mdns=debug below).
      /** @type {Map<string, string[]>} */
      const resolved = await recv.waitFor(() => {
        const found = new Map();
        for (const m of recv.stderr.matchAll(/mdns: resolved name="?([^"\s]+)"? addrs=\[([^\]]*)\]/g)) {
          found.set(m[1], m[2].split(',').map((a) => a.trim()).filter(Boolean));
        }
        return names.every((n) => found.has(n)) && found;
      }, `mDNS resolution of ${names.join(', ')}`, 15_000);
      await page.evaluate(() => /** @type {any} */ (window).releaseAnswer());
      return { names, resolved };
    };
    // No --loopback: the CLI offers this host's real addresses, as on a LAN.
    const r = await chatToRecv({
      srv: server, page, label: 'n-mdns', loopback: false, beforeConnect,
      cliEnv: { RUST_LOG: 'warn,mdns=debug' },
    });
    t.diagnostic(`recv's selected pair: ${JSON.stringify(r.pair)}; resolved: ${JSON.stringify([...r.before.resolved])}`);
    assert.ok(r.page && r.page.hostAddresses.length > 0, 'the page gathered host candidates');
    assert.ok(r.page.hostAddresses.every((a) => /\.local$/.test(a)), `the page's host candidates are mDNS names: ${r.page.hostAddresses}`);
    assert.equal(r.page.policy, 'all');
    // The page never revealed a raw host address, so a host-typed remote
    // candidate at recv is one it resolved from a .local name.
    const ours = localAddresses();
    const addrs = [...r.before.resolved.values()].flat();
    assert.ok(addrs.length > 0 && addrs.every((a) => ours.has(a)), `the names resolve to this host's addresses: ${addrs}`);
    assert.equal(r.pair.remote.type, 'host', `recv reached the page at a resolved host candidate: ${JSON.stringify(r.pair)}`);
    const remoteIp = r.pair.remote.address.replace(/:\d+$/, '').replace(/^\[|\]$/g, '');
    assert.ok(addrs.includes(remoteIp), `recv's remote ${remoteIp} is a resolved address (${addrs})`);
    assert.deepEqual(page.errors, []);
  } finally {
    await mdnsBrowser.close();
  }
});
