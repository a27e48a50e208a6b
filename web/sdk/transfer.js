// Chat and file transfer over the `chat` data channel: the browser side of
// crates/transfer, speaking the same wire format (docs/protocol.md, "Chat and
// file transfer over a data channel"). The native CLI interoperates with it,
// so the JSON produced here is byte for byte what crates/transfer parses and
// produces: same key order, `mime` omitted when empty, lowercase hex.
//
// This module owns:
// - the frame codec: `parse` (one data-channel message -> one frame) and the
//   encoders (`textFrame`, `fileStart`, `fileEnd`, `fileAck`);
// - `Sender`: one file -> file-start, binary chunks, file-end, then the
//   verdict from the peer's file-ack;
// - `Receiver`: collects an incoming file, checks size and SHA-256 on
//   file-end and produces the file-ack to send back;
// - `sendFile`: drives a Sender over an RTCDataChannel with backpressure;
// - the sinks a Receiver writes to: `opfsSink`, `memorySink`, and
//   `browserSink`, the first that works of the two.
//
// Like the Rust crate, Sender and Receiver never touch a data channel; only
// `sendFile` does. No DOM, so it also runs in a worker.
//
// Memory stays flat whatever the file's size: the sender reads and hashes
// one READ_BLOCK at a time (./sha256.js, incremental), and the receiver
// hashes each chunk as it comes and hands it to a sink (the page's writes
// to disk, `opfsSink`), keeping none of them.

import { Sha256 } from './sha256.js';

/** Label of the data channel; the newcomer creates it, ordered and reliable. */
export const LABEL = 'chat';
/** Largest binary frame a peer may send (crates/transfer MAX_CHUNK). */
export const MAX_CHUNK = 64 * 1024;
/** Chunk size the browser sends: SCTP stacks of all browsers take 16 KiB. */
export const CHUNK = 16 * 1024;
/** Bytes read from the file at a time; cut into chunks. */
export const READ_BLOCK = 1024 * 1024;
/** Bytes a disk sink gathers before each write. */
export const WRITE_BATCH = 1024 * 1024;
/** `sendFile` pauses above this many buffered bytes... */
export const HIGH_WATER = 4 * 1024 * 1024;
/** ...and resumes at this low-water mark (`bufferedAmountLowThreshold`). */
export const LOW_WATER = 1024 * 1024;

/** A message that is not a valid frame; `parse` throws it. */
export class ProtocolError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = 'ProtocolError';
  }
}

/** Driving a Sender or Receiver in a way the protocol does not allow. */
export class TransferError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = 'TransferError';
  }
}

const HEX64 = /^[0-9a-fA-F]{64}$/;

/**
 * Parse one data-channel message. Binary messages (ArrayBuffer, typed array
 * or Blob) are always chunks. Strict about the fields a frame needs, so a
 * broken peer is reported rather than guessed at; fields it does not know are
 * ignored, so the format can grow.
 * @param {string | ArrayBuffer | ArrayBufferView | Blob} data
 * @returns {import('./transfer').Frame}
 */
export function parse(data) {
  if (typeof data !== 'string') return { type: 'chunk', data };
  let obj;
  try {
    obj = JSON.parse(data);
  } catch (err) {
    throw new ProtocolError(`text frame is not valid JSON: ${err instanceof Error ? err.message : err}`);
  }
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) {
    throw new ProtocolError('text frame is JSON but not an object');
  }
  const type = obj.type;
  if (type === undefined) throw new ProtocolError('chat frame has no "type" field');
  if (typeof type !== 'string') throw new ProtocolError('chat frame field "type" must be a string');
  const f = fields(obj, type);
  switch (type) {
    case 'text':
      return { type, text: f.string('text') };
    case 'file-start': {
      /** @type {import('./transfer').FileStartFrame} */
      const frame = { type, id: f.string('id'), name: f.string('name'), size: f.size('size') };
      const mime = f.optString('mime');
      if (mime) frame.mime = mime;
      return frame;
    }
    case 'file-end':
      return { type, id: f.string('id'), sha256: f.digest('sha256') };
    case 'file-ack':
      return { type, id: f.string('id'), ok: f.bool('ok'), sha256: f.digest('sha256') };
    case 'file-resume':
      return { type, id: f.string('id'), offset: f.size('offset') };
    default:
      throw new ProtocolError(`unknown frame type ${JSON.stringify(type)}`);
  }
}

/**
 * Field extraction whose errors name the frame and the field.
 * @param {Record<string, unknown>} obj
 * @param {string} frame
 */
