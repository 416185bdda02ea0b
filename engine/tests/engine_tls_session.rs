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

/// Handshakes `server` with `c` in memory, then one request and reply, so the session has
/// handed its keys to the record layer.
fn establish(server: &mut TlsSession, c: &mut rustls::ClientConnection) {
    handshake_only(server, c);
    assert_eq!(round_trip(server, c, b"hello"), b"hello");
}

/// The client sends `request`; returns what the server decrypted. The server answers with
/// the same bytes, which the client must decrypt.
fn round_trip(
    server: &mut TlsSession,
    c: &mut rustls::ClientConnection,
    request: &[u8],
) -> Vec<u8> {
    c.writer().write_all(request).unwrap();
    let records = pump_client(c, &[]);
    let mut plain = Vec::new();
    feed(server, &records, 7, &mut plain).unwrap();
    let mut reply = Vec::new();
    server.encrypt(&plain, &mut reply).unwrap();
    let (mut input, mut echoed) = (&reply[..], Vec::new());
    while !input.is_empty() {
        c.read_tls(&mut input).unwrap();
        c.process_new_packets().unwrap();
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = c.reader().read(&mut chunk) {
            echoed.extend_from_slice(&chunk[..n]);
        }
    }
    assert_eq!(echoed, plain, "the client decrypts the server's records");
    plain
}

fn client_offering(
    cert: &std::path::Path,
    suite: rustls::SupportedCipherSuite,
) -> rustls::ClientConnection {
    let cfg = engine::tls::client_config_offering(cert, &[suite]).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    rustls::ClientConnection::new(cfg, name).unwrap()
}

#[test]
fn after_the_handshake_every_suite_runs_on_the_record_layer() {
    use rustls::crypto::ring::cipher_suite as cs;
    let (cfg, cert) = support::dev_tls();
    for suite in [
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
    ] {
        let mut server = TlsSession::new(cfg.clone()).unwrap();
        let mut c = client_offering(&cert, suite);
        establish(&mut server, &mut c);
        assert!(
            server.uses_record_layer(),
            "{suite:?}: rustls session dropped"
        );
        assert_eq!(c.negotiated_cipher_suite(), Some(suite));
        // Sequence numbers stay in step over many records, both ways.
        for i in 0..300u32 {
            let msg = format!("message {i}");
            assert_eq!(
                round_trip(&mut server, &mut c, msg.as_bytes()),
                msg.as_bytes()
            );
        }
        // Larger than one record (2^14 bytes), both ways.
        let big: Vec<u8> = (0..50_000u32).map(|i| i as u8).collect();
        assert_eq!(round_trip(&mut server, &mut c, &big), big);
    }
}

#[test]
fn without_secret_extraction_rustls_keeps_the_session() {
    let (cfg, cert) = support::dev_tls();
    let mut cfg = (*cfg).clone();
    cfg.enable_secret_extraction = false;
    let mut server = TlsSession::new(std::sync::Arc::new(cfg)).unwrap();
    let mut c = client(&cert);
    establish(&mut server, &mut c);
    assert!(!server.uses_record_layer());
    assert_eq!(
        round_trip(&mut server, &mut c, b"still works"),
        b"still works"
    );
}

/// Feeds `bytes` from the client and returns the server's error and the alert the client
/// got from what the server sent back.
fn refused(
    server: &mut TlsSession,
    c: &mut rustls::ClientConnection,
    bytes: &[u8],
) -> (SessionError, Option<rustls::Error>) {
    let mut scratch = bytes.to_vec();
    let (mut plain, mut wire) = (Vec::new(), Vec::new());
    let err = server
        .read(&mut scratch, &mut plain, &mut wire)
        .unwrap_err();
    assert!(
        plain.is_empty(),
        "nothing from a refused record reaches the service"
    );
    let mut input = &wire[..];
    let mut client_err = None;
    while !input.is_empty() {
        c.read_tls(&mut input).unwrap();
        if let Err(e) = c.process_new_packets() {
            client_err = Some(e);
            break;
        }
    }
    (err, client_err)
}

#[test]
fn a_tampered_record_is_refused_with_bad_record_mac() {
    let (cfg, cert) = support::dev_tls();
    let mut server = TlsSession::new(cfg).unwrap();
    let mut c = client(&cert);
    establish(&mut server, &mut c);
    c.writer().write_all(b"transfer 100 to alice").unwrap();
    let mut record = pump_client(&mut c, &[]);
    let last = record.len() - 20;
    record[last] ^= 1;
    let (err, client_err) = refused(&mut server, &mut c, &record);
    assert!(
        matches!(
            err,
            SessionError::Record(engine::tls_records::RecordError::BadRecordMac)
        ),
        "{err}"
    );
    assert_eq!(
        client_err,
        Some(rustls::Error::AlertReceived(
            rustls::AlertDescription::BadRecordMac
        ))
    );
}

#[test]
fn a_replayed_record_is_refused() {
    let (cfg, cert) = support::dev_tls();
    let mut server = TlsSession::new(cfg).unwrap();
    let mut c = client(&cert);
    establish(&mut server, &mut c);
    c.writer().write_all(b"once").unwrap();
    let record = pump_client(&mut c, &[]);
    let mut plain = Vec::new();
    feed(&mut server, &record, usize::MAX, &mut plain).unwrap();
    assert_eq!(plain, b"once");
    let (err, _) = refused(&mut server, &mut c, &record);
    assert!(
        matches!(
            err,
            SessionError::Record(engine::tls_records::RecordError::BadRecordMac)
        ),
        "the sequence number moved on: {err}"
    );
}

