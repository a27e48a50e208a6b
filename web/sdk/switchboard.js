// switchboard browser SDK — signaling protocol v1 (docs/protocol.md).
//
// ES module, no build step. Two layers:
//
//   * SignalingChannel: the WebSocket to `switchboard serve`. join / welcome /
//     peer-joined / peer-left / signal / error / ping, and sessions: after a
//     drop it reconnects by itself and resumes (or joins again), with the
//     seq/ack bookkeeping in session.js. `channel.to(peerId)` gives a
//     per-peer object with `send({description})`, `send({candidate})` and
//     'message' events, the shape used by the W3C examples.
//   * joinRoom(): one RTCPeerConnection per remote peer, roles from the
//     protocol (newcomer offers; the peer that saw `peer-joined` waits for the
//     offer), W3C perfect negotiation with the newcomer polite, trickle ICE,
//     ICE restarts after a rejoin, and a millisecond timeline of every JSEP
//     and ICE step per peer.

import { SessionTracker, DEFAULT_RECONNECT, backoffDelay } from './session.js';

export { SessionTracker, DEFAULT_RECONNECT, backoffDelay };

/** Version of the signaling protocol this SDK speaks. */
export const PROTOCOL_VERSION = 1;

/** Default interval between `{"type":"ping"}` keepalives, in ms. */
export const DEFAULT_PING_INTERVAL = 10_000;

/** Default wait for any answer to a ping before the socket counts as dropped, in ms. */
export const DEFAULT_PONG_TIMEOUT = 5_000;

/**
 * Error with a machine-readable `code`. Server error codes are passed through
 * unchanged (`room-full`, `invalid-room`, `peer-id-taken`, ...); the SDK adds
 * `signaling-unreachable`, `signaling-closed`, `join-timeout`,
 * `reconnect-failed` and `left`.
 */
export class SwitchboardError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {{cause?: unknown, closeCode?: number, closeReason?: string}} [extra]
   */
  constructor(code, message, extra = {}) {
    super(message, extra.cause !== undefined ? { cause: extra.cause } : undefined);
    this.name = 'SwitchboardError';
    /** @type {string} */
    this.code = code;
    if (extra.closeCode !== undefined) this.closeCode = extra.closeCode;
    if (extra.closeReason !== undefined) this.closeReason = extra.closeReason;
  }
}

/**
 * An Event whose payload fields are copied onto the event itself and are also
 * available as `event.detail`, so both `({peer}) => ...` and
 * `(e) => e.detail.peer` work.
 */
export class SwitchboardEvent extends Event {
  /**
   * @param {string} type
   * @param {Record<string, unknown>} [fields]
   */
  constructor(type, fields = {}) {
    super(type);
    /** @type {Record<string, unknown>} */
    this.detail = fields;
    for (const [k, v] of Object.entries(fields)) {
      if (!(k in this)) {
        Object.defineProperty(this, k, { value: v, enumerable: true });
      }
    }
  }
}

/**
 * Compute the signaling WebSocket URL for a page: `?signal=ws://...` in the
 * page URL wins, otherwise `ws(s)://<host>/v1/ws` of the page itself.
 * @param {Location | URL} [loc]
 * @returns {string}
 */
