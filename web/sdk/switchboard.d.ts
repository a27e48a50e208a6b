// Type declarations for switchboard.js (signaling protocol v1).

import type { ReconnectOptions } from './session.js';
export { SessionTracker, DEFAULT_RECONNECT, backoffDelay } from './session.js';
export type { ReconnectOptions } from './session.js';

export declare const PROTOCOL_VERSION: 1;
export declare const DEFAULT_PING_INTERVAL: number;
/** Default wait for an answer to a ping before the socket counts as dropped (5000 ms). */
export declare const DEFAULT_PONG_TIMEOUT: number;

/** Error codes sent by the server in `{"type":"error"}` frames. */
export type ServerErrorCode =
  | 'bad-message'
  | 'not-joined'
  | 'already-joined'
  | 'invalid-room'
  | 'invalid-peer'
  | 'room-full'
  | 'peer-id-taken'
  | 'unknown-peer'
  | 'too-large'
  | 'rate-limited'
  | 'resume-failed'
  | 'unavailable';

/** Error codes added by the SDK. */
export type ClientErrorCode =
  | 'signaling-unreachable'
  | 'signaling-closed'
  | 'signaling-error'
  | 'join-timeout'
  | 'bad-frame'
  | 'already-joined'
  /** Signaling dropped and `reconnect.maxAttempts` attempts in a row failed. */
  | 'reconnect-failed';

export declare class SwitchboardError extends Error {
  constructor(code: string, message: string, extra?: { cause?: unknown; closeCode?: number; closeReason?: string });
  readonly name: 'SwitchboardError';
  code: ServerErrorCode | ClientErrorCode | (string & {});
  /** WebSocket close code, when the error comes from a close. */
  closeCode?: number;
  closeReason?: string;
}

/** Event whose payload fields are on the event itself and in `detail`. */
export declare class SwitchboardEvent<T extends object = Record<string, unknown>> extends Event {
  constructor(type: string, fields?: T);
  readonly detail: T;
}
export type FieldsEvent<T extends object> = SwitchboardEvent<T> & Readonly<T>;

/** Page helper: `?signal=` override or `ws(s)://<host>/v1/ws`. */
export declare function defaultSignalingUrl(loc?: Location | URL): string;

export interface CandidateInfo {
  foundation: string;
  component: number;
  /** 'udp' | 'tcp' */
  protocol: string;
  priority: number;
  address: string;
  port: number;
  /** 'host' | 'srflx' | 'prflx' | 'relay' */
  type: string;
  relatedAddress?: string;
  relatedPort?: number;
  tcpType?: string;
}
export declare function parseCandidate(c: string | { candidate?: string } | null | undefined): CandidateInfo | null;

// --- wire messages -------------------------------------------------------

