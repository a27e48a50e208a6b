//! Names for the STUN/TURN error codes (RFC 8489 §14.8, RFC 8656 §18,
//! RFC 8445 §7.3.1.1), as carried in ERROR-CODE. Plain `u16` constants, so
//! they work in `match` patterns next to codes this crate does not name.

/// 300: the client should use the server in ALTERNATE-SERVER.
pub const TRY_ALTERNATE: u16 = 300;
/// 400: the request was malformed.
pub const BAD_REQUEST: u16 = 400;
/// 401: missing or wrong credentials; the answer carries REALM and NONCE.
pub const UNAUTHORIZED: u16 = 401;
/// 403: the request is valid but not allowed (a forbidden peer address).
pub const FORBIDDEN: u16 = 403;
/// 405: mobility was asked for but is not allowed.
pub const MOBILITY_FORBIDDEN: u16 = 405;
/// 420: a comprehension-required attribute was not understood.
pub const UNKNOWN_ATTRIBUTE: u16 = 420;
/// 437: no allocation for this 5-tuple, or one that does not match.
pub const ALLOCATION_MISMATCH: u16 = 437;
/// 438: the NONCE is no longer valid; retry with the fresh one.
pub const STALE_NONCE: u16 = 438;
/// 440: the server cannot relay the requested address family.
pub const ADDRESS_FAMILY_NOT_SUPPORTED: u16 = 440;
/// 441: the credentials differ from those the allocation was made with.
pub const WRONG_CREDENTIALS: u16 = 441;
/// 442: the requested transport is not supported.
pub const UNSUPPORTED_TRANSPORT_PROTOCOL: u16 = 442;
/// 443: the peer address family differs from the relayed address's.
pub const PEER_ADDRESS_FAMILY_MISMATCH: u16 = 443;
/// 486: the user has as many allocations as allowed.
pub const ALLOCATION_QUOTA_REACHED: u16 = 486;
/// 487: ICE role conflict.
pub const ROLE_CONFLICT: u16 = 487;
/// 500: the server hit a temporary error.
pub const SERVER_ERROR: u16 = 500;
/// 508: out of capacity (relay ports, allocations, permissions).
pub const INSUFFICIENT_CAPACITY: u16 = 508;
