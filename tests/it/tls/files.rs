//! Loading the certificate and key: every failure names the file at fault.

use super::*;
use vespa::tls::TlsError;
use vespa::tls::server::{TlsFiles, load};

fn load_err(files: &TlsFiles) -> TlsError {
    load(files).unwrap_err()
}

#[test]
fn missing_certificate_is_an_error_naming_it() {
    let dir = TempDir::new();
    let files = write_pair(&dir, &Ca::new().leaf("127.0.0.1"));
    std::fs::remove_file(&files.cert).unwrap();

    let err = load_err(&files);
    assert!(err.is_missing());
    assert_eq!(err.path(), Some(files.cert.as_path()));
    assert!(err.to_string().contains(&*files.cert.to_string_lossy()));
}

#[test]
fn missing_key_is_an_error_naming_it() {
    let dir = TempDir::new();
    let files = TlsFiles::new(dir.path("cert.pem"), dir.path("nope.key"));
    std::fs::write(&files.cert, Ca::new().leaf("127.0.0.1").cert_pem).unwrap();

    let err = load_err(&files);
    assert!(err.is_missing());
    assert_eq!(err.path(), Some(files.key.as_path()));
}

#[test]
fn unreadable_file_is_an_error_naming_it() {
    let dir = TempDir::new();
    let files = TlsFiles::new(dir.path("cert.pem"), dir.path(""));
    std::fs::write(&files.cert, Ca::new().leaf("127.0.0.1").cert_pem).unwrap();

    // The key path is a directory: it exists but cannot be read as a file.
    let err = load_err(&files);
    assert!(matches!(err, TlsError::Unreadable { .. }), "{err}");
    assert_eq!(err.path(), Some(files.key.as_path()));
}

#[test]
fn mismatched_key_is_an_error_naming_the_key_file() {
    let dir = TempDir::new();
    let ca = Ca::new();
    let files = write_pair(&dir, &ca.leaf("127.0.0.1"));
    std::fs::write(&files.key, ca.leaf("127.0.0.1").key_pem).unwrap();

    let err = load_err(&files);
    assert!(err.is_key_mismatch(), "{err}");
    assert_eq!(err.path(), Some(files.key.as_path()));
    let message = err.to_string();
    assert!(
        message.starts_with(&*files.key.to_string_lossy()),
        "{message}"
    );
    assert!(message.contains("does not match"), "{message}");
}

#[test]
fn file_without_a_certificate_is_an_error_naming_it() {
    let dir = TempDir::new();
    let leaf = Ca::new().leaf("127.0.0.1");
    let files = write_pair(&dir, &leaf);
    std::fs::write(&files.cert, &leaf.key_pem).unwrap();

    let err = load_err(&files);
    assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
    assert_eq!(err.path(), Some(files.cert.as_path()));
}

#[test]
fn file_without_a_private_key_is_an_error_naming_it() {
    let dir = TempDir::new();
    let leaf = Ca::new().leaf("127.0.0.1");
    let files = write_pair(&dir, &leaf);
    std::fs::write(&files.key, &leaf.cert_pem).unwrap();

    let err = load_err(&files);
    assert!(matches!(err, TlsError::NoPrivateKey { .. }), "{err}");
    assert_eq!(err.path(), Some(files.key.as_path()));
}

#[test]
fn defaults_are_the_vast_instance_files() {
    let files = TlsFiles::default();
    assert_eq!(files.cert, Path::new("/etc/instance.crt"));
    assert_eq!(files.key, Path::new("/etc/instance.key"));
}

#[test]
fn server_offers_h2_then_http1() {
    let dir = TempDir::new();
    let tls = load(&write_pair(&dir, &Ca::new().leaf("127.0.0.1"))).unwrap();
    assert_eq!(
        tls.config().alpn_protocols,
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    );
}
