// Chromium loads /call over https and relays it through switchboard's TURN
// over TLS only (`turns:`), trusting a throw-away CA through an NSS database made with
// certutil (Debian libnss3-tools), not through --ignore-certificate-errors.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { startServer, newPage, waitFor, roomName, CHROMIUM, CHROMIUM_ARGS } from './helpers.mjs';

let dir;
let browser;

/** A CA and a server certificate for 127.0.0.1 and localhost, by openssl. */
function makeCerts(d) {
  const run = (...args) => execFileSync('openssl', args, { cwd: d, stdio: 'pipe' });
  run('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=switchboard turns test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign');
  run('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', 'key.pem', '-out', 'srv.csr', '-subj', '/CN=localhost');
  fs.writeFileSync(path.join(d, 'ext.cnf'),
    'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
  run('x509', '-req', '-in', 'srv.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial',
    '-out', 'cert.pem', '-days', '2', '-extfile', 'ext.cnf');
}

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sb-turns-'));
  makeCerts(dir);
  // Chromium on Linux trusts what $HOME/.pki/nssdb says.
  const db = path.join(dir, 'home', '.pki', 'nssdb');
  fs.mkdirSync(db, { recursive: true });
  execFileSync('certutil', ['-N', '-d', `sql:${db}`, '--empty-password']);
  execFileSync('certutil', ['-A', '-d', `sql:${db}`, '-n', 'switchboard-test-ca', '-t', 'C,,',
    '-i', path.join(dir, 'ca.pem')]);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    env: { ...process.env, HOME: path.join(dir, 'home') },
  });
});

after(async () => {
  await browser?.close();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

/** Evaluates `fn` in the page until it returns something, for 60 s. */
async function poll(page, fn) {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const v = await page.evaluate(fn);
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`[${page.label ?? 'page'}] no selected relay pair within 60 s`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** Only the turns: URLs of the page's iceServers, relay-only. */
function turnsOnlyInPage() {
  const Native = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends Native {
    constructor(config = {}, ...rest) {
      const iceServers = (config.iceServers || [])
        .map((s) => ({ ...s, urls: [].concat(s.urls).filter((u) => u.startsWith('turns:')) }))
        .filter((s) => s.urls.length > 0);
      super({ ...config, iceServers, iceTransportPolicy: 'relay' }, ...rest);
    }
  };
}

test('/call relays through turns: with relayProtocol tls on both sides', { timeout: 120_000 }, async () => {
  // The certificate serves /call over https too, so the page is a secure
  // context on the same name as the turns: URL.
  const srv = await startServer(['--allow-peer', '127.0.0.0/8',
    '--tls-cert', path.join(dir, 'cert.pem'), '--tls-key', path.join(dir, 'key.pem'),
    '--turn-tls-listen', '127.0.0.1:0'], { tlsCa: fs.readFileSync(path.join(dir, 'ca.pem'), 'utf8') });
  const room = roomName('turns');
  const a = await newPage(browser, 'turns-a', { initScript: turnsOnlyInPage });
  const b = await newPage(browser, 'turns-b', { initScript: turnsOnlyInPage });
  try {
    for (const [page, name] of [[a, 'a'], [b, 'b']]) {
      await page.goto(`${srv.origin}/call?room=${room}&relay=1&name=${name}`);
      await waitFor(page, () => document.body.dataset.joined === 'true');
    }
    for (const page of [a, b]) {
      const r = await poll(page, async () => {
        const peer = [...(window.switchboardRoom?.peers.values() || [])][0];
        if (!peer) return null;
        const stats = await peer.pc.getStats();
        let pair = null;
        stats.forEach((s) => {
          if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s;
        });
        if (!pair) return null;
        const local = stats.get(pair.localCandidateId);
        const remote = stats.get(pair.remoteCandidateId);
        const urls = peer.pc.getConfiguration().iceServers.flatMap((s) => [].concat(s.urls));
        return { local: local.candidateType, remote: remote.candidateType,
          relayProtocol: local.relayProtocol, url: local.url, urls };
      });
      assert.ok(r.urls.length > 0 && r.urls.every((u) => u.startsWith('turns:')), JSON.stringify(r));
      assert.equal(r.local, 'relay', JSON.stringify(r));
      assert.equal(r.remote, 'relay', JSON.stringify(r));
      assert.equal(r.relayProtocol, 'tls', JSON.stringify(r));
    }
    assert.deepEqual(a.errors, []);
    assert.deepEqual(b.errors, []);
  } finally {
    await a.context().close();
    await b.context().close();
    await srv.stop();
  }
});