export function defaultSignalingUrl(loc = globalThis.location) {
  const params = new URLSearchParams(loc.search);
  const override = params.get('signal');
  if (override) return override;
  const scheme = loc.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${loc.host}/v1/ws`;
}

/**
 * Parse an ICE candidate line ("candidate:..." or "a=candidate:...").
 * @param {string | {candidate?: string} | null | undefined} c
 * @returns {import('./switchboard').CandidateInfo | null}
 */
export function parseCandidate(c) {
  const line = typeof c === 'string' ? c : c && c.candidate;
  if (!line) return null;
  const parts = line.replace(/^a=/, '').replace(/^candidate:/, '').trim().split(/\s+/);
  if (parts.length < 8) return null;
  /** @type {import('./switchboard').CandidateInfo} */
  const info = {
    foundation: parts[0],
    component: Number(parts[1]),
    protocol: parts[2].toLowerCase(),
    priority: Number(parts[3]),
    address: parts[4],
    port: Number(parts[5]),
    type: parts[7],
  };
  for (let i = 8; i + 1 < parts.length; i += 2) {
    const key = parts[i];
    const val = parts[i + 1];
    if (key === 'raddr') info.relatedAddress = val;
    else if (key === 'rport') info.relatedPort = Number(val);
    else if (key === 'tcptype') info.tcpType = val;
  }
  return info;
}

// ---------------------------------------------------------------------------
// Signaling
// ---------------------------------------------------------------------------

/**
 * Per-remote-peer view of a SignalingChannel, in the shape of the W3C
 * examples: `send({description})`, `send({candidate})`, and 'message' events
 * carrying `description` and/or `candidate`. Messages that arrive before
 * anyone listens are queued and delivered to the first 'message' listener.
 */
export class PeerSignaling extends EventTarget {
  /** @type {SignalingChannel} */ #channel;
  /** @type {any[]} */ #queue = [];
  #listening = false;
  /** @type {((ev: any) => void) | null} */ #onmessage = null;

  /**
   * @param {SignalingChannel} channel
   * @param {string} peerId
   */
  constructor(channel, peerId) {
    super();
    this.#channel = channel;
    /** @type {string} */
    this.peerId = peerId;
  }

  /**
   * Relay an object to this peer (`{"type":"signal","to":peerId,"data":obj}`).
   * RTCSessionDescription / RTCIceCandidate values are converted with toJSON().
   * @param {{description?: any, candidate?: any, [k: string]: any}} data
   */
  send(data) {
    this.#channel.signal(this.peerId, data);
  }

  /** @param {any} fn */
  set onmessage(fn) {
    if (this.#onmessage) this.removeEventListener('message', this.#onmessage);
    this.#onmessage = fn;
    if (fn) this.addEventListener('message', fn);
  }

  get onmessage() {
    return this.#onmessage;
  }

  /**
   * @param {string} type
   * @param {any} listener
   * @param {any} [options]
   */
  addEventListener(type, listener, options) {
    super.addEventListener(type, listener, options);
    if (type === 'message' && listener && !this.#listening) {
      this.#listening = true;
      const queued = this.#queue.splice(0);
      if (queued.length) queueMicrotask(() => queued.forEach((d) => this.#dispatch(d)));
    }
  }

  /** @internal @param {any} data */
  _deliver(data) {
    if (this.#listening) this.#dispatch(data);
    else this.#queue.push(data);
  }

  /** @param {any} data */
  #dispatch(data) {
    /** @type {Record<string, unknown>} */
    const fields = { from: this.peerId, data };
    if (data && 'description' in data) fields.description = data.description;
    if (data && 'candidate' in data) fields.candidate = data.candidate;
    this.dispatchEvent(new SwitchboardEvent('message', fields));
  }
}

/**
 * The WebSocket to a switchboard server, kept alive across drops.
 *
 * Events: 'welcome', 'peer-joined', 'peer-left', 'signal', 'error' (server
 * error frames after the join, and transport errors), 'pong', 'close', and
 * for reconnects 'reconnecting', 'resumed' and 'rejoined'. Every event is a
 * SwitchboardEvent whose fields are the server message.
 *
 * When the socket ends without us asking (no close() or leave()), the
 * channel reconnects by itself with jittered exponential backoff and sends
 * `resume`; the server replays what was missed, so nothing is lost or seen
 * twice ('resumed'). When the server refuses the resume, it joins again with
 * the same peer id and the old session token ('rejoined'), and the Room
 * ICE-restarts its calls. After `reconnect.maxAttempts` failed attempts in a
 * row it gives up: 'error' with code `reconnect-failed`, then 'close'.
 */
export class SignalingChannel extends EventTarget {
  /** @type {WebSocket | null} */ #ws = null;
  /** @type {ReturnType<typeof setInterval> | null} */ #pingTimer = null;
  /** @type {ReturnType<typeof setTimeout> | null} */ #pongTimer = null;
  /** @type {ReturnType<typeof setInterval> | null} */ #ackTimer = null;
  /** @type {Map<string, PeerSignaling>} */ #peers = new Map();
  /** @type {{resolve: (w: any) => void, reject: (e: Error) => void} | null} */ #pendingJoin = null;
  #closedByUs = false;
  #session = new SessionTracker();
  /** What join() was called with, to join again after a failed resume. @type {{room: string, peer?: string, meta?: Record<string, unknown>} | null} */
  #joinArgs = null;
  // Reconnect state.
  /** What the current reconnect socket waits for. @type {'resume' | 'rejoin' | 'rejoin-any' | null} */
  #phase = null;
  #attempts = 0;
  #droppedAt = 0;
  /** Why the socket dropped: reported with every 'reconnecting' and a final 'close'. */
  #dropInfo = { code: 1006, reason: '' };
  /** The window had passed, or the id was lost: the rejoin is a new session towards the peers. */
  #fresh = false;
  #previousPeer = /** @type {string | null} */ (null);
  /** @type {ReturnType<typeof setTimeout> | null} */ #retryTimer = null;
  /** @type {ReturnType<typeof setTimeout> | null} */ #answerTimer = null;

  /**
   * @param {string} url WebSocket URL, e.g. `ws://127.0.0.1:8080/v1/ws`.
   * @param {import('./switchboard').SignalingChannelOptions} [options]
   */
  constructor(url, options = {}) {
    super();
    /** @type {string} */
    this.url = url;
    this.pingInterval = options.pingInterval ?? DEFAULT_PING_INTERVAL;
    this.pongTimeout = options.pongTimeout ?? DEFAULT_PONG_TIMEOUT;
    this.joinTimeout = options.joinTimeout ?? 10_000;
    const rc = options.reconnect;
    /** @type {{enabled: boolean, initialDelay: number, maxDelay: number, maxAttempts: number}} */
    const given = rc && typeof rc === 'object' ? rc : {};
    this.reconnect = {
      enabled: rc !== false,
      initialDelay: given.initialDelay ?? DEFAULT_RECONNECT.initialDelay,
      maxDelay: given.maxDelay ?? DEFAULT_RECONNECT.maxDelay,
      maxAttempts: Math.max(1, given.maxAttempts ?? DEFAULT_RECONNECT.maxAttempts),
    };
    /** @type {string | null} */
    this.room = null;
    /** @type {string | null} */
    this.peerId = null;
    /** @type {RTCIceServer[]} */
    this.iceServers = [];
    /** @type {'idle' | 'connecting' | 'joined' | 'reconnecting' | 'closed'} */
    this.state = 'idle';
  }

  /** The session token from `welcome` / `resumed` (null without one). */
  get session() {
    return this.#session.token;
  }

  /** Seconds the server keeps our session after a drop (0 when unknown). */
  get resumeWindow() {
    return this.#session.resumeWindow;
  }

  /** Highest server `seq` received in this session. */
  get lastSeq() {
    return this.#session.lastSeen;
  }

  /** Our signals the server has not acked yet. */
  get unackedSignals() {
    return this.#session.outbox.length;
  }

  /**
   * Open the WebSocket (if needed), send `join` and resolve with the
   * `welcome` message. Rejects with a SwitchboardError whose `code` is the
   * server's error code (e.g. `room-full`) or `signaling-unreachable` when
   * the WebSocket fails before the welcome. After a server error the
   * WebSocket stays open, so join() may be called again (say with another
   * peer id); call close() when giving up.
   * @param {string} room
   * @param {{peer?: string, meta?: Record<string, unknown>, token?: string}} [opts]
   * @returns {Promise<import('./switchboard').WelcomeMessage>}
   */
  join(room, opts = {}) {
    if (this.#pendingJoin) {
      return Promise.reject(new SwitchboardError('already-joined', 'a join is already in progress'));
    }
    if (this.state === 'joined' || this.state === 'reconnecting') {
      return Promise.reject(new SwitchboardError('already-joined', `already in room "${this.room}"; leave() first`));
    }
    this.#joinArgs = { room, peer: opts.peer, meta: opts.meta, token: opts.token };
    const msg = joinMessage(room, opts.peer, opts.meta, opts.token);

    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        if (!this.#pendingJoin) return;
        this.#pendingJoin = null;
        this.#closedByUs = true;
        this.#teardown();
        reject(new SwitchboardError('join-timeout', `no welcome from ${this.url} within ${this.joinTimeout} ms`));
      }, this.joinTimeout);
      this.#pendingJoin = {
        resolve: (w) => { clearTimeout(timer); resolve(w); },
        reject: (e) => { clearTimeout(timer); reject(e); },
      };
      if (this.#ws && this.#ws.readyState === WebSocket.OPEN) {
        this.#sendRaw(msg);
        return;
      }
      this.state = 'connecting';
      this.#closedByUs = false;
      try {
        this.#open(() => this.#sendRaw(msg));
      } catch (err) {
        this.#failJoin(new SwitchboardError('signaling-unreachable',
          `cannot open signaling WebSocket ${this.url}: ${err instanceof Error ? err.message : err}`, { cause: err }));
      }
    });
  }

  /**
   * Relay `data` to peer `to`. With a session, the signal is numbered and
   * kept until the server acks it, so one sent while reconnecting (or lost
   * with a dropped socket) goes out after the resume. Without a session
   * (a v1 server) a signal sent while reconnecting is dropped: the rejoin
   * ICE-restarts every call anyway.
   * @param {string} to
   * @param {Record<string, any>} data
   */
  signal(to, data) {
    /** @type {Record<string, unknown>} */
    const msg = { type: 'signal', to, data: toPlain(data) };
    if (this.state === 'reconnecting') {
      this.#session.number(msg);
      return;
    }
    if (this.#session.enabled && this.state === 'joined') {
      this.#session.number(msg);
      // A socket that just died is reported by its close event; the signal waits in the outbox.
      try { this.#sendRaw(msg); } catch { /* re-sent after the resume */ }
      return;
    }
    this.#sendRaw(msg);
  }

  /**
   * Per-peer signaling object (created on first use, cached).
   * @param {string} peerId
   * @returns {PeerSignaling}
   */
  to(peerId) {
    let p = this.#peers.get(peerId);
    if (!p) {
      p = new PeerSignaling(this, peerId);
      this.#peers.set(peerId, p);
    }
    return p;
  }

  /** Send `{"type":"leave"}`; the WebSocket stays open and may join again. */
  leave() {
    if (this.state === 'reconnecting') {
      // Nothing to leave on: the session simply ends with the window.
      this.#closedByUs = true;
      this.#stopReconnect();
      this.#teardown();
      this.state = 'closed';
    } else if (this.state === 'joined') {
      try { this.#sendRaw({ type: 'leave' }); } catch { /* the socket is gone; so is the session */ }
      this.state = this.#ws ? 'idle' : 'closed';
    } else {
      this.state = this.#ws ? 'idle' : 'closed';
    }
    this.#stopAcks();
    this.#session.end();
    this.room = null;
    this.#peers.clear();
  }

  /** Leave (if joined) and close the WebSocket; stops any reconnect. */
  close() {
    if (this.state === 'joined') {
      try { this.#sendRaw({ type: 'leave' }); } catch { /* closing anyway */ }
    }
    this.#closedByUs = true;
    const wasReconnecting = this.state === 'reconnecting';
    this.#stopReconnect();
    this.#session.end();
    const hadSocket = this.#teardown();
    if (wasReconnecting && !hadSocket) {
      this.state = 'closed';
      this.dispatchEvent(new SwitchboardEvent('close', {
        code: this.#dropInfo.code, reason: this.#dropInfo.reason, wasClean: false, byClient: true,
      }));
    }
  }

  /** Send a keepalive ping now. */
  ping() {
    this.#sendRaw({ type: 'ping' });
  }

  /** @param {Record<string, any>} msg */
  #sendRaw(msg) {
    const ws = this.#ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      throw new SwitchboardError('signaling-closed', 'signaling WebSocket is not open');
    }
    ws.send(JSON.stringify(msg));
  }

  /**
   * Open a WebSocket and make it the current one; `onOpen` runs once it is
   * open. Events of a socket that is no longer the current one are ignored.
   * @param {() => void} onOpen
   */
  #open(onOpen) {
    const ws = new WebSocket(this.url);
    this.#ws = ws;
    ws.addEventListener('open', () => {
      if (this.#ws !== ws) return;
      this.#startPing();
      onOpen();
    });
    ws.addEventListener('message', (ev) => {
      if (this.#ws === ws) this.#onFrame(ev);
    });
    ws.addEventListener('error', () => {
      if (this.#ws !== ws) return;
      if (this.#pendingJoin) {
        this.#failJoin(new SwitchboardError('signaling-unreachable',
          `signaling server unreachable at ${this.url}`));
      } else if (!this.#phase) {
        this.dispatchEvent(new SwitchboardEvent('error', {
          code: 'signaling-error', message: 'signaling WebSocket error',
          error: new SwitchboardError('signaling-error', 'signaling WebSocket error'),
        }));
      }
    });
    ws.addEventListener('close', (ev) => {
      if (this.#ws !== ws) {
        // An abandoned socket finishing its close; a close() of ours is still reported.
        return;
      }
      this.#ws = null;
      this.#onSocketGone(ev.code, ev.reason, ev.wasClean);
    });
    return ws;
  }

  /**
   * The current socket is gone (closed, or declared dead).
   * @param {number} code
   * @param {string} reason
   * @param {boolean} wasClean
   */
  #onSocketGone(code, reason, wasClean) {
    this.#stopPing();
    this.#stopAcks();
    if (this.#pendingJoin) {
      this.#failJoin(new SwitchboardError('signaling-unreachable',
        `signaling WebSocket closed before welcome (code ${code}${reason ? `, ${reason}` : ''})`,
        { closeCode: code, closeReason: reason }));
    }
    if (this.#closedByUs) {
      this.#stopReconnect();
      this.state = 'closed';
      this.dispatchEvent(new SwitchboardEvent('close', { code, reason, wasClean, byClient: true }));
      return;
    }
    if (this.#phase) {
      this.#attemptFailed(`socket closed (code ${code}${reason ? `, ${reason}` : ''})`);
      return;
    }
    if (this.state === 'joined' && this.reconnect.enabled) {
      this.#dropInfo = { code, reason };
      this.#droppedAt = Date.now();
      this.#attempts = 0;
      // A server without sessions announced our leave at once: the rejoin is new to everyone.
      this.#fresh = !this.#session.enabled;
      this.#previousPeer = this.peerId;
      this.state = 'reconnecting';
      this.#scheduleAttempt();
      return;
    }
    this.state = 'closed';
    this.dispatchEvent(new SwitchboardEvent('close', { code, reason, wasClean, byClient: false }));
  }

  /** Forget the current socket (its events are ignored from now on) and close it. */
  #abandonSocket() {
    const ws = this.#ws;
    this.#ws = null;
    this.#stopPing();
    this.#stopAcks();
    if (ws && (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING)) {
      try { ws.close(4000, 'reconnecting'); } catch { /* already closing */ }
    }
  }

  #scheduleAttempt() {
    const delay = backoffDelay(this.#attempts, this.reconnect);
    this.dispatchEvent(new SwitchboardEvent('reconnecting', {
      attempt: this.#attempts + 1, delay, code: this.#dropInfo.code, reason: this.#dropInfo.reason,
    }));
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = null;
      this.#attempt();
    }, delay);
  }

  /** One reconnect attempt: a new socket, then `resume` (or `join` when resuming cannot work). */
  #attempt() {
    if (this.state !== 'reconnecting') return;
    const canResume = this.#session.enabled && !this.#session.windowPassed(Date.now() - this.#droppedAt);
    if (!canResume && this.#session.enabled) this.#fresh = true;
    this.#phase = canResume ? 'resume' : 'rejoin';
    // Also bounds the connect: a network that drops SYNs leaves the socket CONNECTING for minutes.
    this.#armAnswerTimer();
    try {
      this.#open(() => {
        this.#armAnswerTimer();
        if (this.#phase === 'resume') this.#sendRaw(this.#session.resumeMessage(this.room));
        else this.#sendRejoin();
      });
    } catch (err) {
      this.#attemptFailed(`cannot open ${this.url}: ${err instanceof Error ? err.message : err}`);
    }
  }

  /** `join` again: same room, id and meta, with the old token so the id is ours to take over. */
  #sendRejoin() {
    const args = this.#joinArgs;
    if (!args) return;
    const peer = this.#phase === 'rejoin-any' ? undefined : (this.peerId ?? args.peer);
    // A rejoin needs the access token again (a resume does not).
    const msg = joinMessage(args.room, peer, args.meta, args.token);
    if (this.#session.token && this.#phase === 'rejoin') msg.session = this.#session.token;
    this.#sendRaw(msg);
  }

  #armAnswerTimer() {
    this.#clearAnswerTimer();
    this.#answerTimer = setTimeout(() => {
      this.#answerTimer = null;
      if (this.#phase) this.#attemptFailed(`no answer within ${this.joinTimeout} ms`);
    }, this.joinTimeout);
  }

  #clearAnswerTimer() {
    if (this.#answerTimer) clearTimeout(this.#answerTimer);
    this.#answerTimer = null;
  }

  /** @param {string} why */
  #attemptFailed(why) {
    this.#phase = null;
    this.#clearAnswerTimer();
    this.#abandonSocket();
    if (this.state !== 'reconnecting') return;
    this.#attempts += 1;
    if (this.#attempts >= this.reconnect.maxAttempts) {
      this.state = 'closed';
      this.#session.end();
      const err = new SwitchboardError('reconnect-failed',
        `signaling lost and ${this.#attempts} reconnect attempts failed (last: ${why}); existing calls continue but get no new signals`,
        { closeCode: this.#dropInfo.code, closeReason: this.#dropInfo.reason });
      this.dispatchEvent(new SwitchboardEvent('error', { code: err.code, message: err.message, error: err }));
      this.dispatchEvent(new SwitchboardEvent('close', {
        code: this.#dropInfo.code, reason: this.#dropInfo.reason, wasClean: false, byClient: false, error: err,
      }));
      return;
    }
    this.#scheduleAttempt();
  }

  #stopReconnect() {
    if (this.#retryTimer) clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
    this.#clearAnswerTimer();
    this.#phase = null;
  }

  /** The reconnect worked: back to normal operation. */
  #reconnected() {
    this.#phase = null;
    this.#clearAnswerTimer();
    this.#attempts = 0;
    this.state = 'joined';
    this.#startAcks();
  }

  #startPing() {
    this.#stopPing();
    if (this.pingInterval > 0) {
      this.#pingTimer = setInterval(() => {
        try { this.ping(); } catch { return; /* the close handler reports it */ }
        // A socket can die without a close (sleep, network change): no
        // answer at all within pongTimeout counts as a drop.
        if (this.pongTimeout > 0 && !this.#pongTimer) {
          this.#pongTimer = setTimeout(() => {
            this.#pongTimer = null;
            this.#declareDead(`no answer to ping within ${this.pongTimeout} ms`);
          }, this.pongTimeout);
        }
      }, this.pingInterval);
    }
  }

  /**
   * Treat the current socket as dropped without waiting for its close event
   * (which a dead network may take minutes to produce).
   * @param {string} reason
   */
  #declareDead(reason) {
    if (!this.#ws) return;
    this.#abandonSocket();
    this.#onSocketGone(1006, reason, false);
  }

  #stopPing() {
    if (this.#pingTimer) clearInterval(this.#pingTimer);
    this.#pingTimer = null;
    if (this.#pongTimer) clearTimeout(this.#pongTimer);
    this.#pongTimer = null;
  }

  #startAcks() {
    this.#stopAcks();
    if (!this.#session.enabled) return;
    this.#ackTimer = setInterval(() => this.#sendAck(true), 1000);
  }

  #stopAcks() {
    if (this.#ackTimer) clearInterval(this.#ackTimer);
    this.#ackTimer = null;
  }

  /** @param {boolean} force */
  #sendAck(force) {
    const seq = this.#session.ackDue(force);
    if (seq === null) return;
    try { this.#sendRaw({ type: 'ack', seq }); } catch { /* the resume tells the server what we have */ }
  }

  /** Close the current socket; returns whether there was one to close. */
  #teardown() {
    this.#stopPing();
    this.#stopAcks();
    const ws = this.#ws;
    if (ws && (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING)) {
      ws.close(1000, 'client closed');
      return true;
    }
    return false;
  }

  /**
   * Reject the pending join. Transport failures close the socket; a server
   * `error` leaves it open (the protocol allows joining again on it).
   * @param {SwitchboardError} err
   * @param {boolean} [teardown]
   */
  #failJoin(err, teardown = true) {
    const pending = this.#pendingJoin;
    this.#pendingJoin = null;
    if (!pending) return;
    if (teardown) {
      this.#closedByUs = true;
      this.#teardown();
    } else if (this.#ws) {
      this.state = 'idle';
    }
    pending.reject(err);
  }

  /** @param {MessageEvent} ev */
  #onFrame(ev) {
    if (this.#pongTimer) {
      // Anything from the server proves the socket alive.
      clearTimeout(this.#pongTimer);
      this.#pongTimer = null;
    }
    /** @type {any} */
    let msg;
    try {
      msg = JSON.parse(typeof ev.data === 'string' ? ev.data : '');
    } catch {
      this.dispatchEvent(new SwitchboardEvent('error', {
        code: 'bad-frame', message: 'server sent a frame that is not JSON',
        error: new SwitchboardError('bad-frame', 'server sent a frame that is not JSON'),
      }));
      return;
    }
    if (!msg || typeof msg.type !== 'string') return;
    switch (msg.type) {
      case 'welcome':
        if (this.#phase === 'rejoin' || this.#phase === 'rejoin-any') this.#onRejoined(msg);
        else this.#onWelcome(msg);
        break;
      case 'resumed':
        if (this.#phase === 'resume') this.#onResumed(msg);
        break;
      case 'error': {
        const err = new SwitchboardError(String(msg.code || 'error'), String(msg.message || msg.code || 'error'));
        if (this.#phase) {
          this.#onReconnectError(err);
        } else if (this.#pendingJoin) {
          this.#failJoin(err, false);
        } else {
          this.dispatchEvent(new SwitchboardEvent('error', { code: err.code, message: err.message, error: err }));
        }
        break;
      }
      case 'ack':
        this.#session.acked(msg.seq);
        break;
      case 'signal': {
        if (!this.#session.accept(msg.seq)) break;
        this.dispatchEvent(new SwitchboardEvent('signal', msg));
        if (typeof msg.from === 'string') this.to(msg.from)._deliver(msg.data);
        this.#sendAck(false);
        break;
      }
      case 'peer-left': {
        if (!this.#session.accept(msg.seq)) break;
        this.dispatchEvent(new SwitchboardEvent('peer-left', msg));
        this.#peers.delete(msg.peer);
        this.#sendAck(false);
        break;
      }
      case 'peer-joined':
        if (!this.#session.accept(msg.seq)) break;
        this.dispatchEvent(new SwitchboardEvent('peer-joined', { ...msg, meta: msg.meta ?? {} }));
        this.#sendAck(false);
        break;
      case 'pong':
        this.dispatchEvent(new SwitchboardEvent('pong', msg));
        break;
      default:
        // Unknown server message types are ignored (forward compatibility).
        this.dispatchEvent(new SwitchboardEvent('unknown', msg));
    }
  }

  /** @param {any} msg */
  #onWelcome(msg) {
    this.#session.welcome(msg);
    this.room = msg.room;
    this.peerId = msg.peer;
    this.iceServers = Array.isArray(msg.iceServers) ? msg.iceServers : [];
    this.state = 'joined';
    this.#startAcks();
    const pending = this.#pendingJoin;
    this.#pendingJoin = null;
    this.dispatchEvent(new SwitchboardEvent('welcome', msg));
    if (pending) pending.resolve(msg);
  }

  /** @param {any} msg */
  #onResumed(msg) {
    const resend = this.#session.resumed(msg);
    if (Array.isArray(msg.iceServers)) this.iceServers = msg.iceServers;
    this.#reconnected();
    const downtime = Date.now() - this.#droppedAt;
    this.dispatchEvent(new SwitchboardEvent('resumed', {
      ...msg, resent: resend.length, downtime,
    }));
    for (const m of resend) {
      try { this.#sendRaw(m); } catch { break; /* dropped again: the next resume sends them */ }
    }
  }

  /** @param {any} msg */
  #onRejoined(msg) {
    this.#session.welcome(msg);
    const previousPeer = this.#previousPeer;
    const fresh = this.#fresh || msg.peer !== previousPeer;
    this.room = msg.room;
    this.peerId = msg.peer;
    this.iceServers = Array.isArray(msg.iceServers) ? msg.iceServers : [];
    this.#reconnected();
    // The per-peer objects (to(id)) stay: the Room keeps the calls that go on.
    this.dispatchEvent(new SwitchboardEvent('rejoined', {
      ...msg, welcome: msg, fresh, previousPeer, downtime: Date.now() - this.#droppedAt,
    }));
  }

  /** @param {SwitchboardError} err */
  #onReconnectError(err) {
    if (this.#phase === 'resume' && err.code === 'resume-failed') {
      // The socket stays open: join again on it.
      this.#phase = 'rejoin';
      this.#armAnswerTimer();
      this.dispatchEvent(new SwitchboardEvent('resume-failed', { code: err.code, message: err.message, error: err }));
      try { this.#sendRejoin(); } catch { /* its close event counts the attempt */ }
      return;
    }
    if (this.#phase === 'rejoin' && err.code === 'peer-id-taken' && this.#session.token) {
      // The id went to someone else: join under a new id; every call starts over.
      this.#phase = 'rejoin-any';
      this.#fresh = true;
      this.#armAnswerTimer();
      try { this.#sendRejoin(); } catch { /* its close event counts the attempt */ }
      return;
    }
    // unavailable, room-full, a v1 server still holding our id, ...: try again later.
    this.#attemptFailed(`${err.code}: ${err.message}`);
  }
}

/**
 * @param {string} room
 * @param {string | undefined | null} peer
 * @param {Record<string, unknown> | undefined} meta
 * @param {string | undefined} [token] room access token (serve --auth-secret)
 * @returns {Record<string, unknown>}
 */
function joinMessage(room, peer, meta, token) {
  /** @type {Record<string, unknown>} */
  const msg = { type: 'join', room };
  if (peer) msg.peer = peer;
  if (meta) msg.meta = meta;
  if (token) msg.token = token;
  return msg;
}

/**
 * Convert RTCSessionDescription / RTCIceCandidate values to plain JSON.
 * @param {Record<string, any>} data
 */
function toPlain(data) {
  /** @type {Record<string, any>} */
  const out = {};
  for (const [k, v] of Object.entries(data)) {
    out[k] = v && typeof v.toJSON === 'function' ? v.toJSON() : v;
  }
  return out;
}

// ---------------------------------------------------------------------------
// Peer connections
// ---------------------------------------------------------------------------

/**
 * One remote peer in a room and the RTCPeerConnection to it.
 *
 * Events: 'timeline' ({entry}), 'statechange', 'track', 'datachannel',
 * 'close'. The Room re-dispatches all of them with `peer` set. Signal data
 * that is not negotiation (what the other side's `signal()` sent) is left
 * to the app: the SignalingChannel's 'signal' event has it, as it arrives.
 */
export class RemotePeer extends EventTarget {
  /** @type {Room} */ #room;
  /** @type {PeerSignaling} */ #sig;
  // Perfect negotiation state.
  #makingOffer = false;
  #ignoreOffer = false;
  #settingRemoteAnswerPending = false;
  /** Answerer side: no offers of our own until the newcomer's first offer is handled. */
  #holdNegotiation;
  #negotiationDeferred = false;
  #firstOfferHandled = false;
  /** Serializes handling of incoming signaling messages. */
  /** @type {Promise<void>} */ #inbox = Promise.resolve();
  #restarts = 0;
  /** Bumped after every setRemoteDescription, to detect stale offers. */
  #remoteDescriptions = 0;

  /**
   * @param {Room} room
   * @param {string} id
   * @param {Record<string, unknown>} meta
   * @param {boolean} weAreNewcomer true when this side got the peer from
   *   `welcome` (so it offers and is polite).
   * @param {boolean} [polite] overrides the politeness (a replacement
   *   connection keeps the roles of the one it replaces).
   */
  constructor(room, id, meta, weAreNewcomer, polite = weAreNewcomer) {
    super();
    this.#room = room;
    /** Remote peer id. */
    this.id = id;
    /** The `meta` the remote peer joined with. */
    this.meta = meta ?? {};
    /** Newcomer is polite (docs/protocol.md, Roles). */
    this.polite = polite;
    /** True when this side makes the first offer. */
    this.initiator = weAreNewcomer;
    this.#holdNegotiation = !weAreNewcomer;
    /** @type {import('./switchboard').TimelineEntry[]} */
    this.timeline = [];
    /** @type {{local: import('./switchboard').CandidateInfo[], remote: import('./switchboard').CandidateInfo[]}} */
    this.candidates = { local: [], remote: [] };
    /** @type {Map<string, RTCDataChannel>} */
    this.channels = new Map();
    /** All remote tracks of this peer, in one stream. */
    this.stream = new MediaStream();
    this.closed = false;

    /** @type {RTCConfiguration} */
    const config = { iceServers: room.iceServers };
    if (room.options.iceTransportPolicy) config.iceTransportPolicy = room.options.iceTransportPolicy;
    if (room.options.rtcConfig) Object.assign(config, room.options.rtcConfig);
    /** @type {RTCPeerConnection} */
    this.pc = new RTCPeerConnection(config);
    this.#sig = room.signaling.to(id);
    this.#log('pc-created', `RTCPeerConnection created (${weAreNewcomer ? 'newcomer: offers, polite' : 'existing peer: waits for offer, impolite'})`,
      { iceServers: config.iceServers?.length ?? 0, iceTransportPolicy: config.iceTransportPolicy ?? 'all' });
    this.#wire();
  }

  /** @returns {Room} */
  get room() {
    return this.#room;
  }

  /** Current states of the peer connection. */
  get state() {
    const pc = this.pc;
    return {
      iceConnectionState: pc.iceConnectionState,
      connectionState: pc.connectionState,
      signalingState: pc.signalingState,
      iceGatheringState: pc.iceGatheringState,
    };
  }

  /**
   * Record a timeline entry.
   * @param {string} step
   * @param {string} [detail]
   * @param {Record<string, unknown>} [data]
   */
  #log(step, detail = '', data) {
    const t = Math.round((performance.now() - this.#room.t0) * 1000) / 1000;
    /** @type {import('./switchboard').TimelineEntry} */
    const entry = { t, step, detail };
    if (data) entry.data = data;
    this.timeline.push(entry);
    this.dispatchEvent(new SwitchboardEvent('timeline', { peer: this, entry }));
    return entry;
  }

  /** Start: the newcomer adds media and data channels (this triggers the offer). */
  _start() {
    const opts = this.#room.options;
    if (this.initiator) {
      this.#addLocalTracks();
      this.#addRecvOnly();
      for (const dc of opts.dataChannels ?? []) {
        const channel = this.pc.createDataChannel(dc.label, dc.options);
        this.#log('datachannel-created', `data channel "${dc.label}" created`);
        this.#adoptChannel(channel, true);
      }
    }
    this.#sig.addEventListener('message', (ev) => this._handle(/** @type {any} */ (ev).data));
  }

  /**
   * Handle a signal from the remote peer (in order with the others).
   * @internal
   * @param {any} data
   */
  _handle(data) {
    this.#inbox = this.#inbox.then(() => this.#onSignal(data)).catch((err) => this.#fail('signal-handling', err));
  }

  /**
   * Our signaling session was replaced (rejoin after a failed resume): the
   * other side still has this connection, but signals in flight were lost.
   * ICE-restart so media keeps flowing, and make sure the first negotiation
   * happens even if its offer was among the lost.
   * @internal
   * @param {string} why
   */
  _restartIce(why) {
    this.#inbox = this.#inbox.then(async () => {
      if (this.closed) return;
      const pc = this.pc;
      if (!this.initiator && !this.#firstOfferHandled) {
        // The newcomer's first offer never arrived: offer ourselves.
        this.#firstOfferHandled = true;
        this.#holdNegotiation = false;
        this.#negotiationDeferred = false;
        this.#addLocalTracks();
        this.#addRecvOnly();
      }
      if (pc.signalingState === 'have-local-offer') {
        // Its answer may have been lost with the old session.
        this.#log('rollback', `${why}: our pending offer may be lost`);
        await pc.setLocalDescription({ type: 'rollback' });
      }
      this.#restarts = 0;
      this.#log('ice-restart', `restartIce() (${why})`);
      pc.restartIce();
    }).catch((err) => this.#fail('ice-restart', err));
  }

  /**
   * The remote peer joined again under its id, keeping this connection: it
   * will ICE-restart towards us. An offer of ours that its old session never
   * got would block that (the impolite side ignores colliding offers), so
   * roll it back; negotiation resumes after its offer.
   * @internal
   */
  _expectRestart() {
    this.#inbox = this.#inbox.then(async () => {
      if (this.closed) return;
      this.#log('peer-rejoined', `${this.id} joined again; expecting an ICE restart`);
      if (this.pc.signalingState === 'have-local-offer') {
        this.#log('rollback', 'our pending offer may be lost with its old session');
        await this.pc.setLocalDescription({ type: 'rollback' });
      }
    }).catch((err) => this.#fail('peer-rejoined', err));
  }

  /**
   * Point the connection at fresh ICE servers (new TURN credentials).
   * @internal
   * @param {RTCIceServer[]} iceServers
   */
  _setIceServers(iceServers) {
    if (this.closed || this.#room.options.iceServers) return;
    try {
      this.pc.setConfiguration({ ...this.pc.getConfiguration(), iceServers });
    } catch (err) {
      this.#log('setConfiguration-warning', errText(err));
    }
  }

  #wire() {
    const pc = this.pc;
    pc.addEventListener('negotiationneeded', () => this.#negotiate('negotiationneeded'));
    pc.addEventListener('icecandidate', (ev) => {
      if (this.closed) return;
      if (ev.candidate && ev.candidate.candidate) {
        const info = parseCandidate(ev.candidate.candidate);
        if (info) this.candidates.local.push(info);
        this.#log('local-candidate', ev.candidate.candidate, info ? { ...info } : undefined);
        this.#send({ candidate: ev.candidate.toJSON() });
      } else if (!ev.candidate) {
        this.#log('end-of-local-candidates', 'gathering finished, sent {candidate:null}');
        this.#send({ candidate: null });
      }
    });
    pc.addEventListener('icecandidateerror', (ev) => {
      const e = /** @type {RTCPeerConnectionIceErrorEvent} */ (ev);
      this.#log('icecandidateerror', `${e.url ?? ''} ${e.errorCode} ${e.errorText ?? ''}`.trim(),
        { url: e.url, errorCode: e.errorCode, errorText: e.errorText, address: e.address, port: e.port });
    });
    pc.addEventListener('icegatheringstatechange', () => {
      this.#log('ice-gathering-state', pc.iceGatheringState);
      this.#stateChanged();
    });
    pc.addEventListener('iceconnectionstatechange', () => {
      this.#log('ice-connection-state', pc.iceConnectionState);
      this.#stateChanged();
      if (pc.iceConnectionState === 'failed' && this.#restarts < 3 && !this.closed) {
        this.#restarts += 1;
        this.#log('ice-restart', `restartIce() (attempt ${this.#restarts})`);
        pc.restartIce();
      }
    });
    pc.addEventListener('connectionstatechange', () => {
      this.#log('connection-state', pc.connectionState);
      this.#stateChanged();
    });
    pc.addEventListener('signalingstatechange', () => {
      this.#log('signaling-state', pc.signalingState);
      this.#stateChanged();
    });
    pc.addEventListener('track', (ev) => {
      const { track, streams, transceiver } = ev;
      this.#log('track', `remote ${track.kind} track ${track.id} (mid ${transceiver?.mid ?? '?'})`);
      if (!this.stream.getTrackById(track.id)) this.stream.addTrack(track);
      this.dispatchEvent(new SwitchboardEvent('track', { peer: this, track, streams: [...streams], transceiver }));
    });
    pc.addEventListener('datachannel', (ev) => {
      this.#log('datachannel-received', `data channel "${ev.channel.label}" received`);
      this.#adoptChannel(ev.channel, false);
    });
  }

  /**
   * @param {RTCDataChannel} channel
   * @param {boolean} local
   */
  #adoptChannel(channel, local) {
    this.channels.set(channel.label, channel);
    channel.addEventListener('open', () => this.#log('datachannel-open', `"${channel.label}" open`));
    channel.addEventListener('close', () => this.#log('datachannel-close', `"${channel.label}" closed`));
    this.dispatchEvent(new SwitchboardEvent('datachannel', { peer: this, channel, local }));
  }

  #stateChanged() {
    this.dispatchEvent(new SwitchboardEvent('statechange', { peer: this, ...this.state }));
  }

  #addLocalTracks() {
    const stream = this.#room.localStream;
    if (!stream) return;
    for (const track of stream.getTracks()) {
      if (this.pc.getSenders().some((s) => s.track === track)) continue;
      this.pc.addTrack(track, stream);
      this.#log('addTrack', `local ${track.kind} track ${track.label || track.id}`);
    }
  }

  /** Add recvonly transceivers for kinds we want to receive but do not send. */
  #addRecvOnly() {
    const opts = this.#room.options;
    for (const kind of /** @type {const} */ (['audio', 'video'])) {
      const want = kind === 'audio' ? opts.recvAudio : opts.recvVideo;
      if (!want) continue;
      const have = this.pc.getTransceivers().some((t) =>
        t.direction !== 'stopped' && t.currentDirection !== 'stopped' && t.receiver.track?.kind === kind);
      if (!have) {
        this.pc.addTransceiver(kind, { direction: 'recvonly' });
        this.#log('addTransceiver', `${kind} recvonly (no local ${kind} track)`);
      }
    }
  }

  /**
   * Relay an app-defined object to this peer as `signal` data (it arrives
   * as the 'signal' event of the other side's SignalingChannel, and the
   * negotiation there ignores it). It must not use negotiation's keys
   * (`description`, `candidate`).
   * @param {Record<string, any>} data
   */
  signal(data) {
    if (!data || typeof data !== 'object' || 'description' in data || 'candidate' in data) {
      throw new TypeError('signal data must be an object without "description" or "candidate"');
    }
    this.#send(data);
  }

  /** @param {Record<string, any>} data */
  #send(data) {
    if (this.closed) return;
    try {
      this.#sig.send(data);
    } catch (err) {
      this.#fail('signal-send', err);
    }
  }

  /** @param {string} why */
  async #negotiate(why) {
    const pc = this.pc;
    if (this.closed) return;
    if (this.#holdNegotiation) {
      this.#negotiationDeferred = true;
      this.#log('negotiation-deferred', `${why}: waiting for the newcomer's first offer`);
      return;
    }
    if (pc.signalingState !== 'stable') {
      // Perfect negotiation: the event will fire again once we are stable.
      this.#log('negotiation-skipped', `${why} while ${pc.signalingState}`);
      return;
    }
    let retry = false;
    try {
      this.#makingOffer = true;
      const seen = this.#remoteDescriptions;
      this.#log('createOffer', why);
      const offer = await pc.createOffer();
      this.#log('createOffer-done', `offer created (${offer.sdp?.length ?? 0} bytes)`, { sdp: offer.sdp });
      if (pc.signalingState !== 'stable' || seen !== this.#remoteDescriptions) {
        // An offer from the other side was accepted while we were creating
        // ours: this offer is stale. Try again once we are stable.
        this.#log('offer-dropped', `remote description applied during createOffer (state ${pc.signalingState})`);
        retry = true;
        return;
      }
      this.#log('setLocalDescription', 'offer');
      await pc.setLocalDescription(offer);
      this.#log('setLocalDescription-done', 'offer');
      this.#send({ description: pc.localDescription?.toJSON() });
      this.#log('offer-sent', `offer sent to ${this.id}`, { sdp: pc.localDescription?.sdp });
    } catch (err) {
      if (!this.closed) this.#fail('negotiation', err);
    } finally {
      this.#makingOffer = false;
      if (retry) {
        this.#inbox = this.#inbox.then(() => {
          if (pc.signalingState === 'stable' && !this.closed) this.#negotiate(`${why} (retry)`);
        });
      }
    }
  }

  /** @param {any} data */
  async #onSignal(data) {
    if (this.closed || !data || typeof data !== 'object') return;
    const pc = this.pc;
    if (data.description) {
      const description = data.description;
      const type = description.type;
      if (type === 'rollback') {
        this.#log('rollback-received', 'remote rollback (ignored; rollbacks are local)');
        return;
      }
      this.#log(`${type}-received`, `${type} received from ${this.id}`, { sdp: description.sdp });
      const theirs = dtlsFingerprint(pc.remoteDescription?.sdp);
      const now = dtlsFingerprint(description.sdp);
      if (theirs && now && theirs !== now) {
        // A certificate never changes within one RTCPeerConnection: the other
        // side has a new one (it saw us leave while we thought we were back).
        this.#log('peer-replaced', `${type} from a new connection of ${this.id}`);
        this.#room._replacePeer(this, type === 'offer' ? data : null);
        return;
      }
      const readyForOffer = !this.#makingOffer &&
        (pc.signalingState === 'stable' || this.#settingRemoteAnswerPending);
      const offerCollision = type === 'offer' && !readyForOffer;
      this.#ignoreOffer = !this.polite && offerCollision;
      if (this.#ignoreOffer) {
        this.#log('offer-ignored', 'offer collision: impolite side keeps its own offer');
        return;
      }
      if (offerCollision && pc.signalingState === 'have-local-offer') {
        this.#log('rollback', 'offer collision: polite side rolls back its offer');
        await pc.setLocalDescription({ type: 'rollback' });
        this.#log('rollback-done', `signaling state ${pc.signalingState}`);
      }
      this.#settingRemoteAnswerPending = type === 'answer';
      this.#log('setRemoteDescription', type);
      try {
        await pc.setRemoteDescription(description);
      } finally {
        this.#settingRemoteAnswerPending = false;
      }
      this.#remoteDescriptions += 1;
      this.#log('setRemoteDescription-done', type);
      if (type === 'offer') {
        if (!this.#firstOfferHandled) {
          this.#firstOfferHandled = true;
          if (!this.initiator) {
            // Add our tracks now so that they reuse the offered transceivers.
            this.#addLocalTracks();
            this.#addRecvOnly();
            this.#holdNegotiation = false;
          }
        }
        this.#log('createAnswer');
        const answer = await pc.createAnswer();
        this.#log('createAnswer-done', `answer created (${answer.sdp?.length ?? 0} bytes)`, { sdp: answer.sdp });
        this.#log('setLocalDescription', 'answer');
        await pc.setLocalDescription(answer);
        this.#log('setLocalDescription-done', 'answer');
        this.#send({ description: pc.localDescription?.toJSON() });
        this.#log('answer-sent', `answer sent to ${this.id}`, { sdp: pc.localDescription?.sdp });
        if (this.#negotiationDeferred) {
          this.#negotiationDeferred = false;
          queueMicrotask(() => this.#negotiate('deferred negotiationneeded'));
        }
      }
    } else if ('candidate' in data) {
      const cand = data.candidate;
      if (!pc.remoteDescription) {
        // Signals arrive in order, so a candidate before any description
        // belongs to a connection of theirs that this one replaced.
        this.#log('candidate-dropped', 'candidate before any remote description (from a replaced connection)');
        return;
      }
      if (cand && cand.candidate) {
        const info = parseCandidate(cand.candidate);
        if (info) this.candidates.remote.push(info);
        this.#log('remote-candidate', cand.candidate, info ? { ...info } : undefined);
      } else {
        this.#log('end-of-remote-candidates', 'remote peer finished gathering');
      }
      try {
        await pc.addIceCandidate(cand && cand.candidate ? cand : null);
      } catch (err) {
        if (this.#ignoreOffer) {
          this.#log('addIceCandidate-ignored', 'candidate for an ignored offer');
        } else if (!cand || !cand.candidate) {
          // End-of-candidates is advisory; browsers differ in accepting it.
          this.#log('addIceCandidate-warning', `end-of-candidates not accepted: ${errText(err)}`);
        } else {
          throw err;
        }
      }
    }
  }

  /**
   * @param {string} where
   * @param {unknown} err
   */
  #fail(where, err) {
    this.#log('error', `${where}: ${errText(err)}`);
    this.dispatchEvent(new SwitchboardEvent('error', { peer: this, where, error: err }));
  }

  /**
   * The candidate pair ICE selected, from getStats(); null before one is.
   * @returns {Promise<import('./switchboard').SelectedCandidatePair | null>}
   */
  async getSelectedCandidatePair() {
    if (this.pc.connectionState === 'closed') return null;
    const stats = await this.pc.getStats();
    /** @type {any} */
    let pair = null;
    stats.forEach((s) => {
      if (s.type === 'transport' && s.selectedCandidatePairId) {
        pair = stats.get(s.selectedCandidatePairId) ?? pair;
      }
    });
    if (!pair) {
      stats.forEach((s) => {
        if (!pair && s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s;
      });
    }
    if (!pair) return null;
    /** @param {any} c */
    const side = (c) => c ? {
      candidateType: c.candidateType,
      protocol: c.protocol,
      address: c.address ?? c.ip,
      port: c.port,
      relayProtocol: c.relayProtocol,
      networkType: c.networkType,
    } : null;
    return {
      local: side(stats.get(pair.localCandidateId)),
      remote: side(stats.get(pair.remoteCandidateId)),
      state: pair.state,
      nominated: !!pair.nominated,
      currentRoundTripTime: pair.currentRoundTripTime,
      bytesSent: pair.bytesSent,
      bytesReceived: pair.bytesReceived,
    };
  }

  /** Close the peer connection (the room does this on peer-left and leave()). */
  close(reason = 'closed') {
    if (this.closed) return;
    this.#log('close', reason);
    this.closed = true;
    for (const ch of this.channels.values()) {
      try { ch.close(); } catch { /* already closed */ }
    }
    this.pc.close();
    this.dispatchEvent(new SwitchboardEvent('close', { peer: this, reason }));
  }
}

