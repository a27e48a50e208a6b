// A TCP proxy on 127.0.0.1 for the reconnect tests: the browsers' signaling
// WebSocket goes through it so that a test can kill the connection the way
// a network does (RST, no close frame), or silence it (bytes stop, nothing
// closes), and hold new connections off for a while. It forwards bytes
// only; it knows nothing of HTTP or WebSocket.

import net from 'node:net';

/**
 * Start a proxy to 127.0.0.1:`targetPort` on a free port.
 * @param {number} targetPort
 */
export async function startProxy(targetPort) {
  /** @type {Set<{client: net.Socket, upstream: net.Socket}>} */
  const pairs = new Set();
  /** Silenced connections, kept open until close(). @type {Set<{client: net.Socket, upstream: net.Socket}>} */
  const frozen = new Set();
  let target = targetPort;
  let blocked = false;
  let accepted = 0;
  let refused = 0;

  const server = net.createServer((client) => {
    if (blocked) {
      // Like a network that is down: the connection dies at once.
      refused += 1;
      client.resetAndDestroy();
      return;
    }
    accepted += 1;
    client.pause();
    const upstream = net.connect({ host: '127.0.0.1', port: target });
    const pair = { client, upstream };
    pairs.add(pair);
    const end = () => {
      pairs.delete(pair);
      frozen.delete(pair);
      if (!client.destroyed) client.resetAndDestroy();
      if (!upstream.destroyed) upstream.resetAndDestroy();
    };
    upstream.on('connect', () => {
      client.pipe(upstream);
      upstream.pipe(client);
      client.resume();
    });
    client.on('error', end);
    upstream.on('error', end);
    client.on('close', end);
    upstream.on('close', end);
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = /** @type {net.AddressInfo} */ (server.address());

  return {
    port,
    wsUrl: `ws://127.0.0.1:${port}/v1/ws`,
    /** Connections accepted and forwarded so far. */
    get accepted() { return accepted; },
    /** Connections reset at once while blocked. */
    get refused() { return refused; },
    /** Open forwarded connections. */
    get open() { return pairs.size; },
    /** Send new connections to another port (a restarted server). @param {number} p */
    retarget(p) { target = p; },
    /**
     * Reset every forwarded connection on both sides (no close frame, no
     * FIN: what a dropped network looks like) and, with `block`, reset new
     * ones too until unblock().
     * @param {{block?: boolean}} [opts]
     * @returns {number} how many connections were cut
     */
    cut(opts = {}) {
      if (opts.block) blocked = true;
      const n = pairs.size;
      for (const { client, upstream } of [...pairs]) {
        client.resetAndDestroy();
        upstream.resetAndDestroy();
      }
      pairs.clear();
      return n;
    },
    unblock() { blocked = false; },
    /**
     * Stop forwarding on every open connection without closing anything,
     * like a network that silently went away. New connections work.
     * @returns {number} how many connections were silenced
     */
    freeze() {
      const n = pairs.size;
      for (const pair of [...pairs]) {
        pair.client.unpipe(pair.upstream);
        pair.upstream.unpipe(pair.client);
        pair.client.pause();
        pair.upstream.pause();
        pairs.delete(pair);
        frozen.add(pair);
      }
      return n;
    },
    async close() {
      this.cut();
      for (const { client, upstream } of frozen) {
        client.resetAndDestroy();
        upstream.resetAndDestroy();
      }
      frozen.clear();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
