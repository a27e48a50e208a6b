// The reconnect tests' TCP proxy (proxy.mjs) itself: a cut is a reset, a
// clean close stays clean (a server's last bytes arrive), and every socket
// it touches really closes, so the test process can exit.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startProxy, kill } from './proxy.mjs';

/** A TCP server on 127.0.0.1 running `onSocket` for each connection. */
async function listen(onSocket) {
  const server = net.createServer((s) => {
    s.on('error', () => {});
    onSocket(s);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return server;
}

/** Connect to `port`; resolves with what arrived and how the socket ended. */
function converse(port, send) {
  return new Promise((resolve) => {
    const got = [];
    let error = null;
    const c = net.connect(port, '127.0.0.1', () => send(c));
    c.on('data', (d) => got.push(d));
    c.on('error', (err) => { error = err.code; });
    c.on('close', () => resolve({ data: Buffer.concat(got).toString(), error }));
  });
}

const closedWithin = (sock, ms) => new Promise((resolve) => {
  const timer = setTimeout(() => resolve(false), ms);
  sock.once('close', () => { clearTimeout(timer); resolve(true); });
});

test('kill() right after end() still closes the socket (Node refuses a reset while a shutdown is pending)', async () => {
  const server = await listen((s) => s.resume());
  try {
    const c = net.connect(server.address().port, '127.0.0.1');
    await new Promise((resolve) => c.once('connect', resolve));
    c.on('error', () => {});
    c.end();
    // Same tick as end(): resetAndDestroy() here would leave the handle
    // open for good, and this test's process spinning at exit.
    kill(c);
    assert.equal(await closedWithin(c, 2000), true, "the socket emitted 'close'");
  } finally {
    server.close();
  }
});

test('a server that writes its last bytes and closes: they arrive, the close is clean, nothing stays open', async () => {
  const server = await listen((s) => s.once('data', () => s.end('goodbye')));
  const proxy = await startProxy(server.address().port);
  try {
    for (let i = 0; i < 50; i++) {
      const r = await converse(proxy.port, (c) => c.write('hi'));
      assert.deepEqual(r, { data: 'goodbye', error: null }, `connection ${i}`);
    }
    assert.equal(proxy.accepted, 50);
    // The proxy's own legs close a moment after the client's.
    for (let t = 0; proxy.open > 0 && t < 100; t++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(proxy.open, 0, 'every forwarded connection closed');
  } finally {
    await proxy.close();
    server.close();
  }
});

test('a client that ends first gets the server\'s reply and a clean close', async () => {
  const server = await listen((s) => {
    const got = [];
    s.on('data', (d) => got.push(d));
    s.on('end', () => s.end(`echo ${Buffer.concat(got)}`));
  });
  const proxy = await startProxy(server.address().port);
  try {
    const r = await converse(proxy.port, (c) => c.end('ping'));
    assert.deepEqual(r, { data: 'echo ping', error: null });
  } finally {
    await proxy.close();
    server.close();
  }
});

test('cut() resets both sides; with block, new connections are reset until unblock()', async () => {
  let upstreamError = null;
  const server = await listen((s) => {
    s.on('error', (err) => { upstreamError = err.code; });
    s.resume();
  });
  const proxy = await startProxy(server.address().port);
  try {
    const first = converse(proxy.port, (c) => c.write('hi'));
    while (proxy.open === 0) await new Promise((r) => setTimeout(r, 10));
    assert.equal(proxy.cut({ block: true }), 1);
    assert.equal((await first).error, 'ECONNRESET');
    assert.equal((await converse(proxy.port, () => {})).error, 'ECONNRESET');
    assert.equal(proxy.refused, 1);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(upstreamError, 'ECONNRESET', 'the server saw a reset too');
    proxy.unblock();
    const server2 = converse(proxy.port, (c) => c.end());
    assert.equal((await server2).error, null);
    assert.equal(proxy.accepted, 2);
  } finally {
    await proxy.close();
    server.close();
  }
});