function fields(obj, frame) {
  const take = (/** @type {string} */ field) => {
    if (!(field in obj)) throw new ProtocolError(`${frame} frame has no "${field}" field`);
    return obj[field];
  };
  const wrong = (/** @type {string} */ field, /** @type {string} */ expected) =>
    new ProtocolError(`${frame} frame field "${field}" must be ${expected}`);
  return {
    /** @param {string} field */
    string(field) {
      const v = take(field);
      if (typeof v !== 'string') throw wrong(field, 'a string');
      return v;
    },
    /** Absent, null and "" all mean none: senders omit `mime` when it is empty. @param {string} field */
    optString(field) {
      const v = obj[field];
      if (v === undefined || v === null || v === '') return undefined;
      if (typeof v !== 'string') throw wrong(field, 'a string');
      return v;
    },
    /** @param {string} field */
    size(field) {
      const v = take(field);
      if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw wrong(field, 'a non-negative integer');
      return v;
    },
    /** @param {string} field */
    bool(field) {
      const v = take(field);
      if (typeof v !== 'boolean') throw wrong(field, 'true or false');
      return v;
    },
    /** Uppercase is accepted and lowercased, as crates/transfer does. @param {string} field */
    digest(field) {
      const v = take(field);
      if (typeof v !== 'string' || !HEX64.test(v)) throw new ProtocolError(`${frame} frame field "${field}" is not 64 hex digits`);
      return v.toLowerCase();
    },
  };
}

// Encoders. Object literals keep their key order in JSON.stringify, which is
// the order crates/transfer writes and docs/protocol.md shows.

/** @param {string} text */
export const textFrame = (text) => JSON.stringify({ type: 'text', text });

/**
 * @param {{id: string, name: string, size: number, mime?: string, path?: string}} info
 */
export function fileStart({ id, name, size, mime, path }) {
  /** @type {Record<string, unknown>} */
  const frame = { type: 'file-start', id, name, size };
  if (mime) frame.mime = mime;
  if (path) frame.path = path;
  return JSON.stringify(frame);
}

/** @param {string} id @param {string} sha256 lowercase hex */
export const fileEnd = (id, sha256) => JSON.stringify({ type: 'file-end', id, sha256 });

/** SHA-256 of no bytes: what a receiver holds of a file it never saw. */
export const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

/** @param {string} id @param {boolean} ok @param {string} sha256 the receiver's own hash */
export const fileAck = (id, ok, sha256) => JSON.stringify({ type: 'file-ack', id, ok, sha256 });

/**
 * Lowercase hex SHA-256 of a whole buffer (./sha256.js, so it works on
 * pages without WebCrypto too).
 * @param {ArrayBuffer | ArrayBufferView} buf
 */
export async function sha256Hex(buf) {
  return new Sha256().update(buf).hex();
}

/** A file id unique for this sender: base-36 milliseconds, a dash, 12 random hex digits. */
export function newFileId() {
  const a = new Uint8Array(6);
  crypto.getRandomValues(a);
  return `${Date.now().toString(36)}-${[...a].map((b) => b.toString(16).padStart(2, '0')).join('')}`;
}

/** Byte length of a chunk, whatever binaryType delivered it as. @param {any} data */
const byteLength = (data) => data.byteLength ?? data.size ?? 0;

/**
 * One outgoing file: `next()` yields file-start, the chunks and file-end,
 * then null while it waits for the file-ack, which `handleAck` takes.
 */
export class Sender {
  /** @type {'start' | 'chunks' | 'end' | 'await-ack' | 'done'} */
  #state = 'start';
  #file;
  #chunkSize;
  /** @type {Promise<string> | null} */
  #sha256 = null;
  /** @type {Sha256 | null} */
  #hasher = null;
  /** @type {ArrayBuffer | null} */
  #block = null;
  #blockStart = 0;
  #sent = 0;
  /** @type {string | null} */
  #digest = null;
  /** @type {import('./transfer').AckOutcome | null} */
  #outcome = null;

