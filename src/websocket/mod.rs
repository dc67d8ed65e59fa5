//! WebSockets (RFC 6455), as much as Vespa needs: the worker relays them byte for byte
//! and only reads frame headers to know where it may put a close frame of its own
//! ([`frame::Cursor`]); the sim serves ComfyUI's progress socket ([`server`]).
//!
//! - [`handshake`]: recognising an upgrade request, `Sec-WebSocket-Accept`;
//! - [`frame`]: frame headers, close frames, masking;
//! - [`server`]: the server end of a socket (text out, masked frames in).

pub mod frame;
pub mod handshake;
pub mod server;
