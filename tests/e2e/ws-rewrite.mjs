// A man in the middle for the pairing tests: an HTTP proxy on 127.0.0.1 to
// a switchboard server that passes pages through as they are and, on a
// WebSocket, replaces the hex of every `a=fingerprint:sha-256` line in the
// text frames it relays, both ways: what a signaling server that wants to
// put its own DTLS endpoints between two peers would do. It speaks just
// enough RFC 6455 for that (no extensions: it strips the offer of
// permessage-deflate, so frames stay readable).

import net from 'node:net';
import { randomBytes } from 'node:crypto';

/** The fingerprint the proxy puts in place of every real one. */
export const FAKE_FINGERPRINT = Array(32).fill('DE').join(':');

const TAG = 'a=fingerprint:sha-256 ';

/**
 * `text` with the hex after every TAG replaced, or null when it has none.
 * @param {string} text
 */
export function rewriteFingerprints(text) {
  if (!text.includes(TAG)) return null;
  let out = '';
  let rest = text;
  for (let i = rest.indexOf(TAG); i >= 0; i = rest.indexOf(TAG)) {
    out += rest.slice(0, i + TAG.length) + FAKE_FINGERPRINT;
    rest = rest.slice(i + TAG.length).replace(/^[0-9A-Fa-f:]*/, '');
  }
  return out + rest;
}

/**
 * Splits a byte stream into WebSocket frames, handing each to `onFrame`
 * whole: `{fin, opcode, masked, payload}` (unmasked) and its raw bytes.
 * @param {(f: {fin: boolean, opcode: number, masked: boolean, payload: Buffer}, raw: Buffer) => void} onFrame
 */
function frameReader(onFrame) {
  let buf = Buffer.alloc(0);
  return (/** @type {Buffer} */ chunk) => {
    buf = Buffer.concat([buf, chunk]);
    for (;;) {
      if (buf.length < 2) return;
      const fin = (buf[0] & 0x80) !== 0;
      const opcode = buf[0] & 0x0f;
      const masked = (buf[1] & 0x80) !== 0;
      let len = buf[1] & 0x7f;
      let at = 2;
      if (len === 126) {
        if (buf.length < 4) return;
        len = buf.readUInt16BE(2);
        at = 4;
      } else if (len === 127) {
        if (buf.length < 10) return;
        len = Number(buf.readBigUInt64BE(2));
        at = 10;
      }
      const maskAt = at;
      if (masked) at += 4;
      if (buf.length < at + len) return;
      const payload = Buffer.from(buf.subarray(at, at + len));
      if (masked) for (let i = 0; i < len; i++) payload[i] ^= buf[maskAt + (i & 3)];
      const raw = buf.subarray(0, at + len);
      buf = buf.subarray(at + len);
      onFrame({ fin, opcode, masked, payload }, raw);
    }
  };
}

/** One frame, masked with a fresh key when `masked` (client to server). */
function encodeFrame(fin, opcode, masked, payload) {
  const len = payload.length;
  const head = [((fin ? 0x80 : 0) | opcode)];
  const m = masked ? 0x80 : 0;
  if (len < 126) head.push(m | len);
  else if (len < 65536) head.push(m | 126, len >> 8, len & 0xff);
  else {
    head.push(m | 127);
    const b = Buffer.alloc(8);
    b.writeBigUInt64BE(BigInt(len));
    head.push(...b);
  }
  if (!masked) return Buffer.concat([Buffer.from(head), payload]);
  const key = randomBytes(4);
  const body = Buffer.from(payload);
  for (let i = 0; i < len; i++) body[i] ^= key[i & 3];
  return Buffer.concat([Buffer.from(head), key, body]);
}

/**
 * Reads one HTTP head (up to the blank line) from `sock`; resolves to it
 * and whatever came after it.
 * @param {net.Socket} sock
 * @returns {Promise<{head: string, rest: Buffer}>}
 */
function readHead(sock) {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const onData = (d) => {
      buf = Buffer.concat([buf, d]);
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) {
        if (buf.length > 65536) done(() => reject(new Error('HTTP head too long')));
        return;
      }
      done(() => resolve({ head: buf.subarray(0, end).toString('latin1'), rest: buf.subarray(end + 4) }));
    };
    const onEnd = () => done(() => reject(new Error('closed before an HTTP head')));
    const done = (fn) => {
      sock.off('data', onData);
      sock.off('end', onEnd);
      sock.off('error', onEnd);
      sock.pause();
      fn();
    };
    sock.on('data', onData);
    sock.on('end', onEnd);
    sock.on('error', onEnd);
    sock.resume();
  });
}

/**
 * Starts the proxy to 127.0.0.1:`targetPort`. `rewritten` counts the
 * frames it changed.
 * @param {number} targetPort
 */
export async function startRewriteProxy(targetPort) {
  const socks = new Set();
  const state = { rewritten: 0 };
  const server = net.createServer((client) => {
    socks.add(client);
    client.on('close', () => socks.delete(client));
    client.on('error', () => {});
    handle(client).catch(() => client.destroy());
  });

  /** @param {net.Socket} client */
  async function handle(client) {
    const { head, rest } = await readHead(client);
    const lines = head.split('\r\n');
    const upgrade = lines.some((l) => /^upgrade:\s*websocket/i.test(l));
    // No compression on the WebSocket; one request per connection for
    // pages, so every connection's first request says what it is.
    const kept = lines.filter((l) => !/^(sec-websocket-extensions|connection):/i.test(l));
    kept.push(upgrade ? 'Connection: Upgrade' : 'Connection: close');
    const upstream = net.connect({ host: '127.0.0.1', port: targetPort });
    socks.add(upstream);
    upstream.on('close', () => { socks.delete(upstream); client.destroy(); });
    upstream.on('error', () => client.destroy());
    client.on('close', () => upstream.destroy());
    await new Promise((resolve, reject) => { upstream.once('connect', resolve); upstream.once('error', reject); });
    upstream.write(`${kept.join('\r\n')}\r\n\r\n`);
    upstream.write(rest);
    if (!upgrade) {
      client.pipe(upstream);
      upstream.pipe(client);
      client.resume();
      return;
    }
    const reply = await readHead(upstream);
    client.write(`${reply.head}\r\n\r\n`);
    // Client frames are masked, server frames not; a rewritten frame keeps that.
    const relay = (/** @type {net.Socket} */ to) => frameReader((f, raw) => {
      if (f.opcode === 1 && f.fin) {
        const changed = rewriteFingerprints(f.payload.toString('utf8'));
        if (changed !== null) {
          state.rewritten += 1;
          to.write(encodeFrame(true, 1, f.masked, Buffer.from(changed, 'utf8')));
          return;
        }
      }
      to.write(raw);
    });
    const down = relay(client);
    const up = relay(upstream);
    if (reply.rest.length) down(reply.rest);
    upstream.on('data', down);
    client.on('data', up);
    upstream.resume();
    client.resume();
  }

  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = /** @type {net.AddressInfo} */ (server.address());
  return {
    port,
    origin: `http://127.0.0.1:${port}`,
    get rewritten() { return state.rewritten; },
    async close() {
      for (const s of socks) s.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
