// Pairing by link: the browser side of crates/pairing's link mode
// (docs/protocol.md, "Pairing: codes and links"; docs/security.md has the
// reasoning). Two peers that hold the same link key prove it to each other
// (`check`) and bind the proof to the DTLS fingerprints of the
// descriptions each one set (`bind`), so a signaling server that rewrites
// the descriptions to sit in the middle is caught before any file moves.
//
// This module owns:
// - links: `newLink` (a fresh room and 128-bit key), `parseLink`,
//   `linkFragment`;
// - the MACs: HMAC-SHA-256 over length-prefixed parts, with WebCrypto when
//   `crypto.subtle` exists and ./sha256.js otherwise (pages served over
//   plain http off localhost have no `crypto.subtle`);
// - `fingerprints`, normalized exactly as crates/pairing does;
// - `LinkPairing`: one side of a pairing with one peer. It never touches a
//   connection: it takes the peer's pairing messages and the descriptions,
//   and hands the messages to send to its `send` callback.
//
// Short codes (SPAKE2) are not in the browser: a browser guest ignores the
// `spake` a CLI host always sends, and a browser host only makes links.

import { Sha256 } from './sha256.js';

/** The pairing messages' `v`. */
export const PAIRING_VERSION = 1;
/** Links name rooms `pair-1` … `pair-999`, like codes. */
export const NAMEPLATES = 999;
/** Longest link or fragment read (a pasted page is no link). */
const MAX_SECRET_TEXT = 200;
const IDENTITY = 'switchboard/pairing/1';

/**
 * Why a pairing failed. `code` is what the CLI reports too: `wrong-code`
 * (the other side holds another key), `tampered` (the fingerprints the two
 * sides saw differ), `pairing` (a message that does not read, a description
 * without a fingerprint), `bad-link` (a link that does not read).
 */
export class PairingError extends Error {
  /** @param {'wrong-code' | 'tampered' | 'pairing' | 'bad-link'} code @param {string} message */
  constructor(code, message) {
    super(message);
    this.name = 'PairingError';
    this.code = code;
  }
}

const enc = new TextEncoder();

// ---- base64url without padding -------------------------------------------

const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

/** @param {Uint8Array} bytes */
export function toBase64Url(bytes) {
  let out = '';
  for (let i = 0; i < bytes.length; i += 3) {
    const n = (bytes[i] << 16) | ((bytes[i + 1] ?? 0) << 8) | (bytes[i + 2] ?? 0);
    const left = bytes.length - i;
    out += B64[(n >> 18) & 63] + B64[(n >> 12) & 63];
    if (left > 1) out += B64[(n >> 6) & 63];
    if (left > 2) out += B64[n & 63];
  }
  return out;
}

/**
 * Strict, like Rust's base64 crate: no padding, no stray characters, and
 * the unused bits of the last character zero. Null when it does not read.
 * @param {string} text
 * @returns {Uint8Array | null}
 */
export function fromBase64Url(text) {
  if (typeof text !== 'string' || text.length % 4 === 1) return null;
  const out = new Uint8Array(Math.floor((text.length * 3) / 4));
  let bits = 0;
  let acc = 0;
  let o = 0;
  for (const c of text) {
    const v = B64.indexOf(c);
    if (v < 0) return null;
    acc = (acc << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (acc >> bits) & 0xff;
    }
  }
  if ((acc & ((1 << bits) - 1)) !== 0) return null;
  return out;
}

// ---- links ----------------------------------------------------------------

/**
 * @typedef {{room: string, key: Uint8Array}} LinkSecret
 */

const ROOM_OK = /^pair-[A-Za-z0-9_-]{1,59}$/;

/**
 * Reads a link (`https://host/drop#room=…&key=…`) or just its fragment.
 * @param {string} text
 * @returns {LinkSecret}
 */
