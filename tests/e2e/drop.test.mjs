// The /drop page and link pairing end to end: Chromium to Chromium, the
// CLI's `send` link opened in Chromium, Chromium's link taken by `recv`,
// a link with the wrong key, and a signaling path that rewrites the DTLS
// fingerprints (./ws-rewrite.mjs), which both sides must catch before a
// byte of the file moves. Files are small: this is about who may get
// them, not about speed.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startServer, launchBrowser, newPage, screenshot, waitFor, randomFile, runCli, withCliOutput } from './helpers.mjs';
import { startRewriteProxy, rewriteFingerprints, FAKE_FINGERPRINT } from './ws-rewrite.mjs';

let server;
let proxy;
let browser;

before(async () => {
  server = await startServer();
  proxy = await startRewriteProxy(server.port);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await proxy?.close();
  await server?.stop();
});

const sha256File = (file) => createHash('sha256').update(fs.readFileSync(file)).digest('hex');
const tmpOut = () => fs.mkdtempSync(path.join(os.tmpdir(), 'switchboard-drop-out-'));
const cli = ['--loopback', '--json', '--timeout', '20'];

/** A /drop sender page with `files` picked; resolves to it and its link. */
async function sender(origin, files, name = 'sender') {
  const page = await newPage(browser, name);
  await page.goto(`${origin}/drop`);
  await waitFor(page, () => document.body.dataset.state === 'pick');
  await page.setInputFiles('#file-input', files.map((f) => f.path));
  await waitFor(page, () => document.body.dataset.state === 'waiting');
  const link = await page.inputValue('#link');
  assert.match(link, new RegExp(`^${origin}/drop#room=pair-[0-9]{1,3}&key=[A-Za-z0-9_-]{22}$`));
  return { page, link };
}

/** Bytes made the same way in node and in the page. */
const pattern = (n) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + (i >> 11)) & 255);

/**
 * A /drop sender page that gets a file of `size` pattern bytes dropped
 * onto it (a DataTransfer built in the page); resolves to it and its link.
 */
async function senderByDrop(origin, fileName, size) {
  const page = await newPage(browser, 'drop-sender');
  await page.goto(`${origin}/drop`);
  await waitFor(page, () => document.body.dataset.state === 'pick');
  await page.evaluate(({ fileName, size, src }) => {
    const bytes = new Function(`return ${src}`)()(size);
    const dt = new DataTransfer();
    dt.items.add(new File([bytes], fileName, { type: 'application/octet-stream' }));
    document.querySelector('#dropzone').dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
  }, { fileName, size, src: pattern.toString() });
  await waitFor(page, () => document.body.dataset.state === 'waiting');
  return { page, link: await page.inputValue('#link') };
}

/** What a receiver page shows: cards, their states and hashes, download links. */
const shown = (page) => page.evaluate(() => ({
  state: document.body.dataset.state,
  error: document.body.dataset.error ?? null,
  verified: document.body.dataset.verified === 'true',
  cards: [...document.querySelectorAll('.transfer')].map((c) => ({ name: c.dataset.name, state: c.dataset.state, sha256: c.dataset.sha256 })),
  downloads: document.querySelectorAll('a.download').length,
}));

/** SHA-256 of what each download link of the page offers (hashed again, from the Blob). */
const offered = (page) => page.evaluate(async () => {
  const { sha256HexOf } = await import('/sdk/sha256.js');
  return Promise.all([...document.querySelectorAll('a.download')].map(async (a) => {
    const buf = await (await fetch(/** @type {HTMLAnchorElement} */ (a).href)).arrayBuffer();
    return { name: a.getAttribute('download'), sha256: sha256HexOf(buf) };
  }));
});

/** What a page served over plain http from another host lacks. */
const NO_WEBCRYPTO = "Object.defineProperty(globalThis.crypto, 'subtle', { value: undefined, configurable: true });";

/** The link with its key changed in the first character (another 128-bit key). */
const wrongKey = (link) => link.replace(/key=(.)/, (_, c) => `key=${c === 'A' ? 'B' : 'A'}`);

