// A signaling client written from docs/protocol.md alone (section "Sessions:
// reconnect and resume"), on the `ws` package: join, numbered signals with
// their own seq, acks both ways, resume after a cut, re-sending what the
// server had not handled. It records every frame it receives, per
// connection, so tests can check that the server's seqs have no gaps and no
// repeats across reconnects.

import WebSocket from 'ws';

/** Server messages that carry a session seq. */
const SEQUENCED = new Set(['signal', 'peer-joined', 'peer-left']);

export class RawClient {
  /**
   * @param {string} name log label
   * @param {{ackEvery?: number, ackIntervalMs?: number}} [opts] ack after this many
   *   unacked messages, and at least this often (the spec: 64 and 1 s)
   */
  constructor(name, opts = {}) {
    this.name = name;
    this.ackEvery = opts.ackEvery ?? 64;
    this.ackIntervalMs = opts.ackIntervalMs ?? 500;
    /** @type {WebSocket | null} */
    this.ws = null;
    /** Connections opened so far. */
    this.connections = 0;
    /** True between welcome/resumed and the socket's end. */
    this.attached = false;
    this.session = null;
    this.resumeWindow = null;
    this.room = null;
    this.peer = null;
    /** Highest server seq received. */
    this.lastSeen = 0;
    this.lastAckSent = 0;
    /** Our next client seq. */
    this.nextSeq = 1;
    /** Highest client seq the server said it handled. */
    this.serverAck = 0;
    /** Our signals not yet acked by the server: {seq, to, data}. */
    this.outbox = [];
    /** Every frame received: {conn, msg}. */
    this.frames = [];
    /** Sequenced messages with a seq not exactly lastSeen + 1. */
    this.seqProblems = [];
    /** @type {Array<() => void>} */
    this.waiters = [];
    this.timer = setInterval(() => this.flushAck(), this.ackIntervalMs);
    this.timer.unref();
  }

  /** Sequenced messages received, in order. */
  get sequenced() { return this.frames.filter((f) => SEQUENCED.has(f.msg.type)).map((f) => f.msg); }

  /** Signals received, in order. */
  get signals() { return this.frames.filter((f) => f.msg.type === 'signal').map((f) => f.msg); }

  /** @param {string} url */
  async connect(url) {
    const ws = new WebSocket(url);
    const conn = ++this.connections;
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    this.ws = ws;
    ws.on('error', () => { /* the close handler follows */ });
    ws.on('message', (data, isBinary) => {
      if (isBinary) throw new Error(`${this.name}: binary frame from the server`);
      this.onFrame(conn, JSON.parse(String(data)));
    });
    ws.on('close', () => {
      if (this.ws === ws) {
        this.attached = false;
        this.ws = null;
      }
      this.wake();
    });
  }

  /** @param {number} conn @param {any} msg */
  onFrame(conn, msg) {
    this.frames.push({ conn, msg });
    if (SEQUENCED.has(msg.type)) {
      if (msg.seq !== this.lastSeen + 1) this.seqProblems.push({ conn, expected: this.lastSeen + 1, msg });
      if (typeof msg.seq === 'number' && msg.seq > this.lastSeen) this.lastSeen = msg.seq;
      if (this.lastSeen - this.lastAckSent >= this.ackEvery) this.flushAck();
    } else if (msg.type === 'ack') {
      this.serverAck = Math.max(this.serverAck, msg.seq);
      this.outbox = this.outbox.filter((o) => o.seq > msg.seq);
    }
    this.wake();
  }

  wake() {
    for (const w of [...this.waiters]) w();
  }

