// Type declarations for session.js: the sans-IO bookkeeping of a resumable
// signaling session (docs/protocol.md, "Sessions: reconnect and resume").

/** Ack once this many server messages are unacked (64). */
export declare const DEFAULT_ACK_EVERY: number;

export interface ReconnectOptions {
  /** Upper bound of the first retry's delay, in ms (default 1000; the first retry comes within it). */
  initialDelay?: number;
  /** Cap of the doubling delay, in ms (default 10000). */
  maxDelay?: number;
  /**
   * Failed attempts in a row before giving up with a `reconnect-failed`
   * error and a 'close' event (default 10). An attempt fails when the socket
   * does not open, closes, or the server does not answer within joinTimeout,
   * or refuses both the resume and the join (e.g. `unavailable`, `room-full`).
   */
  maxAttempts?: number;
}

/** `{initialDelay: 1000, maxDelay: 10000, maxAttempts: 10}`. */
export declare const DEFAULT_RECONNECT: Readonly<Required<ReconnectOptions>>;

/**
 * Delay before reconnect attempt `attempt` (0 = first): uniformly random in
 * [base/2, base], base = min(maxDelay, initialDelay * 2^attempt).
 */
export declare function backoffDelay(attempt: number, options?: ReconnectOptions, random?: () => number): number;

/** Seq/ack bookkeeping of one session; no I/O, no timers. */
export declare class SessionTracker {
  constructor(options?: { ackEvery?: number });
  ackEvery: number;
  /** Token from welcome/resumed; null when the server offered none (v1). */
  token: string | null;
  /** Seconds the server keeps a dropped session. */
  resumeWindow: number;
  /** Highest server seq received. */
  lastSeen: number;
  /** Highest server seq acked. */
  lastAcked: number;
  /** Seq of our next signal (from 1 per session). */
  nextSeq: number;
  /** Our numbered signals not yet acked by the server, in seq order. */
  outbox: Array<Record<string, unknown> & { seq: number }>;
  /** True when the server offered a session. */
  readonly enabled: boolean;
  /** A welcome starts a new session: everything resets. */
  welcome(msg: { session?: unknown; resumeWindow?: unknown }): void;
  /** The session ended (leave/close). */
  end(): void;
  /** Deliver this server message? False for a duplicate (seq <= lastSeen); true without seq. */
  accept(seq: unknown): boolean;
  /** Seq to ack now (counted as acked), or null; `force` acks any unacked message. */
  ackDue(force?: boolean): number | null;
  /** Put the next seq on an outgoing signal and keep it until acked (no-op without a session). */
  number<T extends Record<string, unknown>>(msg: T): T;
  /** The server handled our signals up to `seq`. */
  acked(seq: unknown): void;
  /** `{"type":"resume","session":...,"seq":lastSeen,"room"?}`. */
  resumeMessage(room?: string | null): { type: 'resume'; session: string | null; seq: number; room?: string };
  /** Apply a `resumed`; returns our signals to send again (seq > its ack). */
  resumed(msg: { session?: unknown; resumeWindow?: unknown; ack?: unknown }): Array<Record<string, unknown>>;
  /** True when `elapsedMs` since the drop is past the resume window. */
  windowPassed(elapsedMs: number): boolean;
}