  /**
   * @param {Blob & {name?: string}} file
   * @param {{id?: string, name?: string, mime?: string, chunkSize?: number, sha256?: Promise<string>, path?: string}} [opts]
   *   `sha256`: the file's hash when it is already being computed (one file
   *   sent to several peers is hashed once). `path`: its place in a folder
   *   being sent (`folder/sub/name`), which native receivers recreate.
   */
  constructor(file, opts = {}) {
    const chunkSize = opts.chunkSize ?? CHUNK;
    if (!Number.isInteger(chunkSize) || chunkSize < 1 || chunkSize > MAX_CHUNK) {
      throw new TransferError(`chunk size ${chunkSize} is not in 1..=${MAX_CHUNK}`);
    }
    this.#file = file;
    this.#chunkSize = chunkSize;
    /** @type {{id: string, name: string, size: number, mime?: string, path?: string}} */
    this.info = { id: opts.id ?? newFileId(), name: opts.name ?? file.name ?? 'file', size: file.size };
    const mime = opts.mime ?? file.type;
    if (mime) this.info.mime = mime;
    if (opts.path) this.info.path = opts.path;
    if (opts.sha256) {
      this.#sha256 = opts.sha256;
      // Hashing fails only when reading fails; next() reports that.
      this.#sha256.catch(() => {});
    } else {
      // Hashed block by block as the chunks are read.
      this.#hasher = new Sha256();
    }
  }