export function parseLink(text) {
  if (typeof text !== 'string' || text.length > MAX_SECRET_TEXT) {
    throw new PairingError('bad-link', 'that is too long for a link');
  }
  const t = text.trim();
  const hash = t.indexOf('#');
  const frag = hash >= 0 ? t.slice(hash + 1) : t;
  /** @type {string | undefined} */ let room;
  /** @type {string | undefined} */ let key;
  for (const kv of frag.split('&')) {
    const eq = kv.indexOf('=');
    if (eq < 0) continue;
    const [k, v] = [kv.slice(0, eq), kv.slice(eq + 1)];
    if (k === 'room') room = v;
    else if (k === 'key') key = v;
  }
  if (room === undefined || !ROOM_OK.test(room)) {
    throw new PairingError('bad-link', 'the link has no valid room after its #');
  }
  const bytes = key === undefined ? null : fromBase64Url(key);
  if (!bytes || bytes.length !== 16) {
    throw new PairingError('bad-link', 'the link has no valid key (22 characters of base64url) after its #');
  }
  return { room, key: bytes };
}

/** What goes after the `#`. @param {LinkSecret} link */
export const linkFragment = (link) => `room=${link.room}&key=${toBase64Url(link.key)}`;

/**
 * A fresh link secret: a 128-bit key from the system's random source and
 * `room`, or a random `pair-N` room.
 * @param {string} [room]
 * @returns {LinkSecret}
 */
export function newLink(room) {
  const key = crypto.getRandomValues(new Uint8Array(16));
  return { room: room ?? randomPairRoom(), key };
}

/** `pair-N`, N uniform in 1..NAMEPLATES. */
export function randomPairRoom() {
  const buf = new Uint32Array(1);
  // Rejection sampling keeps N uniform.
  const limit = Math.floor(0x1_0000_0000 / NAMEPLATES) * NAMEPLATES;
  do crypto.getRandomValues(buf); while (buf[0] >= limit);
  return `pair-${(buf[0] % NAMEPLATES) + 1}`;
}

// ---- MACs -----------------------------------------------------------------

/** @param {string | Uint8Array} p */
const bytesOf = (p) => (typeof p === 'string' ? enc.encode(p) : p);

/**
 * The parts, each preceded by its length as 4 bytes big-endian, so no two
 * lists of parts read the same.
 * @param {Array<string | Uint8Array>} parts
 */
function framed(parts) {
  const bs = parts.map(bytesOf);
  const out = new Uint8Array(bs.reduce((n, b) => n + 4 + b.length, 0));
  const view = new DataView(out.buffer);
  let at = 0;
  for (const b of bs) {
    view.setUint32(at, b.length);
    out.set(b, at + 4);
    at += 4 + b.length;
  }
  return out;
}

/**
 * HMAC-SHA-256 (RFC 2104) on ./sha256.js, for pages without WebCrypto.
 * @param {Uint8Array} key
 * @param {Uint8Array} data
 */
export function hmacSha256Fallback(key, data) {
  const block = new Uint8Array(64);
  block.set(key.length > 64 ? new Sha256().update(key).digest() : key);
  const ipad = block.map((b) => b ^ 0x36);
  const opad = block.map((b) => b ^ 0x5c);
  const inner = new Sha256().update(ipad).update(data).digest();
  return new Sha256().update(opad).update(inner).digest();
}

/**
 * HMAC-SHA-256 of `parts` (each length-prefixed) under `key`.
 * @param {Uint8Array} key
 * @param {Array<string | Uint8Array>} parts
 * @param {{subtle?: boolean}} [opts] `subtle: false` forces the fallback
 * @returns {Promise<Uint8Array>}
 */
export async function mac(key, parts, opts = {}) {
  const data = framed(parts);
  const subtle = opts.subtle === false ? undefined : globalThis.crypto?.subtle;
  if (!subtle) return hmacSha256Fallback(key, data);
  const k = await subtle.importKey('raw', key, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  return new Uint8Array(await subtle.sign('HMAC', k, data));
}

/**
 * The check and bind keys of a link: K = HMAC(key, IDENTITY, "link", room),
 * then HMAC(K, "check") and HMAC(K, "bind").
 * @param {LinkSecret} link
 * @param {{subtle?: boolean}} [opts]
 */
export async function linkKeys(link, opts = {}) {
  const k = await mac(link.key, [IDENTITY, 'link', link.room], opts);
  return { check: await mac(k, ['check'], opts), bind: await mac(k, ['bind'], opts) };
}

/** Compares two tags without stopping at the first difference. @param {Uint8Array} a @param {Uint8Array} b */
function sameTag(a, b) {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i] ^ b[i];
  return d === 0;
}