test('Chromium /drop to Chromium /drop by link: both files arrive, both sides verified', { timeout: 60_000 }, async () => {
  const files = [randomFile(2 * 1024 * 1024 + 123, 'photo.bin'), randomFile(70_000, 'notes.txt')];
  const { page: up, link } = await sender(server.origin, files);
  // The receiver pairs without WebCrypto (the sha256.js HMAC), the sender with it.
  const down = await newPage(browser, 'receiver', { initScript: NO_WEBCRYPTO });
  try {
    await down.goto(link);
    assert.equal(await down.evaluate(() => globalThis.crypto.subtle), undefined);
    await waitFor(down, () => document.querySelectorAll('.transfer[data-state="verified"]').length === 2);
    await waitFor(up, () => document.body.dataset.state === 'done');
    await waitFor(down, () => document.body.dataset.state === 'done');
    const got = await shown(down);
    assert.equal(got.verified, true);
    assert.deepEqual(got.cards.map((c) => [c.name, c.sha256]), files.map((f) => [path.basename(f.path), f.sha256]));
    assert.deepEqual(await offered(down), files.map((f) => ({ name: path.basename(f.path), sha256: f.sha256 })));
    const sent = await shown(up);
    assert.deepEqual(sent.cards.map((c) => [c.state, c.sha256]), files.map((f) => ['verified', f.sha256]));
    assert.match(await up.textContent('#overall-text'), /2 of 2 files verified/);
    await screenshot(down, 'drop-receiver');
    await screenshot(up, 'drop-sender');
    assert.deepEqual([...up.errors, ...down.errors], []);
  } finally {
    await up.context().close();
    await down.context().close();
    for (const f of files) f.cleanup();
  }
});

test('the link of `switchboard send` opens in Chromium: the file arrives verified', { timeout: 60_000 }, async () => {
  const file = randomFile(1024 * 1024 + 7, 'from-cli.bin');
  const send = runCli('send', ['send', '--server', server.origin, ...cli, file.path]);
  const page = await newPage(browser, 'receiver');
  try {
    const { link } = await send.waitEvent((e) => e.event === 'code', 'code', 20_000);
    assert.ok(link.startsWith(`${server.origin}/drop#room=pair-`), link);
    await page.goto(link);
    await waitFor(page, () => document.querySelector('.transfer[data-state="verified"]'));
    assert.deepEqual(await offered(page), [{ name: 'from-cli.bin', sha256: file.sha256 }]);
    const sent = await send.waitEvent((e) => e.event === 'file-sent', 'file-sent', 20_000);
    assert.equal(sent.ok, true);
    assert.equal(sent.sha256, file.sha256);
    assert.equal((await send.waitExit(20_000)).code, 0);
    await waitFor(page, () => document.body.dataset.state === 'done');
  } catch (err) {
    throw withCliOutput(err, send);
  } finally {
    await send.kill();
    await page.context().close();
    file.cleanup();
  }
});

test('a /drop link taken by `switchboard recv`: the file is written, verified on both sides', { timeout: 60_000 }, async () => {
  // Dragged onto the page this time.
  const size = 1536 * 1024;
  const file = { sha256: createHash('sha256').update(pattern(size)).digest('hex'), cleanup() {} };
  const out = tmpOut();
  const { page, link } = await senderByDrop(server.origin, 'to-cli.bin', size);
  const recv = runCli('recv', ['recv', link, ...cli, '--out', out, '--count', '1']);
  try {
    const got = await recv.waitEvent((e) => e.event === 'file-received', 'file-received', 30_000);
    assert.equal(got.ok, true);
    assert.equal(got.sha256, file.sha256);
    assert.ok(recv.events.some((e) => e.event === 'paired'));
    assert.equal((await recv.waitExit(20_000)).code, 0);
    assert.equal(sha256File(path.join(out, 'to-cli.bin')), file.sha256);
    await waitFor(page, () => document.body.dataset.state === 'done');
    assert.equal(await page.getAttribute('.transfer', 'data-state'), 'verified');
  } catch (err) {
    throw withCliOutput(err, recv);
  } finally {
    await recv.kill();
    await page.context().close();
    fs.rmSync(out, { recursive: true, force: true });
    file.cleanup();
  }
});

