// Type declarations for transfer.js (chat and file transfer over the `chat`
// data channel, docs/protocol.md).

export declare const LABEL: 'chat';
export declare const MAX_CHUNK: number;
export declare const CHUNK: number;
export declare const READ_BLOCK: number;
export declare const HIGH_WATER: number;
export declare const LOW_WATER: number;

/** A message that is not a valid frame. */
export declare class ProtocolError extends Error {
  constructor(message: string);
  readonly name: 'ProtocolError';
}

/** Driving a Sender or Receiver in a way the protocol does not allow. */
export declare class TransferError extends Error {
  constructor(message: string);
  readonly name: 'TransferError';
}

export interface TextFrame { type: 'text'; text: string }
export interface FileStartFrame { type: 'file-start'; id: string; name: string; size: number; mime?: string }
/** `sha256` is lowercase hex. */
export interface FileEndFrame { type: 'file-end'; id: string; sha256: string }
/** `sha256` is the receiver's own hash, lowercase hex. */
export interface FileAckFrame { type: 'file-ack'; id: string; ok: boolean; sha256: string }
/** Native peers only; the page ignores it. */
export interface FileResumeFrame { type: 'file-resume'; id: string; offset: number }
/** A binary message: the next bytes of the file in progress. */
export interface ChunkFrame { type: 'chunk'; data: ArrayBuffer | ArrayBufferView | Blob }
export type Frame = TextFrame | FileStartFrame | FileEndFrame | FileAckFrame | FileResumeFrame | ChunkFrame;

/** One data-channel message to a frame; throws ProtocolError. */
export declare function parse(data: string | ArrayBuffer | ArrayBufferView | Blob): Frame;

export declare function textFrame(text: string): string;
export declare function fileStart(info: { id: string; name: string; size: number; mime?: string; path?: string }): string;
export declare function fileEnd(id: string, sha256: string): string;
export declare function fileAck(id: string, ok: boolean, sha256: string): string;

export declare function sha256Hex(buf: ArrayBuffer | ArrayBufferView): Promise<string>;
export declare function newFileId(): string;

export interface AckOutcome {
  /** The peer said ok and its hash is ours. */
  verified: boolean;
  ours: string;
  theirs: string;
  peerOk: boolean;
}

export declare class Sender {
  constructor(file: Blob & { name?: string }, opts?: {
    id?: string;
    name?: string;
    mime?: string;
    /** 1..=MAX_CHUNK; default CHUNK. */
    chunkSize?: number;
    /** The file's SHA-256 when it is already being computed. */
    sha256?: Promise<string>;
    /** Its place in a folder being sent (`folder/sub/name`, e.g. a File's
     * `webkitRelativePath`); native receivers recreate it, /chat ignores it. */
    path?: string;
  });
  readonly info: { id: string; name: string; size: number; mime?: string; path?: string };
  readonly id: string;
  readonly size: number;
  readonly bytesSent: number;
  readonly digest: string | null;
  readonly isAwaitingAck: boolean;
  readonly outcome: AckOutcome | null;
  /** file-start, chunks, file-end; then null. */
  next(): Promise<string | ArrayBuffer | null>;
  /** Null for another file's ack; throws TransferError when unexpected. */
  handleAck(ack: { id: string; ok: boolean; sha256: string }): AckOutcome | null;
}

export interface Finished {
  id: string;
  name: string;
  mime?: string;
  /** Size announced in file-start. */
  size: number;
  /** Bytes that arrived. */
  received: number;
  expected: string;
  actual: string;
  ok: boolean;
  /** The verified file (on disk with `opfsSink`); null when it failed. */
  blob: Blob | null;
  /** Why it failed other than by its hash (a write error), or null. */
  failure: string | null;
  /** The file-ack to send back. */
  ack: string;
}

/** Where a Receiver writes one incoming file. */
export interface Sink {
  write(chunk: ArrayBuffer | ArrayBufferView | Blob): Promise<void> | void;
  finish(): Promise<Blob>;
  discard(): Promise<void> | void;
}

export interface IncomingInfo { id: string; name: string; size: number; mime?: string }

/** Bytes a disk sink gathers before each write. */
export declare const WRITE_BATCH: number;
/** Chunks kept in memory, one Blob at the end. */
export declare function memorySink(info: IncomingInfo): Sink;
/** Files written into the Origin Private File System directory `dir` as they arrive. */
export declare function opfsSink(dir: FileSystemDirectoryHandle): (info: IncomingInfo) => Promise<Sink>;
/** The Origin Private File System (folder `dirName`, default `switchboard-incoming`) where it works, else `memorySink`. */
export declare function browserSink(dirName?: string): (info: IncomingInfo) => Promise<Sink>;

export type Received =
  | { kind: 'started'; id: string; name: string; size: number; mime?: string; replaced: { id: string; name: string } | null }
  | { kind: 'progress'; id: string; received: number; size: number }
  | { kind: 'finished'; id: string; done: Promise<Finished> }
  /** A file-end for a file not in progress: send `ack` (ok false) back. */
  | { kind: 'unknown-end'; id: string; ack: string }
  | { kind: 'ignored' };

export declare class Receiver {
  constructor(opts?: { sink?: (info: IncomingInfo) => Sink | Promise<Sink> });
  readonly current: { id: string; name: string; size: number; mime?: string; received: number } | null;
  /** Throws TransferError for a chunk outside a file. */
  handle(frame: Frame): Received;
  abort(): { id: string; name: string } | null;
}

/** Send everything up to file-end over an open channel, with backpressure. */
export declare function sendFile(channel: RTCDataChannel, sender: Sender, onProgress?: (bytes: number) => void): Promise<void>;
