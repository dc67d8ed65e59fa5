//! Integration tests: real servers and clients on loopback, port 0.

mod admission;
mod autoscaler;
mod bench_accuracy;
mod cancel;
mod cli;
mod client;
mod client_tls;
mod demo;
mod docs;
mod e2e;
mod fake_autoscaler;
mod load;
mod pool;
mod profiles;
mod properties;
mod proxy;
mod proxy_cmd;
mod reports;
mod signed;
mod sim;
mod start_server;
mod startup;
mod support;
mod tls;
mod vast;
mod vastai_client;
