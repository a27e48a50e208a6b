// `serve --tls-cert/--tls-key` in Chromium: /call over https and wss with a
// throw-away CA (openssl) that Chromium trusts through an NSS database made
// with certutil (Debian's libnss3-tools), not --ignore-certificate-errors.
// A browser without that database refuses the certificate.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startServer, launchBrowser, newPage, screenshot, waitFor, roomName } from './helpers.mjs';

let dir;
let server;
let browser;

const run = (cmd, args, cwd) => execFileSync(cmd, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });

/** A CA and a leaf for localhost / 127.0.0.1 in `dir`. */
function makeCertificates(dir) {
  run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=switchboard e2e CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], dir);
  run('openssl', ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', 'key.pem', '-out', 'leaf.csr', '-subj', '/CN=localhost'], dir);
  fs.writeFileSync(path.join(dir, 'leaf.ext'),
    'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n');
  run('openssl', ['x509', '-req', '-in', 'leaf.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial',
    '-out', 'cert.pem', '-days', '2', '-extfile', 'leaf.ext'], dir);
}

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'switchboard-e2e-tls-'));
  makeCertificates(dir);
  // Chromium on Linux trusts what $HOME/.pki/nssdb trusts.
  const home = path.join(dir, 'home');
  const db = path.join(home, '.pki', 'nssdb');
  fs.mkdirSync(db, { recursive: true });
  run('certutil', ['-d', `sql:${db}`, '-N', '--empty-password']);
  run('certutil', ['-d', `sql:${db}`, '-A', '-t', 'C,,', '-n', 'switchboard-e2e-ca', '-i', path.join(dir, 'ca.pem')]);
  server = await startServer(
    // TURN over TLS would take 0.0.0.0:5349 by default: keep it on loopback.
    ['--tls-cert', path.join(dir, 'cert.pem'), '--tls-key', path.join(dir, 'key.pem'), '--turn-tls-listen', '127.0.0.1:0'],
    { tlsCa: fs.readFileSync(path.join(dir, 'ca.pem'), 'utf8') },
  );
  browser = await launchBrowser({ home });
});

after(async () => {
  await browser?.close();
  await server?.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

test('/call over https: two browsers trusting the test CA get each other\'s video', { timeout: 120_000 }, async () => {
  assert.match(server.origin, /^https:/);
  const room = roomName('tls');
  const alice = await newPage(browser, 'tls-alice');
  const bob = await newPage(browser, 'tls-bob');
  for (const [page, name] of [[alice, 'alice'], [bob, 'bob']]) {
    const res = await page.goto(`${server.origin}/call?room=${room}&name=${name}`);
    assert.equal(res?.status(), 200);
    await waitFor(page, () => document.body.dataset.joined === 'true');
  }
  for (const page of [alice, bob]) {
    await waitFor(page, () =>
      [...document.querySelectorAll('.tile.peer video')].some((v) => v.videoWidth > 0), undefined, 45_000);
  }
  // The page came over TLS (its signaling then goes to wss on the same origin).
  const seen = await alice.evaluate(() => ({
    secure: window.isSecureContext,
    protocol: location.protocol,
    subtle: !!(globalThis.crypto && crypto.subtle),
  }));
  assert.equal(seen.protocol, 'https:');
  assert.ok(seen.secure && seen.subtle, JSON.stringify(seen));
  await screenshot(alice, 'https-call-alice');
  assert.deepEqual(alice.errors, []);
  assert.deepEqual(bob.errors, []);
});

test('a browser without the CA refuses the certificate', { timeout: 60_000 }, async () => {
  const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'switchboard-e2e-nohome-'));
  const stranger = await launchBrowser({ home: empty });
  try {
    const page = await newPage(stranger, 'tls-stranger');
    await assert.rejects(page.goto(`${server.origin}/call?room=x`), /ERR_CERT_AUTHORITY_INVALID/);
  } finally {
    await stranger.close();
    fs.rmSync(empty, { recursive: true, force: true });
  }
});