/**
 * The first `a=fingerprint:` value of an SDP, or null.
 * @param {string | undefined | null} sdp
 */
function dtlsFingerprint(sdp) {
  const m = typeof sdp === 'string' ? /^a=fingerprint:(.+)$/m.exec(sdp) : null;
  return m ? m[1].trim().toLowerCase() : null;
}

/** @param {unknown} err */
function errText(err) {
  if (err instanceof Error) return `${err.name}: ${err.message}`;
  return String(err);
}

/**
 * A joined room: the signaling channel plus one RemotePeer per other peer.
 *
 * Events: 'peer' ({peer}), 'peerleft' ({peer}), 'track' ({peer, track,
 * streams}), 'datachannel' ({peer, channel, local}), 'statechange' ({peer,
 * iceConnectionState, connectionState, signalingState, iceGatheringState}),
 * 'timeline' ({peer, entry}), 'error' ({error, peer?}), 'close' ({reason}),
 * and while signaling recovers from a drop 'reconnecting' ({attempt, delay,
 * code, reason}), then 'resumed' (nothing was lost; the peer connections
 * were not touched) or 'rejoined' ({fresh, restarted}: a new session; the
 * calls to peers still present were ICE-restarted, or re-created when
 * `fresh`), and 'peerrejoined' ({peer}) when another peer did that.
 */