/**
 * The `a=fingerprint` values of a description: hash name in lower case,
 * hex in upper case, sorted, without repeats, joined by `,`.
 * @param {string} sdp
 */
export function fingerprints(sdp) {
  const fps = new Set();
  for (const line of String(sdp ?? '').split('\n')) {
    const l = line.trim();
    if (!l.startsWith('a=fingerprint:')) continue;
    const v = l.slice('a=fingerprint:'.length).trim();
    const sp = v.indexOf(' ');
    if (sp < 0) continue;
    fps.add(`${v.slice(0, sp).toLowerCase()} ${v.slice(sp + 1).trim().toUpperCase()}`);
  }
  if (!fps.size) throw new PairingError('pairing', 'a description has no DTLS fingerprint');
  // Code-unit order: the same as Rust's byte order for these ASCII strings.
  return [...fps].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)).join(',');
}

/** Whether a `signal`'s data is a pairing message. @param {any} data */
export const isPairingMessage = (data) => !!data && typeof data === 'object' && 'pair' in data;

// ---- one side of a pairing --------------------------------------------------

/**
 * One side of a link pairing with one peer. Feed it the peer's pairing
 * messages (`handle`) and the descriptions (`setDescriptions`, once the
 * signaling state is stable); it calls `send` with each message to relay as
 * `signal` data. Both return promises that reject with a PairingError when
 * the pairing failed; after that, nothing may be sent to or accepted from
 * the peer. `verified` turns true once both sides proved the key and saw
 * the same fingerprints; 'verified' is also dispatched then.
 */
export class LinkPairing extends EventTarget {
  #role;
  #peerRole;
  /** @type {Promise<{check: Uint8Array, bind: Uint8Array}>} */
  #keys;
  #send;
  /** Serializes the steps: WebCrypto is async, the protocol is ordered. */
  /** @type {Promise<unknown>} */ #chain = Promise.resolve();
  /** @type {Uint8Array | null} */ #peerCheck = null;
  #checked = false;
  /** @type {[string, string] | null} (host's, guest's) as this side sees them */
  #view = null;
  #bindSent = false;
  /** @type {Uint8Array | null} */ #peerBind = null;
  /** @type {PairingError | null} */ #failed = null;
  #opts;
  verified = false;