#[test]
fn a_client_key_update_ends_the_session_with_unexpected_message() {
    let (cfg, cert) = support::dev_tls();
    let mut server = TlsSession::new(cfg).unwrap();
    let mut c = client(&cert);
    establish(&mut server, &mut c);
    c.refresh_traffic_keys().unwrap();
    let record = pump_client(&mut c, &[]);
    let (err, client_err) = refused(&mut server, &mut c, &record);
    assert!(
        matches!(
            err,
            SessionError::Record(engine::tls_records::RecordError::PostHandshakeMessage(24))
        ),
        "{err}"
    );
    assert_eq!(
        client_err,
        Some(rustls::Error::AlertReceived(
            rustls::AlertDescription::UnexpectedMessage
        ))
    );
}

#[test]
fn close_notify_works_both_ways_on_the_record_layer() {
    let (cfg, cert) = support::dev_tls();
    let mut server = TlsSession::new(cfg).unwrap();
    let mut c = client(&cert);
    establish(&mut server, &mut c);
    // The client's close_notify, split at every byte, after a last message.
    c.writer().write_all(b"bye").unwrap();
    c.send_close_notify();
    let records = pump_client(&mut c, &[]);
    let mut scratch = vec![0u8; 64 * 1024];
    let (mut plain, mut closed) = (Vec::new(), false);
    for b in &records {
        let held = server.take_pending_in(&mut scratch);
        scratch[held] = *b;
        let mut wire = Vec::new();
        closed |= server
            .read(&mut scratch[..held + 1], &mut plain, &mut wire)
            .unwrap()
            .peer_closed;
    }
    assert!(closed);
    assert_eq!(plain, b"bye");
    // The server's close_notify: the client sees a clean end of stream.
    let mut wire = Vec::new();
    server.close_notify(&mut wire);
    pump_client(&mut c, &wire);
    let mut rest = Vec::new();
    assert_eq!(c.reader().read_to_end(&mut rest).unwrap(), 0);
}

/// Handshakes in memory without any application data either way (no hand-over yet).
fn handshake_only(server: &mut TlsSession, c: &mut rustls::ClientConnection) {
    let mut plain = Vec::new();
    let mut to_server = pump_client(c, &[]);
    for _ in 0..4 {
        let to_client = feed(server, &to_server, usize::MAX, &mut plain).unwrap();
        to_server = pump_client(c, &to_client);
        if !server.is_handshaking() && !c.is_handshaking() {
            break;
        }
    }
    feed(server, &to_server, usize::MAX, &mut plain).unwrap();
    assert!(!server.is_handshaking() && !server.uses_record_layer());
}

#[test]
fn a_key_update_before_the_hand_over_is_answered_before_the_keys_move() {
    let (cfg, cert) = support::dev_tls();
    let mut server = TlsSession::new(cfg).unwrap();
    let mut c = client(&cert);
    handshake_only(&mut server, &mut c);
    // The client updates its keys (asking for ours too) before the server has said a word;
    // rustls switches its sending key and owes the client a KeyUpdate.
    c.refresh_traffic_keys().unwrap();
    c.writer().write_all(b"after update").unwrap();
    let records = pump_client(&mut c, &[]);
    let mut plain = Vec::new();
    feed(&mut server, &records, usize::MAX, &mut plain).unwrap();
    assert_eq!(plain, b"after update");
    // The first reply carries rustls' KeyUpdate, then the keys are handed over.
    assert_eq!(round_trip(&mut server, &mut c, b"reply 1"), b"reply 1");
    assert!(server.uses_record_layer());
    for i in 0..20 {
        let msg = format!("after the hand-over {i}");
        assert_eq!(
            round_trip(&mut server, &mut c, msg.as_bytes()),
            msg.as_bytes()
        );
    }
}

#[test]
fn a_failed_session_is_never_driven_again() {
    let (cfg, cert) = support::dev_tls();
    let mut server = TlsSession::new(cfg).unwrap();
    let mut c = client(&cert);
    establish(&mut server, &mut c);
    c.writer().write_all(b"one").unwrap();
    let mut first = pump_client(&mut c, &[]);
    c.writer().write_all(b"two").unwrap();
    let mut second = pump_client(&mut c, &[]);
    let last = first.len() - 1;
    first[last] ^= 1;
    let (mut plain, mut wire) = (Vec::new(), Vec::new());
    assert!(server.read(&mut first, &mut plain, &mut wire).is_err());
    assert!(matches!(
        server.read(&mut second, &mut plain, &mut wire),
        Err(SessionError::Failed)
    ));
    assert!(
        plain.is_empty(),
        "the record after a missing one is never accepted"
    );
    assert!(matches!(
        server.encrypt(b"late", &mut wire),
        Err(SessionError::Failed)
    ));
}

#[test]
fn bytes_after_close_notify_during_the_handshake_phase_are_ignored() {
    let (cfg, cert) = support::dev_tls();
    let mut server = TlsSession::new(cfg).unwrap();
    let mut c = client(&cert);
    handshake_only(&mut server, &mut c);
    c.writer().write_all(b"last words").unwrap();
    c.send_close_notify();
    let mut bytes = pump_client(&mut c, &[]);
    bytes.extend(std::iter::repeat_n(0x17, 40_000));
    let (mut plain, mut wire) = (Vec::new(), Vec::new());
    let progress = server.read(&mut bytes, &mut plain, &mut wire).unwrap();
    assert!(progress.peer_closed);
    assert_eq!(plain, b"last words");
    assert_eq!(server.pending_in_len(), 0);
}
