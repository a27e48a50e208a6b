// switchboard browser SDK: the bookkeeping of a resumable signaling session
// (docs/protocol.md, "Sessions: reconnect and resume").
//
// Sans-IO: no WebSocket, no timers, no clock of its own. SignalingChannel
// (switchboard.js) feeds it what arrives and asks it what to send; this
// module owns the numbers: the session token, the highest server seq seen,
// what was acked, our own signal seqs and the signals the server has not
// acked yet, and the reconnect backoff.

/** Ack when this many server messages are unacked (the protocol asks for at most 64). */
export const DEFAULT_ACK_EVERY = 64;

/** Reconnect defaults: first retry within 1 s, then doubling, capped at 10 s. */
export const DEFAULT_RECONNECT = Object.freeze({
  initialDelay: 1000,
  maxDelay: 10_000,
  maxAttempts: 10,
});

/**
 * Sequence and ack bookkeeping of one session.
 *
 * Server→client: `accept(seq)` says whether a message is new (deliver it) or
 * a duplicate (seq at or below the highest seen: drop it); `ackDue()` says
 * when to send `{"type":"ack"}`.
 *
 * Client→server: `number(msg)` puts the next seq on an outgoing `signal` and
 * keeps it until `acked(n)` covers it; after `resumed`, `resumed(msg)`
 * returns the ones to send again.
 */
export class SessionTracker {
  /** @param {{ackEvery?: number}} [options] */
  constructor(options = {}) {
    this.ackEvery = Math.max(1, options.ackEvery ?? DEFAULT_ACK_EVERY);
    /** Opaque token from welcome/resumed; null when the server has no sessions (v1). @type {string | null} */
    this.token = null;
    /** Seconds the server keeps a dropped session. */
    this.resumeWindow = 0;
    /** Highest server seq received. */
    this.lastSeen = 0;
    /** Highest server seq we acked. */
    this.lastAcked = 0;
    /** Seq of our next signal. */
    this.nextSeq = 1;
    /** Our signals the server has not acked yet, in seq order. @type {Array<{seq: number}>} */
    this.outbox = [];
  }

  /** True when the server offered a session (so seq, ack and resume apply). */
  get enabled() {
    return typeof this.token === 'string' && this.token.length > 0;
  }

  /**
   * A `welcome` opens a new session: everything starts over.
   * @param {{session?: unknown, resumeWindow?: unknown}} msg
   */
  welcome(msg) {
    this.token = typeof msg.session === 'string' && msg.session ? msg.session : null;
    this.resumeWindow = validCount(msg.resumeWindow) ?? 0;
    this.lastSeen = 0;
    this.lastAcked = 0;
    this.nextSeq = 1;
    this.outbox = [];
  }

  /** The session is over (leave, close): nothing to resume any more. */
  end() {
    this.token = null;
    this.resumeWindow = 0;
    this.outbox = [];
  }

  /**
   * Should a server message with this `seq` be delivered? Messages without a
   * seq (v1 servers) always are; a seq at or below the highest seen is a
   * duplicate (a replay overlapping what arrived before the drop).
   * @param {unknown} seq
   */
  accept(seq) {
    const n = validCount(seq);
    if (n === null) return true;
    if (n <= this.lastSeen) return false;
    this.lastSeen = n;
    return true;
  }

  /**
   * The seq to ack now, or null. Without `force`, only once `ackEvery`
   * messages are unacked; with it (the once-a-second timer), whenever any is.
   * Returning a seq counts it as acked.
   * @param {boolean} [force]
   * @returns {number | null}
   */
  ackDue(force = false) {
    if (!this.enabled) return null;
    const unacked = this.lastSeen - this.lastAcked;
    if (unacked <= 0 || (!force && unacked < this.ackEvery)) return null;
    this.lastAcked = this.lastSeen;
    return this.lastSeen;
  }

  /**
   * Number an outgoing `signal` (in place) and keep it until acked. Does
   * nothing without a session (v1: signals carry no seq).
   * @template {Record<string, unknown>} T
   * @param {T} msg
   * @returns {T}
   */
  number(msg) {
    if (!this.enabled) return msg;
    const seq = this.nextSeq++;
    /** @type {any} */ (msg).seq = seq;
    this.outbox.push(/** @type {any} */ (msg));
    return msg;
  }

  /**
   * The server has handled every signal of ours up to `seq`.
   * @param {unknown} seq
   */
  acked(seq) {
    const n = validCount(seq);
    if (n === null) return;
    let i = 0;
    while (i < this.outbox.length && this.outbox[i].seq <= n) i++;
    if (i) this.outbox.splice(0, i);
  }

  /** The `resume` message for this session. @param {string | null} [room] */
  resumeMessage(room) {
    /** @type {Record<string, unknown>} */
    const msg = { type: 'resume', session: this.token, seq: this.lastSeen };
    if (room) msg.room = room;
    return msg;
  }

  /**
   * A `resumed` arrived: take its (possibly renewed) token and window, drop
   * what its `ack` covers, and return our signals to send again, in order.
   * @param {{session?: unknown, resumeWindow?: unknown, ack?: unknown}} msg
   * @returns {Array<Record<string, unknown>>}
   */
  resumed(msg) {
    if (typeof msg.session === 'string' && msg.session) this.token = msg.session;
    const w = validCount(msg.resumeWindow);
    if (w !== null) this.resumeWindow = w;
    this.acked(msg.ack ?? 0);
    // The server has at most what we acked; ack the rest again after replay.
    this.lastAcked = Math.min(this.lastAcked, this.lastSeen);
    return this.outbox.slice();
  }

  /**
   * Has the resume window surely passed, `elapsedMs` after the drop? Then
   * a resume cannot succeed and the client joins again straight away.
   * @param {number} elapsedMs
   */
  windowPassed(elapsedMs) {
    return this.resumeWindow > 0 && elapsedMs > this.resumeWindow * 1000;
  }
}

/**
 * Delay before reconnect attempt `attempt` (0 for the first): exponential
 * from `initialDelay`, capped at `maxDelay`, with jitter so that many clients
 * dropped at once (a node restart) do not come back in lockstep. The result
 * is in [base/2, base], base = min(maxDelay, initialDelay * 2^attempt).
 * @param {number} attempt
 * @param {{initialDelay?: number, maxDelay?: number}} [options]
 * @param {() => number} [random] in [0, 1)
 */
export function backoffDelay(attempt, options = {}, random = Math.random) {
  const initial = Math.max(0, options.initialDelay ?? DEFAULT_RECONNECT.initialDelay);
  const max = Math.max(initial, options.maxDelay ?? DEFAULT_RECONNECT.maxDelay);
  const base = Math.min(max, initial * 2 ** Math.min(Math.max(0, attempt), 30));
  return Math.round(base / 2 + (base / 2) * random());
}

/**
 * A whole number >= 0 (a seq or a count of seconds), or null.
 * @param {unknown} v
 * @returns {number | null}
 */
function validCount(v) {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 ? v : null;
}