export interface PeerInfo {
  peer: string;
  meta: Record<string, unknown>;
}
export interface WelcomeMessage {
  type: 'welcome';
  room: string;
  peer: string;
  peers: PeerInfo[];
  iceServers: RTCIceServer[];
  /** Session token (absent from servers without sessions). Opaque. */
  session?: string;
  /** Seconds the session survives a dropped socket. */
  resumeWindow?: number;
}
/** Answer to `resume`: the missed messages follow. */
export interface ResumedMessage {
  type: 'resumed';
  room: string;
  peer: string;
  peers: PeerInfo[];
  iceServers: RTCIceServer[];
  session: string;
  resumeWindow: number;
  /** Highest client seq the server handled; ours above it are sent again. */
  ack: number;
}
export interface PeerJoinedMessage {
  type: 'peer-joined';
  peer: string;
  meta: Record<string, unknown>;
  seq?: number;
}
export interface PeerLeftMessage {
  type: 'peer-left';
  peer: string;
  seq?: number;
}
/** What peers relay to each other (opaque to the server). */
export interface SignalData {
  description?: RTCSessionDescriptionInit;
  candidate?: RTCIceCandidateInit | null;
  [key: string]: unknown;
}
export interface SignalMessage {
  type: 'signal';
  from: string;
  data: SignalData;
  seq?: number;
}
export interface ErrorFields {
  code: string;
  message: string;
  error: SwitchboardError;
}
export interface CloseFields {
  code: number;
  reason: string;
  wasClean: boolean;
  /** True when the client closed the socket itself. */
  byClient: boolean;
  /** Set when the channel gave up reconnecting (code `reconnect-failed`). */
  error?: SwitchboardError;
}
export interface ReconnectingFields {
  /** 1 for the first attempt after the drop. */
  attempt: number;
  /** ms until this attempt. */
  delay: number;
  /** Close code and reason of the socket that dropped. */
  code: number;
  reason: string;
}
export interface ResumedFields extends ResumedMessage {
  /** How many of our signals were sent again. */
  resent: number;
  /** ms from the drop to the resume. */
  downtime: number;
}
export interface RejoinedFields extends WelcomeMessage {
  welcome: WelcomeMessage;
  /**
   * True when the others have surely dropped our calls (the resume window
   * had passed, the server gave us another id, or it has no sessions and
   * announced our leave at once): every call starts over.
   * Otherwise the calls to peers still present are ICE-restarted.
   */
  fresh: boolean;
  /** Our peer id before the drop. */
  previousPeer: string | null;
  /** ms from the drop to the rejoin. */
  downtime: number;
}

// --- signaling -----------------------------------------------------------

export interface SignalMessageFields {
  from: string;
  data: SignalData;
  description?: RTCSessionDescriptionInit;
  candidate?: RTCIceCandidateInit | null;
}

export interface PeerSignalingEventMap {
  message: FieldsEvent<SignalMessageFields>;
}

