//! Property tests for the worker's value formats (listen address, URLs, log level,
//! readiness): any value is parsed or rejected with a [`ConfigError`], never a panic, and a
//! well-formed address or URL reads back as written.
//!
//! Cases per property: `PROPTEST_CASES` (proptest's own variable), default 256;
//! `scripts/fuzz.sh` runs many more.

use super::*;
use proptest::prelude::*;

fn raw(v: &str, source: Source) -> Raw {
    Raw {
        value: v.into(),
        origin: "X".into(),
        source,
    }
}

/// Values: anything, and things shaped like addresses and URLs.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,32}",
        any::<u64>().prop_map(|n| n.to_string()),
        "(localhost|\\[::1?\\]|[0-9.]{0,16}|[a-z]{0,6}):?[0-9]{0,7}",
        "(https?|ftp|)(://)?[a-z0-9.@:\\[\\]%-]{0,20}(/[ -~]{0,12})?(\\?[ -~]{0,8})?",
    ]
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,20}(\\.[a-z]{2,5}){0,2}",
        any::<std::net::Ipv4Addr>().prop_map(|ip| ip.to_string()),
        any::<std::net::Ipv6Addr>().prop_map(|ip| format!("[{ip}]")),
    ]
}

proptest! {
    #[test]
    fn any_value_is_parsed_or_rejected_cleanly(v in value()) {
        for source in [Source::Flag, Source::Env, Source::Default] {
            let r = raw(&v, source);
            let _ = listen(&r);
            let _ = log_level(&r);
            let _ = readiness(&r);
            let _ = http_url(&r, &v);
            if let Ok(uri) = backend_url(&r) {
                prop_assert!(matches!(uri.scheme_str(), Some("http" | "https")));
                prop_assert!(uri.host().is_some_and(|h| !h.is_empty()));
                prop_assert!(uri.query().is_none());
            }
        }
    }

    #[test]
    fn listen_addresses_read_back(ip in any::<IpAddr>(), port in any::<u16>(), blank in "[ ]{0,2}") {
        let addr = SocketAddr::new(ip, port);
        let text = format!("{blank}{addr}{blank}");
        prop_assert_eq!(listen(&raw(&text, Source::Flag)), Ok(addr));
        let any_host = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
        prop_assert_eq!(listen(&raw(&port.to_string(), Source::Env)), Ok(any_host));
        prop_assert_eq!(listen(&raw(&port.to_string(), Source::Flag)), Ok(any_host));
        let local = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        prop_assert_eq!(listen(&raw(&format!("localhost:{port}"), Source::Flag)), Ok(local));
    }

    #[test]
    fn backend_urls_read_back(
        https in any::<bool>(),
        host in host(),
        port in prop::option::of(any::<u16>()),
        path in "(/[a-zA-Z0-9._~-]{0,8}){0,3}",
    ) {
        let scheme = if https { "https" } else { "http" };
        let port_text = port.map(|p| format!(":{p}")).unwrap_or_default();
        let text = format!("{scheme}://{host}{port_text}{path}");
        let uri = backend_url(&raw(&text, Source::Env)).unwrap();
        prop_assert_eq!(uri.scheme_str(), Some(scheme));
        prop_assert_eq!(uri.host(), Some(host.as_str()));
        prop_assert_eq!(uri.port_u16(), port);
        prop_assert_eq!(uri.path(), if path.is_empty() { "/" } else { path.as_str() });
        let with_query = format!("{text}?a=1");
        prop_assert!(backend_url(&raw(&with_query, Source::Env)).is_err());
    }
}
