/** Incremental SHA-256 (FIPS 180-4): hash a file block by block. */
export declare class Sha256 {
  /** Add bytes; returns the hasher. Throws after `digest`. */
  update(data: ArrayBuffer | ArrayBufferView): this;
  /** The 32-byte digest; the hasher is finished afterwards. */
  digest(): Uint8Array;
  /** The digest as lowercase hex. */
  hex(): string;
}
/** Lowercase hex SHA-256 of `data` in one go. */
export declare function sha256HexOf(data: ArrayBuffer | ArrayBufferView): string;
