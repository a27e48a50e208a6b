// A TCP proxy on 127.0.0.1 for the reconnect tests: the browsers' signaling
// WebSocket goes through it so that a test can kill the connection the way
// a network does (RST, no close frame), or silence it (bytes stop, nothing
// closes), and hold new connections off for a while. It forwards bytes
// only; it knows nothing of HTTP or WebSocket.

import net from 'node:net';

/**
 * Reset `sock` (RST, like a network failure) unless it is already closing
 * gracefully, in which case it is just destroyed.
 *
 * Why not always resetAndDestroy(): once end() has queued a shutdown, libuv
 * refuses the reset (uv_tcp_close_reset returns EINVAL while a shutdown is
 * pending) but Node 20 still marks the handle as closing. The handle then
 * never closes: no 'close' event, and at exit the process spins at 100% CPU
 * in Environment::CleanupHandles waiting for it. A socket that has ended
 * has sent or is sending its FIN, so there is nothing left to reset.
 * @param {net.Socket} sock
 */
export function kill(sock) {
  if (sock.destroyed) return;
  if (sock.writableEnded) sock.destroy();
  else sock.resetAndDestroy();
}

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

  /** Sockets whose peer closed cleanly, left to finish their own close. @type {Set<net.Socket>} */
  const lingering = new Set();

  // Half-open allowed on both legs: a FIN from one end is passed on (by
  // the pipe) and the other direction keeps flowing, as on a real path.
  const server = net.createServer({ allowHalfOpen: true }, (client) => {
    if (blocked) {
      // Like a network that is down: the connection dies at once.
      refused += 1;
      kill(client);
      return;
    }
    accepted += 1;
    client.pause();
    const upstream = net.connect({ host: '127.0.0.1', port: target, allowHalfOpen: true });
    const pair = { client, upstream };
    pairs.add(pair);
    const forget = () => {
      pairs.delete(pair);
      frozen.delete(pair);
    };
    // A reset or error on one side resets the other, as a broken path would.
    const broken = () => {
      forget();
      kill(client);
      kill(upstream);
    };
    // A clean close on one side has already ended the other through the
    // pipe: let it flush what it holds (a WebSocket close frame, say) and
    // close when its own peer does, so that a server's close code arrives.
    const closed = (other) => (hadError) => {
      if (hadError) return broken();
      forget();
      if (other.destroyed) return;
      lingering.add(other);
      other.once('close', () => lingering.delete(other));
      other.end();
    };
    upstream.on('connect', () => {
      client.pipe(upstream);
      upstream.pipe(client);
      client.resume();
    });
    client.on('error', broken);
    upstream.on('error', broken);
    client.on('close', closed(upstream));
    upstream.on('close', closed(client));
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
        kill(client);
        kill(upstream);
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
        kill(client);
        kill(upstream);
      }
      frozen.clear();
      for (const sock of lingering) kill(sock);
      lingering.clear();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
