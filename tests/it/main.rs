//! Integration tests: real servers and clients on loopback, port 0.

mod admission;
mod autoscaler;
mod cancel;
mod cli;
mod pool;
mod proxy;
mod startup;
mod support;
