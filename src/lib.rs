//! Vespa: the worker-side proxy for serverless GPU inference.
//!
//! A drop-in replacement for Vast.ai's PyWorker: it verifies signed requests, admits or
//! rejects them by estimated wait, forwards them to the model server with streaming relayed
//! frame by frame, aborts backend work when the client leaves, and reports load to the
//! autoscaler. See `DESIGN.md` and `PROTOCOL.md` for the contract.

#![forbid(unsafe_code)]

pub mod autoscaler;
pub mod cli;
pub mod client;
pub mod demo;
pub mod env;
pub mod http_util;
pub mod logging;
pub mod openmetrics;
pub mod profile;
pub mod serve;
pub mod signing;
pub mod sim;
pub mod tls;
pub mod top;
pub mod websocket;
pub mod worker;