  /** @param {object} obj */
  send(obj) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) throw new Error(`${this.name}: not connected`);
    this.ws.send(JSON.stringify(obj));
  }

  /** Send if the socket is open; false when it is closing or gone. @param {object} obj */
  trySend(obj) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(obj));
    return true;
  }

  flushAck() {
    if (this.attached && this.lastSeen > this.lastAckSent && this.ws?.readyState === WebSocket.OPEN) {
      this.lastAckSent = this.lastSeen;
      this.send({ type: 'ack', seq: this.lastSeen });
    }
  }

  /**
   * Resolve with the first frame after `fromIndex` matching `pred`.
   * @param {(msg: any) => boolean} pred
   */
  next(pred, what, timeout = 10_000, fromIndex = 0) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => done(() => reject(new Error(`${this.name}: no ${what} within ${timeout} ms; last frames: ${JSON.stringify(this.frames.slice(-5).map((f) => f.msg))}`))), timeout);
      const done = (fn) => { clearTimeout(timer); this.waiters = this.waiters.filter((w) => w !== check); fn(); };
      const check = () => {
        const f = this.frames.slice(fromIndex).find((x) => pred(x.msg));
        if (f) done(() => resolve(f.msg));
      };
      this.waiters.push(check);
      check();
    });
  }

  /** Wait until `probe()` is true, re-checked on every frame. */
  until(probe, what, timeout = 10_000) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => done(() => reject(new Error(`${this.name}: no ${what} within ${timeout} ms`))), timeout);
      const done = (fn) => { clearTimeout(timer); this.waiters = this.waiters.filter((w) => w !== check); fn(); };
      const check = () => { if (probe()) done(() => resolve(undefined)); };
      this.waiters.push(check);
      check();
    });
  }

  /** Connect to `url` and join; resolves with `welcome`. */
  async join(url, room, peer, meta = {}) {
    await this.connect(url);
    const from = this.frames.length;
    this.send({ type: 'join', room, peer, meta });
    const msg = await this.next((m) => m.type === 'welcome' || m.type === 'error', 'welcome', 10_000, from);
    if (msg.type === 'error') throw new Error(`${this.name}: join refused: ${JSON.stringify(msg)}`);
    this.attachWith(msg);
    return msg;
  }

  /** @param {any} msg welcome or resumed */
  attachWith(msg) {
    this.session = msg.session;
    this.resumeWindow = msg.resumeWindow;
    this.room = msg.room;
    this.peer = msg.peer;
    this.attached = true;
  }

  /**
   * Connect to `url` and resume; on `resumed`, re-send our signals the
   * server had not handled (seq > ack). Resolves with `resumed` or the
   * `error` frame.
   */
  async resume(url) {
    await this.connect(url);
    const from = this.frames.length;
    this.send({ type: 'resume', session: this.session, seq: this.lastSeen });
    const msg = await this.next((m) => m.type === 'resumed' || m.type === 'error', 'resumed', 10_000, from);
    if (msg.type === 'resumed') {
      this.attachWith(msg);
      this.serverAck = Math.max(this.serverAck, msg.ack);
      this.outbox = this.outbox.filter((o) => o.seq > msg.ack);
      for (const o of this.outbox) this.send({ type: 'signal', to: o.to, seq: o.seq, data: o.data });
    }
    return msg;
  }

  /** Queue a numbered signal; sent now if attached, else after the next resume. */
  signal(to, data) {
    const o = { seq: this.nextSeq++, to, data };
    this.outbox.push(o);
    // A socket the server is closing takes nothing; the next resume re-sends.
    if (this.attached) this.trySend({ type: 'signal', to, seq: o.seq, data });
    return o.seq;
  }

  /** A ping; resolves on its pong (the server acks our seqs right before it). */
  async ping() {
    const from = this.frames.length;
    this.send({ type: 'ping' });
    await this.next((m) => m.type === 'pong', 'pong', 10_000, from);
  }

  /** Drop the TCP connection without a close frame, like a network loss. */
  cut() {
    this.attached = false;
    this.ws?.terminate();
    this.ws = null;
  }

  /** Leave the room and close with a close frame. */
  async close() {
    clearInterval(this.timer);
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.send({ type: 'leave' });
      this.ws.close(1000);
    }
    this.ws = null;
  }
}