export class Room extends EventTarget {
  /** @type {Array<() => void>} */ #pending = [];
  #started = false;
  /** Peers missing from a rejoin's welcome, removed unless they come back in time. @type {Map<string, ReturnType<typeof setTimeout>>} */
  #stale = new Map();

  /**
   * @param {string} url signaling WebSocket URL
   * @param {string} name room name
   * @param {import('./switchboard').JoinOptions} [options]
   */
  constructor(url, name, options = {}) {
    super();
    this.url = url;
    this.name = name;
    this.options = { recvAudio: false, recvVideo: false, ...options };
    /** performance.now() at join(); timeline times are relative to it. */
    this.t0 = performance.now();
    /** @type {MediaStream | null} */
    this.localStream = options.localStream ?? null;
    /** @type {Map<string, RemotePeer>} */
    this.peers = new Map();
    /** @type {RTCIceServer[]} */
    this.iceServers = [];
    /** Our own peer id (after join). @type {string | null} */
    this.peerId = null;
    this.left = false;
    this.signaling = new SignalingChannel(url, {
      pingInterval: options.pingInterval,
      pongTimeout: options.pongTimeout,
      joinTimeout: options.joinTimeout,
      reconnect: options.reconnect,
    });
  }

  /**
   * Connect and join. Resolves with the room once `welcome` arrived. Peers
   * listed in `welcome` are set up in a later task, so listeners added right
   * after `await room.join()` (or `await joinRoom()`) see every event.
   * @returns {Promise<Room>}
   */
  async join() {
    this.t0 = performance.now();
    const sig = this.signaling;
    /** @type {import('./switchboard').WelcomeMessage} */
    let welcome;
    try {
      welcome = await sig.join(this.name, {
        peer: this.options.peer, meta: this.options.meta, token: this.options.token,
      });
    } catch (err) {
      sig.close();
      throw err;
    }
    this.peerId = welcome.peer;
    this.iceServers = this.options.iceServers ?? welcome.iceServers ?? [];
    this.welcome = welcome;

    sig.addEventListener('peer-joined', (ev) => {
      const e = /** @type {any} */ (ev);
      this.#run(() => this.#addPeer(e.peer, e.meta, false));
    });
    sig.addEventListener('peer-left', (ev) => {
      const e = /** @type {any} */ (ev);
      this.#run(() => this.#removePeer(e.peer, 'peer-left'));
    });
    sig.addEventListener('error', (ev) => {
      const e = /** @type {any} */ (ev);
      // A transport error is always followed by 'close' or a reconnect; giving
      // up is reported with the 'close' below.
      if (e.code === 'signaling-error' || e.code === 'reconnect-failed') return;
      this.dispatchEvent(new SwitchboardEvent('error', { error: e.error, code: e.code, recoverable: true }));
    });
    sig.addEventListener('close', (ev) => {
      const e = /** @type {any} */ (ev);
      if (this.left || e.byClient) return;
      const err = e.error ?? new SwitchboardError('signaling-closed',
        `signaling connection closed (code ${e.code}${e.reason ? `, ${e.reason}` : ''}); existing calls continue.`,
        { closeCode: e.code, closeReason: e.reason });
      this.dispatchEvent(new SwitchboardEvent('signalingclose', { code: e.code, reason: e.reason }));
      this.dispatchEvent(new SwitchboardEvent('error', { error: err, code: err.code, recoverable: false }));
    });
    sig.addEventListener('reconnecting', (ev) => {
      this.dispatchEvent(new SwitchboardEvent('reconnecting', /** @type {any} */ (ev).detail));
    });
    sig.addEventListener('resumed', (ev) => {
      const e = /** @type {any} */ (ev);
      this.#refreshIceServers(e.iceServers);
      this.dispatchEvent(new SwitchboardEvent('resumed', e.detail));
    });
    sig.addEventListener('rejoined', (ev) => {
      const e = /** @type {any} */ (ev);
      this.#run(() => this.#onRejoined(e.detail));
    });

    setTimeout(() => {
      this.#started = true;
      for (const p of welcome.peers ?? []) this.#addPeer(p.peer, p.meta, true);
      for (const fn of this.#pending.splice(0)) fn();
    }, 0);
    return this;
  }

  /** @param {() => void} fn */
  #run(fn) {
    if (this.#started) fn();
    else this.#pending.push(fn);
  }

  /**
   * @param {string} id
   * @param {Record<string, unknown>} meta
   * @param {boolean} weAreNewcomer
   */
  #addPeer(id, meta, weAreNewcomer) {
    if (this.left) return;
    const old = this.peers.get(id);
    if (old && !old.closed && old.pc.connectionState !== 'closed' && !weAreNewcomer) {
      // It joined again with its old session (docs/protocol.md, "Rejoin with
      // the same id"): keep the call, it ICE-restarts towards us.
      this.#unstale(id);
      old._expectRestart();
      this.dispatchEvent(new SwitchboardEvent('peerrejoined', { peer: old }));
      return;
    }
    if (old) this.#removePeer(id, 'replaced by a new peer with the same id');
    this.#createPeer(id, meta, weAreNewcomer);
  }