  /**
   * @param {LinkSecret} link
   * @param {'host' | 'guest'} role `host` made the link, `guest` opened it
   * @param {{send: (data: {pair: Record<string, unknown>}) => void, subtle?: boolean}} opts
   */
  constructor(link, role, opts) {
    super();
    if (role !== 'host' && role !== 'guest') throw new TypeError(`role must be host or guest, not ${role}`);
    this.#role = role;
    this.#peerRole = role === 'host' ? 'guest' : 'host';
    this.#send = opts.send;
    this.#opts = { subtle: opts.subtle };
    this.#keys = linkKeys(link, this.#opts);
    // Keyed at once: the check goes first.
    this.#step(async () => {
      const keys = await this.#keys;
      this.#out({ check: toBase64Url(await mac(keys.check, [this.#role], this.#opts)) });
    });
  }

  get role() { return this.#role; }
  /** The failure, once there was one. */
  get error() { return this.#failed; }

  /** @param {() => Promise<void>} fn */
  #step(fn) {
    const run = this.#chain.then(() => {
      if (this.#failed) throw this.#failed;
      return fn();
    }).catch((err) => {
      const e = err instanceof PairingError ? err : new PairingError('pairing', `pairing: ${err instanceof Error ? err.message : err}`);
      if (!this.#failed) {
        this.#failed = e;
        this.dispatchEvent(Object.assign(new Event('failed'), { error: e }));
      }
      throw e;
    });
    this.#chain = run.catch(() => {});
    return run;
  }

  /** @param {Record<string, unknown>} body */
  #out(body) {
    this.#send({ pair: { ...body, v: PAIRING_VERSION } });
  }

  /**
   * A pairing message from the peer (a `signal`'s data, `{pair: {...}}`).
   * @param {any} data
   * @returns {Promise<void>}
   */
  handle(data) {
    return this.#step(async () => {
      const msg = data?.pair;
      if (!msg || typeof msg !== 'object' || Array.isArray(msg)) throw new PairingError('pairing', 'bad pairing message: no pair object');
      if (msg.v !== PAIRING_VERSION) throw new PairingError('pairing', 'bad pairing message: unknown version (want v 1)');
      const field = (/** @type {string} */ name) => {
        if (!(name in msg)) return null;
        const b = typeof msg[name] === 'string' ? fromBase64Url(msg[name]) : null;
        if (!b) throw new PairingError('pairing', `bad pairing message: ${name} is not base64url`);
        return b;
      };
      const spake = field('spake');
      if (spake && this.#role === 'host') {
        // A guest that runs SPAKE2 typed a code; this side made no code.
        throw new PairingError('wrong-code', 'the other side typed a code, but this page pairs by link only');
      }
      // A guest ignores the spake a CLI host sends: it holds the link.
      const check = field('check');
      if (check) this.#peerCheck = check;
      const bind = field('bind');
      if (bind) this.#peerBind = bind;
      await this.#progress();
    });
  }

  /**
   * The descriptions this side set: its own (`pc.localDescription.sdp`) and
   * the one it was given (`pc.remoteDescription.sdp`).
   * @param {string} localSdp
   * @param {string} remoteSdp
   * @returns {Promise<void>}
   */
  setDescriptions(localSdp, remoteSdp) {
    return this.#step(async () => {
      const mine = fingerprints(localSdp);
      const theirs = fingerprints(remoteSdp);
      /** @type {[string, string]} */
      const view = this.#role === 'host' ? [mine, theirs] : [theirs, mine];
      if (!this.#view || this.#view[0] !== view[0] || this.#view[1] !== view[1]) {
        // Fingerprints that change under a live pairing: a fresh bind both ways.
        if (this.#view) this.#newConnection();
        this.#view = view;
      }
      await this.#progress();
    });
  }

  /** Resolves once every message and description given so far was taken (or the pairing failed). */
  settled() {
    return this.#chain;
  }

  /** A new connection to the same peer: its descriptions are bound afresh; the key stays. */
  newConnection() {
    return this.#step(async () => this.#newConnection());
  }

  #newConnection() {
    this.#view = null;
    this.#bindSent = false;
    this.#peerBind = null;
    this.verified = false;
  }

  async #progress() {
    const keys = await this.#keys;
    if (!this.#checked) {
      const tag = this.#peerCheck;
      if (!tag) return;
      this.#peerCheck = null;
      if (!sameTag(tag, await mac(keys.check, [this.#peerRole], this.#opts))) {
        throw new PairingError('wrong-code', 'wrong link key: the other side holds a different link');
      }
      this.#checked = true;
    }
    if (!this.#view) return;
    const [host, guest] = this.#view;
    if (!this.#bindSent) {
      this.#bindSent = true;
      this.#out({ bind: toBase64Url(await mac(keys.bind, [this.#role, host, guest], this.#opts)) });
    }
    const tag = this.#peerBind;
    if (!tag) return;
    if (!sameTag(tag, await mac(keys.bind, [this.#peerRole, host, guest], this.#opts))) {
      throw new PairingError('tampered', 'tampered: the signaling path changed the DTLS fingerprints (someone may be in the middle)');
    }
    if (this.verified) return;
    this.verified = true;
    this.dispatchEvent(new Event('verified'));
  }
}
