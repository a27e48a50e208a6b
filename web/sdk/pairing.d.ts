/** Pairing by link (crates/pairing's link mode): prove a shared 128-bit key and bind it to the DTLS fingerprints. */
export declare const PAIRING_VERSION: 1;
/** Links name rooms `pair-1` … `pair-999`. */
export declare const NAMEPLATES: 999;

/** Why a pairing failed; `code` is what the CLI reports too. */
export declare class PairingError extends Error {
  constructor(code: PairingError['code'], message: string);
  readonly code: 'wrong-code' | 'tampered' | 'pairing' | 'bad-link';
}

/** A link's secret: its room and 16-byte key. */
export interface LinkSecret {
  room: string;
  key: Uint8Array;
}

/** A pairing message, carried as `signal` data. */
export interface PairingMessage {
  pair: { v: 1; check?: string; bind?: string; spake?: string };
}

export declare function toBase64Url(bytes: Uint8Array): string;
/** Null when `text` is not strict unpadded base64url. */
export declare function fromBase64Url(text: string): Uint8Array | null;
/** Reads `https://host/drop#room=…&key=…` or just the fragment; throws PairingError `bad-link`. */
export declare function parseLink(text: string): LinkSecret;
/** `room=…&key=…`, what goes after the `#`. */
export declare function linkFragment(link: LinkSecret): string;
/** A fresh key, in `room` or a random `pair-N`. */
export declare function newLink(room?: string): LinkSecret;
/** `pair-N`, N uniform in 1..999. */
export declare function randomPairRoom(): string;
/** HMAC-SHA-256 on ./sha256.js (no WebCrypto needed). */
export declare function hmacSha256Fallback(key: Uint8Array, data: Uint8Array): Uint8Array;
/** HMAC-SHA-256 of `parts`, each preceded by its 4-byte big-endian length. */
export declare function mac(key: Uint8Array, parts: Array<string | Uint8Array>, opts?: { subtle?: boolean }): Promise<Uint8Array>;
/** The check and bind keys of a link. */
export declare function linkKeys(link: LinkSecret, opts?: { subtle?: boolean }): Promise<{ check: Uint8Array; bind: Uint8Array }>;
/** The normalized, sorted `a=fingerprint` values of a description; throws PairingError `pairing` when there are none. */
export declare function fingerprints(sdp: string): string;
/** Whether a `signal`'s data is a pairing message. */
export declare function isPairingMessage(data: unknown): data is PairingMessage;

/** One side of a link pairing with one peer. Events: 'verified', 'failed' (with `error`). */
export declare class LinkPairing extends EventTarget {
  constructor(link: LinkSecret, role: 'host' | 'guest', opts: { send: (data: PairingMessage) => void; subtle?: boolean });
  readonly role: 'host' | 'guest';
  /** Both sides proved the key and saw the same fingerprints. */
  verified: boolean;
  /** The failure, once there was one. */
  readonly error: PairingError | null;
  /** A pairing message from the peer; rejects with a PairingError when the pairing failed. */
  handle(data: unknown): Promise<void>;
  /** This side's local and remote descriptions, once both are set. */
  setDescriptions(localSdp: string, remoteSdp: string): Promise<void>;
  /** Resolves once every message and description given so far was taken (or the pairing failed). */
  settled(): Promise<unknown>;
  /** A new connection to the same peer: bind again; the key stays. */
  newConnection(): Promise<void>;
}
