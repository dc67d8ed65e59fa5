//! Certificate reload: new connections get the new pair, open ones keep working, a pair
//! that does not load is never swapped in.

use super::*;
use std::time::Duration;
use vespa::tls::server::Reload;

fn generation(https: &Https) -> u64 {
    *https.tls.certs().subscribe().borrow()
}

#[tokio::test]
async fn reload_serves_the_new_certificate_and_keeps_open_connections() {
    let https = Https::start(Ca::new(), "127.0.0.1").await;
    let stream = https.connect().await;
    assert_eq!(peer_leaf(&stream), https.leaf.der);
    let mut open = h1(stream).await;
    assert_eq!(
        text(open.send_request(get("/")).await.unwrap()).await.0,
        200
    );

    let new = https.ca.leaf("127.0.0.1");
    write_pair(&https.dir, &new);
    assert_eq!(https.tls.certs().check_now().unwrap(), Reload::Swapped);
    assert_eq!(generation(&https), 1);

    assert_eq!(peer_leaf(&https.connect().await), new.der);
    // The keep-alive connection opened before the swap still serves requests.
    open.ready().await.unwrap();
    assert_eq!(
        text(open.send_request(get("/")).await.unwrap()).await.0,
        200
    );
}

#[tokio::test]
async fn unchanged_files_are_not_reloaded() {
    let https = Https::start(Ca::new(), "127.0.0.1").await;

    assert_eq!(https.tls.certs().check_now().unwrap(), Reload::Unchanged);
    assert_eq!(generation(&https), 0);
}

#[tokio::test]
async fn reload_keeps_the_old_pair_when_the_new_one_does_not_load() {
    let https = Https::start(Ca::new(), "127.0.0.1").await;

    // A new certificate whose key is not written yet: the pair does not match.
    std::fs::write(&https.files.cert, https.ca.leaf("127.0.0.1").cert_pem).unwrap();
    let err = https.tls.certs().check_now().unwrap_err();
    assert!(err.is_key_mismatch(), "{err}");
    // Reported once; the same contents are not reported again.
    assert_eq!(https.tls.certs().check_now().unwrap(), Reload::Unchanged);
    assert_eq!(generation(&https), 0);
    assert_eq!(peer_leaf(&https.connect().await), https.leaf.der);

    // Once the matching pair is complete it is swapped in.
    let new = https.ca.leaf("127.0.0.1");
    write_pair(&https.dir, &new);
    assert_eq!(https.tls.certs().check_now().unwrap(), Reload::Swapped);
    assert_eq!(peer_leaf(&https.connect().await), new.der);
}

#[tokio::test]
async fn reload_keeps_the_old_pair_when_a_file_disappears() {
    let https = Https::start(Ca::new(), "127.0.0.1").await;

    std::fs::remove_file(&https.files.key).unwrap();
    assert!(https.tls.certs().check_now().unwrap_err().is_missing());
    assert_eq!(peer_leaf(&https.connect().await), https.leaf.der);
}

#[tokio::test]
async fn watcher_reloads_changed_files_on_its_interval() {
    tokio::time::pause();
    let https = Https::start(Ca::new(), "127.0.0.1").await;
    let certs = https.tls.certs().clone();
    let mut generation = certs.subscribe();
    let watcher = tokio::spawn(certs.clone().watch(Duration::from_secs(30)));

    let new = https.ca.leaf("127.0.0.1");
    write_pair(&https.dir, &new);
    // Paused time jumps to the watcher's next tick once every task waits.
    generation.changed().await.unwrap();
    assert_eq!(*generation.borrow(), 1);
    assert_eq!(certs.current().end_entity_cert().unwrap(), &new.der);
    watcher.abort();
}
