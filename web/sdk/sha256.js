// Incremental SHA-256 (FIPS 180-4), for hashing a file block by block as it
// is read or received. WebCrypto's `crypto.subtle.digest` takes the whole
// input at once, which for a large file means holding all of it in memory;
// this does not, and it also works on pages without a secure context, where
// `crypto.subtle` is missing. Checked against Node's crypto and the FIPS
// vectors in tests/e2e/sha256.test.mjs.

const K = new Uint32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);

const INIT = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];

/** SHA-256 over bytes fed in any number of `update` calls. */
export class Sha256 {
  #h = new Uint32Array(INIT);
  #w = new Uint32Array(64);
  /** A partial block carried between updates. */
  #buf = new Uint8Array(64);
  #bufLen = 0;
  /** Bytes hashed so far (exact up to 2^53). */
  #length = 0;
  #done = false;

  /**
   * Add bytes.
   * @param {ArrayBuffer | ArrayBufferView} data
   * @returns {this}
   */
  update(data) {
    if (this.#done) throw new Error('Sha256: update after digest');
    const bytes = data instanceof Uint8Array ? data
      : ArrayBuffer.isView(data) ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
        : new Uint8Array(data);
    this.#length += bytes.length;
    let at = 0;
    if (this.#bufLen > 0) {
      const take = Math.min(64 - this.#bufLen, bytes.length);
      this.#buf.set(bytes.subarray(0, take), this.#bufLen);
      this.#bufLen += take;
      at = take;
      if (this.#bufLen < 64) return this;
      this.#block(this.#buf, 0);
      this.#bufLen = 0;
    }
    // Whole blocks straight from the input: no copy.
    for (; at + 64 <= bytes.length; at += 64) this.#block(bytes, at);
    if (at < bytes.length) {
      this.#buf.set(bytes.subarray(at), 0);
      this.#bufLen = bytes.length - at;
    }
    return this;
  }

  /** The 32-byte digest. The hasher is finished afterwards. */
  digest() {
    if (this.#done) throw new Error('Sha256: digest twice');
    const bits = this.#length * 8;
    const pad = new Uint8Array(((this.#bufLen < 56 ? 56 : 120) - this.#bufLen) + 8);
    pad[0] = 0x80;
    const view = new DataView(pad.buffer);
    // The length as a 64-bit big-endian bit count.
    view.setUint32(pad.length - 8, Math.floor(bits / 0x100000000));
    view.setUint32(pad.length - 4, bits >>> 0);
    this.update(pad);
    this.#done = true;
    const out = new Uint8Array(32);
    const ov = new DataView(out.buffer);
    for (let i = 0; i < 8; i++) ov.setUint32(i * 4, this.#h[i]);
    return out;
  }

  /** The digest as lowercase hex. */
  hex() {
    return [...this.digest()].map((b) => b.toString(16).padStart(2, '0')).join('');
  }

  /**
   * One 64-byte block of `b` from `at`.
   * @param {Uint8Array} b
   * @param {number} at
   */
  #block(b, at) {
    const w = this.#w;
    const h = this.#h;
    for (let i = 0; i < 16; i++) {
      const j = at + i * 4;
      w[i] = (b[j] << 24) | (b[j + 1] << 16) | (b[j + 2] << 8) | b[j + 3];
    }
    for (let i = 16; i < 64; i++) {
      const x = w[i - 15];
      const y = w[i - 2];
      const s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
      const s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
      w[i] = (w[i - 16] + s0 + w[i - 7] + s1) | 0;
    }
    let a = h[0]; let bb = h[1]; let c = h[2]; let d = h[3];
    let e = h[4]; let f = h[5]; let g = h[6]; let hh = h[7];
    for (let i = 0; i < 64; i++) {
      const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
      const ch = (e & f) ^ (~e & g);
      const t1 = (hh + S1 + ch + K[i] + w[i]) | 0;
      const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
      const maj = (a & bb) ^ (a & c) ^ (bb & c);
      const t2 = (S0 + maj) | 0;
      hh = g; g = f; f = e; e = (d + t1) | 0;
      d = c; c = bb; bb = a; a = (t1 + t2) | 0;
    }
    h[0] = (h[0] + a) | 0; h[1] = (h[1] + bb) | 0; h[2] = (h[2] + c) | 0; h[3] = (h[3] + d) | 0;
    h[4] = (h[4] + e) | 0; h[5] = (h[5] + f) | 0; h[6] = (h[6] + g) | 0; h[7] = (h[7] + hh) | 0;
  }
}

/**
 * Lowercase hex SHA-256 of `data` in one go.
 * @param {ArrayBuffer | ArrayBufferView} data
 */
export const sha256HexOf = (data) => new Sha256().update(data).hex();