  get id() { return this.info.id; }
  get size() { return this.info.size; }
  /** Bytes handed out as chunks so far. */
  get bytesSent() { return this.#sent; }
  /** The hash sent in file-end, once it was. */
  get digest() { return this.#digest; }
  get isAwaitingAck() { return this.#state === 'await-ack'; }
  /** The verdict from the file-ack, once it came. */
  get outcome() { return this.#outcome; }

  /**
   * The next message to send: a string (text frame) or an ArrayBuffer
   * (chunk); null once file-end is out.
   * @returns {Promise<string | ArrayBuffer | null>}
   */
  async next() {
    switch (this.#state) {
      case 'start':
        this.#state = this.info.size === 0 ? 'end' : 'chunks';
        return fileStart(this.info);
      case 'chunks': {
        if (!this.#block || this.#sent >= this.#blockStart + this.#block.byteLength) {
          this.#blockStart = this.#sent;
          this.#block = await this.#file.slice(this.#sent, this.#sent + READ_BLOCK).arrayBuffer();
          if (this.#block.byteLength === 0) {
            throw new TransferError(`source ended after ${this.#sent} of the ${this.info.size} bytes announced`);
          }
          // A block past the announced size is cut, as the chunks are.
          const keep = Math.min(this.#block.byteLength, this.info.size - this.#sent);
          this.#hasher?.update(new Uint8Array(this.#block, 0, keep));
        }
        const at = this.#sent - this.#blockStart;
        const chunk = this.#block.slice(at, Math.min(at + this.#chunkSize, this.#block.byteLength));
        this.#sent += chunk.byteLength;
        if (this.#sent >= this.info.size) {
          this.#block = null;
          this.#state = 'end';
        }
        return chunk;
      }
      case 'end': {
        const sha256 = this.#hasher ? this.#hasher.hex() : await /** @type {Promise<string>} */ (this.#sha256);
        this.#digest = sha256;
        this.#state = 'await-ack';
        return fileEnd(this.info.id, sha256);
      }
      default:
        return null;
    }
  }

  /**
   * Take a file-ack. Null when it is for another file; throws when ours
   * arrives before file-end or twice.
   * @param {{id: string, ok: boolean, sha256: string}} ack
   * @returns {import('./transfer').AckOutcome | null}
   */
  handleAck({ id, ok, sha256 }) {
    if (id !== this.info.id) return null;
    if (this.#state !== 'await-ack' || this.#digest === null) {
      throw new TransferError(`file-ack for ${JSON.stringify(id)} arrived when none was expected`);
    }
    const theirs = sha256.toLowerCase();
    this.#outcome = { verified: ok && theirs === this.#digest, ours: this.#digest, theirs, peerOk: ok };
    this.#state = 'done';
    return this.#outcome;
  }
}

/**
 * Where a Receiver puts the bytes of one incoming file. `write` calls come
 * in order and are not awaited one by one (the receiver chains them);
 * `finish` resolves to the whole file as a Blob (on disk, for `opfsSink`);
 * `discard` deletes whatever was written.
 * @typedef {{write(chunk: ArrayBuffer | ArrayBufferView | Blob): Promise<void> | void, finish(): Promise<Blob>, discard(): Promise<void> | void}} Sink
 */

/**
 * Keeps the chunks in memory and builds a Blob at the end: for pages
 * without a disk to write to. Chromium moves large Blobs to disk itself.
 * @param {{mime?: string}} info
 * @returns {Sink}
 */
export function memorySink(info) {
  /** @type {any[]} */
  let parts = [];
  return {
    write(chunk) { parts.push(chunk); },
    async finish() { return new Blob(parts, { type: info.mime ?? 'application/octet-stream' }); },
    discard() { parts = []; },
  };
}

/**
 * Writes the file into the Origin Private File System as it arrives, under
 * `dir` (a FileSystemDirectoryHandle from `navigator.storage.getDirectory()`),
 * named after its id, so memory does not grow with the file. The Blob that
 * `finish` gives is the file on disk.
 * @param {FileSystemDirectoryHandle} dir
 * @returns {(info: {id: string}) => Promise<Sink>}
 */
export function opfsSink(dir) {
  return async ({ id }) => {
    const name = `incoming-${id.replace(/[^A-Za-z0-9_-]/g, '_')}`;
    const handle = await dir.getFileHandle(name, { create: true });
    const writable = await handle.createWritable();
    let closed = false;
    // Chunks are 16 KiB: written one by one, each write is a round trip to
    // the browser's storage process. They go in batches of WRITE_BATCH.
    /** @type {any[]} */
    let batch = [];
    let batched = 0;
    const flush = () => {
      const parts = batch;
      batch = [];
      batched = 0;
      return writable.write(new Blob(parts));
    };
    return {
      write(chunk) {
        batch.push(chunk);
        batched += byteLength(chunk);
        return batched >= WRITE_BATCH ? flush() : undefined;
      },
      async finish() {
        if (batched > 0) await flush();
        closed = true;
        await writable.close();
        return handle.getFile();
      },
      async discard() {
        if (!closed) await writable.abort().catch(() => {});
        await dir.removeEntry(name).catch(() => {});
      },
    };
  };
}

/**
 * The sink /drop uses (the same choice /chat makes): the Origin Private
 * File System (in folder `dirName`) where the page has it, so a large file
 * does not fill its memory, and `memorySink` where it does not (not a
 * secure context) or it fails.
 * @param {string} [dirName]
 * @returns {(info: {id: string, mime?: string}) => Promise<Sink>}
 */
export function browserSink(dirName = 'switchboard-incoming') {
  /** @type {Promise<FileSystemDirectoryHandle> | undefined} */
  let dir;
  return async (info) => {
    try {
      dir ??= navigator.storage?.getDirectory
        ? (await navigator.storage.getDirectory()).getDirectoryHandle(dirName, { create: true })
        : Promise.reject(new Error('no Origin Private File System'));
      return await opfsSink(await dir)(info);
    } catch (err) {
      console.warn('receiving into memory:', err instanceof Error ? err.message : err);
      return memorySink(info);
    }
  };
}

/**
 * Incoming files from one peer, one at a time. `handle(frame)` is
 * synchronous so chunks stay in order: each one is hashed at once and its
 * write to the sink is chained behind the previous one; only the verdict
 * at file-end is async.
 */
export class Receiver {
  /** @type {{id: string, name: string, size: number, mime?: string, received: number, hasher: Sha256, sink: Promise<Sink>, writing: Promise<unknown>} | null} */
  #current = null;
  #open;

  /**
   * @param {{sink?: (info: {id: string, name: string, size: number, mime?: string}) => Sink | Promise<Sink>}} [opts]
   *   Where files go; `memorySink` by default, `opfsSink(dir)` to disk.
   */
  constructor(opts = {}) {
    this.#open = opts.sink ?? memorySink;
  }

  /** The file in progress, if any. */
  get current() {
    const c = this.#current;
    return c && { id: c.id, name: c.name, size: c.size, mime: c.mime, received: c.received };
  }

  /**
   * @param {import('./transfer').Frame} frame
   * @returns {import('./transfer').Received}
   */
  handle(frame) {
    switch (frame.type) {
      case 'file-start': {
        // A new file-start abandons the file in progress (docs/protocol.md).
        const replaced = this.abort();
        const info = { id: frame.id, name: frame.name, size: frame.size, mime: frame.mime };
        const sink = Promise.resolve().then(() => this.#open(info));
        this.#current = { ...info, received: 0, hasher: new Sha256(), sink, writing: sink };
        return { kind: 'started', id: frame.id, name: frame.name, size: frame.size, mime: frame.mime, replaced };
      }
      case 'chunk': {
        const inc = this.#current;
        const len = byteLength(frame.data);
        if (!inc) throw new TransferError(`binary frame (${len} bytes) outside of a file transfer`);
        if (frame.data instanceof Blob) {
          // binaryType 'blob': hashed in order by chaining the reads too.
          const data = frame.data;
          inc.writing = inc.writing.then(async () => {
            const buf = await data.arrayBuffer();
            inc.hasher.update(buf);
            return (await inc.sink).write(buf);
          });
        } else {
          inc.hasher.update(frame.data);
          const data = frame.data;
          inc.writing = inc.writing.then(async () => (await inc.sink).write(data));
        }
        inc.received += len;
        return { kind: 'progress', id: inc.id, received: inc.received, size: inc.size };
      }
      case 'file-end': {
        const inc = this.#current;
        // A file-end that is not for the file in progress is answered, not
        // ok, so that its sender does not wait forever; the file in
        // progress (if any) carries on.
        if (!inc || inc.id !== frame.id) return { kind: 'unknown-end', id: frame.id, ack: fileAck(frame.id, false, EMPTY_SHA256) };
        this.#current = null;
        return { kind: 'finished', id: inc.id, done: finish(inc, frame.sha256) };
      }
      default:
        return { kind: 'ignored' };
    }
  }

  /**
   * Drop the file in progress (channel closed, peer left) and what was
   * written of it. Returns its id and name, or null when there was none.
   */
  abort() {
    const c = this.#current;
    this.#current = null;
    if (c) {
      c.writing.catch(() => {}).then(async () => (await c.sink).discard()).catch((err) => console.warn('discarding a partial file:', err));
    }
    return c && { id: c.id, name: c.name };
  }
}

/**
 * Judge what arrived: ok only when both the byte count and the SHA-256
 * match; the ack carries our own hash either way. A file that fails (or
 * whose writes failed) is discarded, so nothing of it can be downloaded.
 * @param {{id: string, name: string, size: number, mime?: string, received: number, hasher: Sha256, sink: Promise<Sink>, writing: Promise<unknown>}} inc
 * @param {string} expected
 * @returns {Promise<import('./transfer').Finished>}
 */
async function finish(inc, expected) {
  /** @type {string | null} */
  let failure = null;
  try {
    await inc.writing;
  } catch (err) {
    failure = `could not write the file: ${err instanceof Error ? err.message : err}`;
  }
  const actual = inc.hasher.hex();
  const sink = await inc.sink.catch(() => null);
  let ok = failure === null && inc.received === inc.size && actual === expected;
  /** @type {Blob | null} */
  let blob = null;
  if (ok && sink) {
    try {
      blob = await sink.finish();
    } catch (err) {
      ok = false;
      failure = `could not keep the file: ${err instanceof Error ? err.message : err}`;
    }
  }
  if (!ok) await sink?.discard();
  return {
    id: inc.id, name: inc.name, mime: inc.mime, size: inc.size, received: inc.received,
    expected, actual, ok, blob, failure, ack: fileAck(inc.id, ok, actual),
  };
}

/**
 * Resolve once the channel's buffer has drained to its low-water mark.
 * @param {RTCDataChannel} ch
 */
function waitForLow(ch) {
  return new Promise((resolve, reject) => {
    const done = () => { cleanup(); resolve(undefined); };
    const closed = () => { cleanup(); reject(new TransferError('data channel closed')); };
    const cleanup = () => {
      ch.removeEventListener('bufferedamountlow', done);
      ch.removeEventListener('close', closed);
    };
    ch.addEventListener('bufferedamountlow', done);
    ch.addEventListener('close', closed);
    if (ch.bufferedAmount <= ch.bufferedAmountLowThreshold) done();
  });
}

/**
 * Send a file over an open data channel: everything up to file-end, pausing
 * above HIGH_WATER buffered bytes. `onProgress(bytes)` gets the bytes that
 * have left the buffer. Resolves when file-end is queued; the verdict comes
 * later, through `sender.handleAck`.
 * @param {RTCDataChannel} channel
 * @param {Sender} sender
 * @param {(bytes: number) => void} [onProgress]
 */
export async function sendFile(channel, sender, onProgress) {
  if (channel.readyState !== 'open') throw new TransferError('data channel not open');
  if (channel.bufferedAmountLowThreshold < LOW_WATER) channel.bufferedAmountLowThreshold = LOW_WATER;
  for (let msg = await sender.next(); msg !== null; msg = await sender.next()) {
    if (typeof msg !== 'string' && channel.bufferedAmount > HIGH_WATER) {
      onProgress?.(Math.max(0, sender.bytesSent - msg.byteLength - channel.bufferedAmount));
      await waitForLow(channel);
    }
    if (channel.readyState !== 'open') throw new TransferError('data channel closed');
    channel.send(/** @type {any} */ (msg));
    if (typeof msg !== 'string') onProgress?.(Math.max(0, sender.bytesSent - channel.bufferedAmount));
  }
}
