//! What one client may hold of a server: connections, time, streams.

use std::time::Duration;

/// Default [`ServeLimits::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default [`ServeLimits::header_read_timeout`].
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default [`ServeLimits::send_timeout`].
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// Default [`ServeLimits::h2_max_concurrent_streams`].
pub const DEFAULT_H2_MAX_CONCURRENT_STREAMS: u32 = 256;
/// Default [`ServeLimits::h2_max_header_list_size`]: 64 KiB, hyper's HTTP/1 head limit
/// order of magnitude (hyper's own HTTP/2 default is 16 MiB).
pub const DEFAULT_H2_MAX_HEADER_LIST_SIZE: u32 = 64 * 1024;
/// Default [`ServeLimits::h2_keep_alive_interval`].
pub const DEFAULT_H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// Default [`ServeLimits::h2_keep_alive_timeout`].
pub const DEFAULT_H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Length of the listen backlog [`super::bind`] asks for: connections beyond
/// `max_connections` wait there. The kernel caps it (`net.core.somaxconn`, 4096 on current
/// Linux).
pub const LISTEN_BACKLOG: u32 = 1024;

/// Limits an accept loop puts on its clients, so a slow, stuck or greedy client costs a
/// bounded share of the server. Every Vespa server runs with [`ServeLimits::default`]
/// unless its configuration says otherwise (`vespa worker` exposes each as a setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// Open connections at most; beyond, the loop stops accepting and new connections wait
    /// in the listen backlog until one closes. Default is 10 000.
    pub max_connections: usize,
    /// Time a client has to send a whole HTTP/1 request head, counted from the first wait
    /// for it: on a keep-alive connection this is also how long it may stay idle between
    /// requests. `None` disables it. Default is 30 s.
    pub header_read_timeout: Option<Duration>,
    /// Time the connection may stay unable to write: a client that takes none of the bytes
    /// waiting for it (it stopped reading) within this time loses the connection, which
    /// cancels its requests like a disconnect. `None` disables it. Default is 60 s.
    pub send_timeout: Option<Duration>,
    /// HTTP/2 streams a client may have open at once on one connection. Default is 256.
    pub h2_max_concurrent_streams: u32,
    /// Largest HTTP/2 header list (decoded, RFC 9113 §6.5.2 `SETTINGS_MAX_HEADER_LIST_SIZE`)
    /// accepted. Default is 64 KiB.
    pub h2_max_header_list_size: u32,
    /// Interval of HTTP/2 keep-alive PINGs; `None` sends none. Default is 20 s.
    pub h2_keep_alive_interval: Option<Duration>,
    /// Time a PING may go unanswered before the connection is closed. Default is 20 s.
    pub h2_keep_alive_timeout: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: Some(DEFAULT_HEADER_READ_TIMEOUT),
            send_timeout: Some(DEFAULT_SEND_TIMEOUT),
            h2_max_concurrent_streams: DEFAULT_H2_MAX_CONCURRENT_STREAMS,
            h2_max_header_list_size: DEFAULT_H2_MAX_HEADER_LIST_SIZE,
            h2_keep_alive_interval: Some(DEFAULT_H2_KEEP_ALIVE_INTERVAL),
            h2_keep_alive_timeout: DEFAULT_H2_KEEP_ALIVE_TIMEOUT,
        }
    }
}