test('a link with the wrong key fails on both sides, CLI or page, and nothing is sent, offered or written', { timeout: 60_000 }, async () => {
  const file = randomFile(300_000, 'secret.bin');
  // The CLI's link, opened with another key.
  const send = runCli('send', ['send', '--server', server.origin, ...cli, file.path]);
  const page = await newPage(browser, 'wrong-receiver');
  try {
    const { link } = await send.waitEvent((e) => e.event === 'code', 'code', 20_000);
    await page.goto(wrongKey(link));
    assert.equal((await send.waitExit(20_000)).code, 7);
    assert.equal(send.events.find((e) => e.event === 'error')?.code, 'wrong-code');
    assert.ok(!send.events.some((e) => e.event === 'file-sent'));
    await waitFor(page, () => document.body.dataset.state === 'error');
    const got = await shown(page);
    assert.deepEqual({ error: got.error, verified: got.verified, cards: got.cards, downloads: got.downloads },
      { error: 'wrong-code', verified: false, cards: [], downloads: 0 });
    assert.match(await page.textContent('#status'), /Wrong link key/);
  } catch (err) {
    throw withCliOutput(err, send);
  } finally {
    await send.kill();
    await page.context().close();
  }
  // The page's link, taken by recv with another key.
  const out = tmpOut();
  const { page: up, link } = await sender(server.origin, [file], 'wrong-sender');
  const recv = runCli('recv', ['recv', wrongKey(link), ...cli, '--out', out, '--count', '1']);
  try {
    assert.equal((await recv.waitExit(20_000)).code, 7);
    assert.equal(recv.events.find((e) => e.event === 'error')?.code, 'wrong-code');
    assert.deepEqual(fs.readdirSync(out), []);
    await waitFor(up, () => document.body.dataset.state === 'error');
    const got = await shown(up);
    assert.equal(got.error, 'wrong-code');
    assert.deepEqual(got.cards.map((c) => c.state), ['failed']);
    assert.equal(got.cards[0].sha256, undefined, 'the file was never read for sending');
  } catch (err) {
    throw withCliOutput(err, recv);
  } finally {
    await recv.kill();
    await up.context().close();
    fs.rmSync(out, { recursive: true, force: true });
    file.cleanup();
  }
});

test('rewritten fingerprints are caught page to page, CLI to page and page to CLI: both sides say tampered', { timeout: 60_000 }, async () => {
  assert.equal(rewriteFingerprints('{"sdp":"a=fingerprint:sha-256 AB:01\\r\\na=x"}'), `{"sdp":"a=fingerprint:sha-256 ${FAKE_FINGERPRINT}\\r\\na=x"}`);
  const file = randomFile(200_000, 'intercepted.bin');
  const before = proxy.rewritten;
  // Both pages load and signal through the proxy, as if it were the server.
  const { page: up, link } = await sender(proxy.origin, [file], 'mitm-sender');
  const down = await newPage(browser, 'mitm-receiver');
  try {
    await down.goto(link);
    for (const p of [up, down]) {
      await waitFor(p, () => document.body.dataset.state === 'error');
      const got = await shown(p);
      assert.equal(got.error, 'tampered', p.label);
      assert.equal(got.verified, false);
      assert.equal(got.downloads, 0);
      assert.match(await p.textContent('#status'), /changed the DTLS fingerprints/);
    }
    assert.deepEqual((await shown(down)).cards, []);
    await screenshot(down, 'drop-tampered');
  } finally {
    await up.context().close();
    await down.context().close();
  }
  assert.ok(proxy.rewritten - before >= 2, 'the offer and the answer went through the rewrite');
  // The CLI sending through the proxy; its link leads the page there too.
  const send = runCli('send', ['send', '--server', proxy.origin, ...cli, file.path]);
  const page = await newPage(browser, 'mitm-page');
  try {
    const { link: cliLink } = await send.waitEvent((e) => e.event === 'code', 'code', 20_000);
    assert.ok(cliLink.startsWith(`${proxy.origin}/drop#`), cliLink);
    await page.goto(cliLink);
    assert.equal((await send.waitExit(20_000)).code, 7);
    assert.equal(send.events.find((e) => e.event === 'error')?.code, 'tampered');
    assert.ok(!send.events.some((e) => e.event === 'file-sent'));
    await waitFor(page, () => document.body.dataset.state === 'error');
    const got = await shown(page);
    assert.deepEqual({ error: got.error, cards: got.cards, downloads: got.downloads }, { error: 'tampered', cards: [], downloads: 0 });
  } catch (err) {
    throw withCliOutput(err, send);
  } finally {
    await send.kill();
    await page.context().close();
  }
  // The page sending through the proxy, its link taken by recv.
  const out = tmpOut();
  const { page: up2, link: pageLink } = await sender(proxy.origin, [file], 'mitm-sender-2');
  const recv = runCli('recv', ['recv', pageLink, ...cli, '--out', out, '--count', '1']);
  try {
    assert.equal((await recv.waitExit(20_000)).code, 7);
    assert.equal(recv.events.find((e) => e.event === 'error')?.code, 'tampered');
    assert.deepEqual(fs.readdirSync(out), []);
    await waitFor(up2, () => document.body.dataset.state === 'error');
    assert.equal((await shown(up2)).error, 'tampered');
  } catch (err) {
    throw withCliOutput(err, recv);
  } finally {
    await recv.kill();
    await up2.context().close();
    fs.rmSync(out, { recursive: true, force: true });
    file.cleanup();
  }
});