  /**
   * @param {string} id
   * @param {Record<string, unknown>} meta
   * @param {boolean} initiator
   * @param {boolean} [polite]
   */
  #createPeer(id, meta, initiator, polite = initiator) {
    const peer = new RemotePeer(this, id, meta, initiator, polite);
    this.peers.set(id, peer);
    for (const type of ['timeline', 'statechange', 'track', 'datachannel', 'error']) {
      peer.addEventListener(type, (ev) => {
        this.dispatchEvent(new SwitchboardEvent(type, /** @type {any} */ (ev).detail));
      });
    }
    this.dispatchEvent(new SwitchboardEvent('peer', { peer }));
    peer._start();
    return peer;
  }

  /**
   * @param {string} id
   * @param {string} reason
   */
  #removePeer(id, reason) {
    this.#unstale(id);
    const peer = this.peers.get(id);
    if (!peer) return;
    this.peers.delete(id);
    peer.close(reason);
    this.dispatchEvent(new SwitchboardEvent('peerleft', { peer, reason }));
  }

  /**
   * The other side of `old` has a new RTCPeerConnection (seen from a changed
   * DTLS fingerprint): replace ours, keeping the roles, and hand the new one
   * the offer that revealed it (an answer is dropped: the new connection
   * offers afresh).
   * @internal
   * @param {RemotePeer} old
   * @param {any} offer signal data holding the new side's offer, or null
   */
  _replacePeer(old, offer) {
    if (this.left || this.peers.get(old.id) !== old) return;
    this.#removePeer(old.id, 'the remote peer started a new connection');
    const peer = this.#createPeer(old.id, old.meta, !offer, old.polite);
    if (offer) peer._handle(offer);
  }

  /** @param {RTCIceServer[] | undefined} iceServers */
  #refreshIceServers(iceServers) {
    if (!Array.isArray(iceServers) || this.options.iceServers) return;
    this.iceServers = iceServers;
    for (const p of this.peers.values()) p._setIceServers(iceServers);
  }

  /**
   * A new signaling session after a failed resume. Calls to peers still
   * present are ICE-restarted (their side kept the connection); peers we did
   * not know are called as a newcomer; peers missing from the list are given
   * the resume window to come back (they may be rejoining too). When the
   * rejoin is `fresh` (the window had passed, or we got a new id) the others
   * have dropped our calls, so every call starts over.
   * @param {any} e
   */
  #onRejoined(e) {
    if (this.left) return;
    this.peerId = e.peer;
    this.welcome = e.welcome;
    this.#refreshIceServers(e.iceServers);
    /** @type {Array<{peer: string, meta: Record<string, unknown>}>} */
    const present = Array.isArray(e.peers) ? e.peers : [];
    const ids = new Set(present.map((p) => p.peer));
    if (e.fresh) {
      for (const id of [...this.peers.keys()]) this.#removePeer(id, 'rejoined as a new session');
    }
    /** @type {string[]} */
    const restarted = [];
    for (const { peer: id, meta } of present) {
      const have = this.peers.get(id);
      if (have && !have.closed && have.pc.connectionState !== 'closed') {
        this.#unstale(id);
        have._restartIce('rejoined');
        restarted.push(id);
      } else {
        this.#addPeer(id, meta ?? {}, true);
      }
    }
    const windowMs = Math.max(1, this.signaling.resumeWindow || 20) * 1000;
    for (const id of this.peers.keys()) {
      if (ids.has(id) || this.#stale.has(id)) continue;
      this.#stale.set(id, setTimeout(() => {
        this.#stale.delete(id);
        this.#removePeer(id, 'not back in the room after our rejoin');
      }, windowMs));
    }
    this.dispatchEvent(new SwitchboardEvent('rejoined', {
      peer: e.peer, fresh: !!e.fresh, restarted, downtime: e.downtime,
    }));
  }

  /** @param {string} id */
  #unstale(id) {
    const t = this.#stale.get(id);
    if (t) clearTimeout(t);
    this.#stale.delete(id);
  }

  /**
   * Look up a remote peer by id.
   * @param {string} id
   */
  peer(id) {
    return this.peers.get(id);
  }

  /** Leave the room: close every peer connection and the signaling socket. */
  leave() {
    if (this.left) return;
    this.left = true;
    for (const id of [...this.peers.keys()]) this.#removePeer(id, 'left the room');
    this.signaling.close();
    this.dispatchEvent(new SwitchboardEvent('close', { reason: 'left' }));
  }
}

/**
 * Join a room: connect to the signaling server at `url`, send `join`, and
 * connect to every other peer. Rejects with a SwitchboardError (`.code`
 * `room-full`, `signaling-unreachable`, `invalid-room`, and on a server with
 * access tokens `unauthorized`, `token-expired`, `peer-not-allowed`, ...).
 * @param {string} url signaling WebSocket URL (`ws(s)://host/v1/ws`)
 * @param {string} room room name
 * @param {import('./switchboard').JoinOptions} [options]
 * @returns {Promise<Room>}
 */
export async function joinRoom(url, room, options = {}) {
  const r = new Room(url, room, options);
  return r.join();
}