/** Per-peer view of a SignalingChannel, in the W3C examples' shape. */
export declare class PeerSignaling extends EventTarget {
  readonly peerId: string;
  send(data: { description?: RTCSessionDescriptionInit | RTCSessionDescription | null; candidate?: RTCIceCandidateInit | RTCIceCandidate | null; [k: string]: unknown }): void;
  onmessage: ((ev: FieldsEvent<SignalMessageFields>) => void) | null;
  addEventListener<K extends keyof PeerSignalingEventMap>(type: K, listener: (ev: PeerSignalingEventMap[K]) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
}

export interface SignalingChannelEventMap {
  welcome: FieldsEvent<WelcomeMessage>;
  'peer-joined': FieldsEvent<PeerJoinedMessage>;
  'peer-left': FieldsEvent<PeerLeftMessage>;
  signal: FieldsEvent<SignalMessage>;
  error: FieldsEvent<ErrorFields>;
  pong: FieldsEvent<{ type: 'pong' }>;
  /** The channel is closed for good: by close()/leave(), or after giving up reconnecting. */
  close: FieldsEvent<CloseFields>;
  /** The socket dropped (or an attempt failed); attempt number `attempt` comes in `delay` ms. */
  reconnecting: FieldsEvent<ReconnectingFields>;
  /** The session was taken back; missed messages follow, nothing was lost. */
  resumed: FieldsEvent<ResumedFields>;
  /** The server refused the resume; the channel joins again next. */
  'resume-failed': FieldsEvent<ErrorFields>;
  /** A new session after a failed resume (same room, same id where possible). */
  rejoined: FieldsEvent<RejoinedFields>;
  unknown: FieldsEvent<Record<string, unknown>>;
}

export interface SignalingChannelOptions {
  /** Keepalive ping interval in ms (default 10000; 0 disables). */
  pingInterval?: number;
  /**
   * If nothing at all arrives within this many ms after a ping, the socket
   * counts as dropped and the channel reconnects (default 5000; 0 disables).
   */
  pongTimeout?: number;
  /** How long join() waits for `welcome`, and a reconnect for its answer, in ms (default 10000). */
  joinTimeout?: number;
  /**
   * Reconnect after a drop: jittered exponential backoff, then `resume`,
   * or `join` again when that is refused. `false` turns it off (a drop then
   * closes the channel, as in earlier versions). Default
   * `{initialDelay: 1000, maxDelay: 10000, maxAttempts: 10}`.
   */
  reconnect?: false | ReconnectOptions;
}

/**
 * The WebSocket to a switchboard server, kept alive across drops.
 *
 * When the socket ends without close()/leave() (reset, network loss, a
 * server restart, or no answer to a ping within `pongTimeout`), the channel
 * emits 'reconnecting' and retries with jittered exponential backoff (the
 * first retry within `reconnect.initialDelay`, the delay doubling up to
 * `reconnect.maxDelay`). Each attempt sends `resume` with the highest server
 * seq seen; on `resumed` the server replays what was missed, the channel
 * re-sends its own unacked signals, and emits 'resumed'. On `resume-failed`
 * (or once the resume window has surely passed) it sends `join` again with
 * the same room, peer id, meta and the old session token, and emits
 * 'rejoined'. After `reconnect.maxAttempts` failed attempts in a row it
 * emits 'error' (code `reconnect-failed`) and 'close'.
 *
 * While joined it acks server messages (every 64, and once a second while
 * any is unacked) and numbers its signals from 1, keeping each until the
 * server acks it.
 */
export declare class SignalingChannel extends EventTarget {
  constructor(url: string, options?: SignalingChannelOptions);
  readonly url: string;
  pingInterval: number;
  pongTimeout: number;
  joinTimeout: number;
  reconnect: Required<ReconnectOptions> & { enabled: boolean };
  room: string | null;
  peerId: string | null;
  iceServers: RTCIceServer[];
  state: 'idle' | 'connecting' | 'joined' | 'reconnecting' | 'closed';
  /** Session token of the current session (null without one). */
  readonly session: string | null;
  /** Seconds the server keeps our session after a drop. */
  readonly resumeWindow: number;
  /** Highest server seq received in this session. */
  readonly lastSeq: number;
  /** Our signals the server has not acked yet. */
  readonly unackedSignals: number;
  /**
   * Rejects with SwitchboardError (`room-full`, `signaling-unreachable`, ...).
   * After a server error the socket stays open and join() may be retried.
   */
  join(room: string, opts?: { peer?: string; meta?: Record<string, unknown>; token?: string }): Promise<WelcomeMessage>;
  /**
   * Relay to a peer. With a session the signal is numbered and kept until
   * acked, so one sent while reconnecting goes out after the resume.
   */
  signal(to: string, data: SignalData): void;
  to(peerId: string): PeerSignaling;
  leave(): void;
  close(): void;
  ping(): void;
  addEventListener<K extends keyof SignalingChannelEventMap>(type: K, listener: (ev: SignalingChannelEventMap[K]) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
  removeEventListener<K extends keyof SignalingChannelEventMap>(type: K, listener: (ev: SignalingChannelEventMap[K]) => void, options?: boolean | EventListenerOptions): void;
  removeEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | EventListenerOptions): void;
}

// --- rooms and peers -----------------------------------------------------

export interface DataChannelSpec {
  label: string;
  options?: RTCDataChannelInit;
}

export interface JoinOptions {
  /** Requested peer id (1–64 of [A-Za-z0-9_-]); the server picks one if absent. */
  peer?: string;
  /** Handed unchanged to the other peers. */
  meta?: Record<string, unknown>;
  /**
   * Room access token (a JWT from your backend, or `switchboard token`),
   * sent in `join`; needed when the server runs with `--auth-secret`.
   * Refusals reject with `unauthorized`, `token-expired` or
   * `peer-not-allowed`. A resume needs none; a rejoin sends it again.
   */
  token?: string;
  /** Tracks to send to every peer. */
  localStream?: MediaStream | null;
  /** Data channels the newcomer creates for each peer. */
  dataChannels?: DataChannelSpec[];
  /** Overrides the `iceServers` from `welcome`. */
  iceServers?: RTCIceServer[];
  /** 'relay' to allow only TURN candidates. */
  iceTransportPolicy?: RTCIceTransportPolicy;
  /** Add a recvonly audio transceiver when there is no local audio track. */
  recvAudio?: boolean;
  /** Add a recvonly video transceiver when there is no local video track. */
  recvVideo?: boolean;
  /** Extra RTCConfiguration fields merged into every peer connection. */
  rtcConfig?: RTCConfiguration;
  pingInterval?: number;
  pongTimeout?: number;
  joinTimeout?: number;
  /** See SignalingChannelOptions.reconnect. */
  reconnect?: false | ReconnectOptions;
}

export interface TimelineEntry {
  /** ms since join (performance.now() based, 3 decimals). */
  t: number;
  /**
   * Step name: 'pc-created', 'addTrack', 'addTransceiver', 'createOffer',
   * 'createOffer-done', 'setLocalDescription', 'setLocalDescription-done',
   * 'offer-sent', 'offer-received', 'offer-ignored', 'rollback',
   * 'rollback-done', 'setRemoteDescription', 'setRemoteDescription-done',
   * 'createAnswer', 'createAnswer-done', 'answer-sent', 'answer-received',
   * 'local-candidate', 'remote-candidate', 'end-of-local-candidates',
   * 'end-of-remote-candidates', 'ice-gathering-state',
   * 'ice-connection-state', 'connection-state', 'signaling-state', 'track',
   * 'datachannel-created', 'datachannel-received', 'datachannel-open',
   * 'ice-restart', 'peer-rejoined', 'peer-replaced', 'error', 'close', ...
   */
  step: string;
  detail: string;
  /** Parsed candidate for candidate steps, SDP for description steps, ... */
  data?: Record<string, unknown> & Partial<CandidateInfo> & { sdp?: string };
}

export interface CandidatePairSide {
  candidateType: string;
  protocol: string;
  address: string;
  port: number;
  relayProtocol?: string;
  networkType?: string;
}
export interface SelectedCandidatePair {
  local: CandidatePairSide | null;
  remote: CandidatePairSide | null;
  state: string;
  nominated: boolean;
  currentRoundTripTime?: number;
  bytesSent?: number;
  bytesReceived?: number;
}

export interface PeerStates {
  iceConnectionState: RTCIceConnectionState;
  connectionState: RTCPeerConnectionState;
  signalingState: RTCSignalingState;
  iceGatheringState: RTCIceGatheringState;
}

export interface PeerField { peer: RemotePeer }
export interface TrackFields extends PeerField {
  track: MediaStreamTrack;
  streams: MediaStream[];
  transceiver: RTCRtpTransceiver;
}
export interface DataChannelFields extends PeerField {
  channel: RTCDataChannel;
  /** True when this side created the channel. */
  local: boolean;
}
export interface TimelineFields extends PeerField { entry: TimelineEntry }
export type StateFields = PeerField & PeerStates;
export interface PeerErrorFields extends PeerField { where: string; error: unknown }

export interface RemotePeerEventMap {
  timeline: FieldsEvent<TimelineFields>;
  statechange: FieldsEvent<StateFields>;
  track: FieldsEvent<TrackFields>;
  datachannel: FieldsEvent<DataChannelFields>;
  error: FieldsEvent<PeerErrorFields>;
  close: FieldsEvent<PeerField & { reason: string }>;
}

export declare class RemotePeer extends EventTarget {
  readonly id: string;
  readonly meta: Record<string, unknown>;
  /** Newcomer side is polite. */
  readonly polite: boolean;
  /** True when this side made the first offer (it is the newcomer). */
  readonly initiator: boolean;
  readonly pc: RTCPeerConnection;
  readonly room: Room;
  readonly timeline: TimelineEntry[];
  readonly candidates: { local: CandidateInfo[]; remote: CandidateInfo[] };
  readonly channels: Map<string, RTCDataChannel>;
  /** All remote tracks of this peer. */
  readonly stream: MediaStream;
  readonly closed: boolean;
  readonly state: PeerStates;
  getSelectedCandidatePair(): Promise<SelectedCandidatePair | null>;
  /** Relay an app-defined object (no `description` or `candidate` key) to this peer; it arrives as the 'signal' event of the other side's SignalingChannel. */
  signal(data: Record<string, unknown>): void;
  close(reason?: string): void;
  addEventListener<K extends keyof RemotePeerEventMap>(type: K, listener: (ev: RemotePeerEventMap[K]) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
  removeEventListener<K extends keyof RemotePeerEventMap>(type: K, listener: (ev: RemotePeerEventMap[K]) => void, options?: boolean | EventListenerOptions): void;
  removeEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | EventListenerOptions): void;
}

export interface RoomErrorFields {
  error: unknown;
  code?: string;
  /** False for errors after which signaling is gone (the calls go on). */
  recoverable?: boolean;
  peer?: RemotePeer;
  where?: string;
}

export interface RoomEventMap {
  peer: FieldsEvent<PeerField>;
  peerleft: FieldsEvent<PeerField & { reason: string }>;
  track: FieldsEvent<TrackFields>;
  datachannel: FieldsEvent<DataChannelFields>;
  statechange: FieldsEvent<StateFields>;
  timeline: FieldsEvent<TimelineFields>;
  error: FieldsEvent<RoomErrorFields>;
  /** Signaling is gone for good (reconnect disabled or given up). */
  signalingclose: FieldsEvent<{ code: number; reason: string }>;
  close: FieldsEvent<{ reason: string }>;
  /** Signaling dropped; the calls go on while it reconnects. */
  reconnecting: FieldsEvent<ReconnectingFields>;
  /** Signaling is back with nothing lost; the peer connections were not touched. */
  resumed: FieldsEvent<ResumedFields>;
  /**
   * Signaling is back as a new session. Calls to the peers in `restarted`
   * were ICE-restarted; when `fresh`, every call was re-created instead.
   */
  rejoined: FieldsEvent<{ peer: string; fresh: boolean; restarted: string[]; downtime: number }>;
  /** Another peer joined again under its id and kept its call with us (it ICE-restarts). */
  peerrejoined: FieldsEvent<PeerField>;
}

export declare class Room extends EventTarget {
  constructor(url: string, name: string, options?: JoinOptions);
  readonly url: string;
  readonly name: string;
  readonly options: JoinOptions & { recvAudio: boolean; recvVideo: boolean };
  /** performance.now() at join(). */
  t0: number;
  localStream: MediaStream | null;
  readonly peers: Map<string, RemotePeer>;
  iceServers: RTCIceServer[];
  /** Our own peer id, set by join(). */
  peerId: string | null;
  welcome?: WelcomeMessage;
  readonly left: boolean;
  readonly signaling: SignalingChannel;
  join(): Promise<Room>;
  peer(id: string): RemotePeer | undefined;
  leave(): void;
  addEventListener<K extends keyof RoomEventMap>(type: K, listener: (ev: RoomEventMap[K]) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
  removeEventListener<K extends keyof RoomEventMap>(type: K, listener: (ev: RoomEventMap[K]) => void, options?: boolean | EventListenerOptions): void;
  removeEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | EventListenerOptions): void;
}

/**
 * Connect to the signaling server, join `room` and connect to every peer in it.
 * Rejects with a SwitchboardError whose `code` is e.g. `room-full` or
 * `signaling-unreachable`.
 */
export declare function joinRoom(url: string, room: string, options?: JoinOptions): Promise<Room>;
