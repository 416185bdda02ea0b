//! The server TLS session over caller-owned buffers, driven in memory by a rustls client:
//! records split at every byte, held-back bytes freed once a record completes, and garbage
//! answered with an alert.

mod support;

use std::io::{Read, Write};

use engine::tls_session::{SessionError, TlsSession};

/// Feeds `bytes` to `server` `step` bytes at a time, as a shard would: held-back bytes
/// first, then the fresh ones, in one scratch buffer.
fn feed(
    server: &mut TlsSession,
    bytes: &[u8],
    step: usize,
    plain: &mut Vec<u8>,
) -> Result<Vec<u8>, SessionError> {
    let mut scratch = vec![0u8; 64 * 1024];
    let mut wire_all = Vec::new();
    for chunk in bytes.chunks(step) {
        let held = server.pending_in_len();
        scratch[held..held + chunk.len()].copy_from_slice(chunk);
        let held = server.take_pending_in(&mut scratch);
        let mut wire = Vec::new();
        server.read(&mut scratch[..held + chunk.len()], plain, &mut wire)?;
        wire_all.extend_from_slice(&wire);
    }
    Ok(wire_all)
}

fn client(cert: &std::path::Path) -> rustls::ClientConnection {
    let cfg = engine::tls::client_config_trusting(cert).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    rustls::ClientConnection::new(cfg, name).unwrap()
}

fn pump_client(c: &mut rustls::ClientConnection, from_server: &[u8]) -> Vec<u8> {
    let mut input = from_server;
    while !input.is_empty() {
        c.read_tls(&mut input).unwrap();
        c.process_new_packets().unwrap();
    }
    let mut out = Vec::new();
    while c.wants_write() {
        c.write_tls(&mut out).unwrap();
    }
    out
}

#[test]
fn records_split_at_every_byte_still_handshake_and_decrypt() {
    let (cfg, cert) = support::dev_tls();
    let mut server = TlsSession::new(cfg).unwrap();
    let mut c = client(&cert);
    let mut plain = Vec::new();
    let mut to_server = pump_client(&mut c, &[]);
    for _ in 0..4 {
        if !server.is_handshaking() {
            break;
        }
        let to_client = feed(&mut server, &to_server, 1, &mut plain).unwrap();
        to_server = pump_client(&mut c, &to_client);
    }
    assert!(!server.is_handshaking() && !c.is_handshaking());
    feed(&mut server, &to_server, 1, &mut plain).unwrap();

    c.writer().write_all(b"hello over split records").unwrap();
    let request = pump_client(&mut c, &[]);
    feed(&mut server, &request[..request.len() - 3], 1, &mut plain).unwrap();
    assert!(
        plain.is_empty(),
        "no plaintext before the record is complete"
    );
    assert_eq!(server.pending_in_len(), request.len() - 3);
    feed(&mut server, &request[request.len() - 3..], 1, &mut plain).unwrap();
    assert_eq!(plain, b"hello over split records");
    assert_eq!(
        server.pending_in_len(),
        0,
        "idle session holds no TLS bytes"
    );

    let mut reply = Vec::new();
    server.encrypt(&vec![7u8; 40_000], &mut reply).unwrap();
    let (mut input, mut got) = (&reply[..], Vec::new());
    while !input.is_empty() {
        c.read_tls(&mut input).unwrap();
        c.process_new_packets().unwrap();
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = c.reader().read(&mut chunk) {
            got.extend_from_slice(&chunk[..n]);
        }
    }
    assert!(got.len() == 40_000 && got.iter().all(|&b| b == 7));
}

#[test]
fn garbage_is_refused_with_an_alert() {
    let (cfg, _cert) = support::dev_tls();
    let mut server = TlsSession::new(cfg).unwrap();
    let mut plain = Vec::new();
    let mut scratch = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    let mut wire = Vec::new();
    let err = server
        .read(&mut scratch, &mut plain, &mut wire)
        .unwrap_err();
    assert!(matches!(err, SessionError::Tls(_)), "{err}");
    assert_eq!(
        wire.first(),
        Some(&21),
        "an alert record goes back: {wire:?}"
    );
    assert!(plain.is_empty());
}
