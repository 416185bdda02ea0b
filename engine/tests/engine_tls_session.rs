//! The server TLS session over caller-owned buffers, driven in memory by a rustls client:
//! records split at every byte, held-back bytes freed once a record completes, and garbage
//! answered with an alert.

mod support;

use std::io::{Read, Write};

use engine::tls::records::{RecordError, RecordLayer, EMPTY_RECORDS_IN_A_ROW_MAX};
use engine::tls::session::{SessionError, TlsSession};

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
            SessionError::Record(engine::tls::records::RecordError::BadRecordMac)
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
            SessionError::Record(engine::tls::records::RecordError::BadRecordMac)
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
            SessionError::Record(engine::tls::records::RecordError::PostHandshakeMessage(24))
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

/// A client whose config lets the test take its traffic keys, to play a peer that sends
/// what rustls never would (split handshake messages, empty records, warning alerts).
fn extractable_client(cert: &std::path::Path) -> rustls::ClientConnection {
    let mut cfg = (*engine::tls::client_config_trusting(cert).unwrap()).clone();
    cfg.enable_secret_extraction = true;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    rustls::ClientConnection::new(std::sync::Arc::new(cfg), name).unwrap()
}

/// The client's keys and sequence numbers as a record layer: from now on the test is the
/// client and can seal any record.
fn into_raw_peer(c: rustls::ClientConnection) -> RecordLayer {
    let secrets = c.dangerous_extract_secrets().unwrap();
    RecordLayer::new(&secrets).expect("a suite the record layer implements")
}

/// Feeds `bytes` to `server` in one read; returns the result and the wire bytes it wrote.
fn read_all(
    server: &mut TlsSession,
    bytes: &[u8],
    plain: &mut Vec<u8>,
) -> (
    Result<engine::tls::session::ReadProgress, SessionError>,
    Vec<u8>,
) {
    let mut scratch = vec![0u8; 64 * 1024];
    let held = server.take_pending_in(&mut scratch);
    scratch[held..held + bytes.len()].copy_from_slice(bytes);
    let mut wire = Vec::new();
    let result = server.read(&mut scratch[..held + bytes.len()], plain, &mut wire);
    (result, wire)
}

/// What the raw peer makes of the server's `wire` bytes.
fn peer_opens(peer: &mut RecordLayer, wire: &[u8]) -> Result<Vec<u8>, RecordError> {
    let mut wire = wire.to_vec();
    let mut plain = Vec::new();
    let opened = peer.open(&mut wire, &mut plain)?;
    assert_eq!(opened.consumed, wire.len(), "whole records only");
    Ok(plain)
}

/// KeyUpdate(update_not_requested): type 24, length 1, one byte.
const KEY_UPDATE: [u8; 5] = [24, 0, 0, 1, 0];

#[test]
fn a_key_update_split_across_records_before_the_hand_over_is_taken_whole() {
    let (cfg, cert) = support::dev_tls();
    let mut server = TlsSession::new(cfg).unwrap();
    let mut c = extractable_client(&cert);
    handshake_only(&mut server, &mut c);
    let mut peer = into_raw_peer(c);
    let mut first = Vec::new();
    peer.seal_record(22, &KEY_UPDATE[..3], &mut first).unwrap();
    let mut second = Vec::new();
    peer.seal_record(22, &KEY_UPDATE[3..], &mut second).unwrap();

    let mut plain = Vec::new();
    let (read, wire) = read_all(&mut server, &first, &mut plain);
    read.unwrap();
    assert!(wire.is_empty() && plain.is_empty());
    assert_eq!(
        server.pending_in_len(),
        first.len(),
        "rustls keeps the first half of the message in the held-back bytes"
    );
    // The server's first write while half a handshake message is held: sent by rustls,
    // keys not handed over (the message would be lost with the rustls session).
    let mut reply = Vec::new();
    server.encrypt(b"while split", &mut reply).unwrap();
    assert!(!server.uses_record_layer());
    assert_eq!(peer_opens(&mut peer, &reply).unwrap(), b"while split");

    let (read, wire) = read_all(&mut server, &second, &mut plain);
    read.unwrap();
    assert!(wire.is_empty() && plain.is_empty());
    assert_eq!(server.pending_in_len(), 0);
    let mut reply = Vec::new();
    server.encrypt(b"after", &mut reply).unwrap();
    assert!(
        server.uses_record_layer(),
        "handed over once the message is whole"
    );
    assert_eq!(peer_opens(&mut peer, &reply).unwrap(), b"after");
    // rustls took the whole KeyUpdate: the client's old key no longer opens.
    let mut stale = Vec::new();
    peer.seal(b"old key", &mut stale).unwrap();
    let (read, _) = read_all(&mut server, &stale, &mut plain);
    assert!(
        matches!(read, Err(SessionError::Record(RecordError::BadRecordMac))),
        "{read:?}"
    );
    assert!(plain.is_empty());
}

#[test]
fn a_key_update_split_across_records_after_the_hand_over_ends_at_its_first_part() {
    let (cfg, cert) = support::dev_tls();
    let mut server = TlsSession::new(cfg.clone()).unwrap();
    let mut c = extractable_client(&cert);
    establish(&mut server, &mut c);
    assert!(server.uses_record_layer());
    let mut peer = into_raw_peer(c);
    for part in [&KEY_UPDATE[..1], &KEY_UPDATE[..3]] {
        let mut server = TlsSession::new(cfg.clone()).unwrap();
        let mut c = extractable_client(&cert);
        establish(&mut server, &mut c);
        let mut peer = into_raw_peer(c);
        let mut first = Vec::new();
        peer.seal_record(22, part, &mut first).unwrap();
        let (read, wire) = read_all(&mut server, &first, &mut Vec::new());
        assert!(
            matches!(
                read,
                Err(SessionError::Record(RecordError::PostHandshakeMessage(24)))
            ),
            "{read:?}"
        );
        assert_eq!(server.pending_in_len(), 0, "nothing held for the rest");
        assert_eq!(
            peer_opens(&mut peer, &wire),
            Err(RecordError::PeerAlert(10)),
            "unexpected_message"
        );
    }
    // An empty handshake record is no message at all.
    let mut empty = Vec::new();
    peer.seal_record(22, &[], &mut empty).unwrap();
    let (read, _) = read_all(&mut server, &empty, &mut Vec::new());
    assert!(
        matches!(
            read,
            Err(SessionError::Record(RecordError::UnexpectedMessage(22)))
        ),
        "{read:?}"
    );
}

#[test]
fn a_partial_record_held_during_the_first_write_delays_the_hand_over() {
    let (cfg, cert) = support::dev_tls();
    let mut server = TlsSession::new(cfg).unwrap();
    let mut c = client(&cert);
    handshake_only(&mut server, &mut c);
    c.writer().write_all(b"request in two reads").unwrap();
    let request = pump_client(&mut c, &[]);
    let mut plain = Vec::new();
    feed(
        &mut server,
        &request[..request.len() - 3],
        usize::MAX,
        &mut plain,
    )
    .unwrap();
    assert_eq!(server.pending_in_len(), request.len() - 3);
    // The first write with a partial record held: rustls encrypts it, keys stay with rustls.
    let mut reply = Vec::new();
    server.encrypt(b"first reply", &mut reply).unwrap();
    assert!(!server.uses_record_layer());
    assert_eq!(
        server.pending_in_len(),
        request.len() - 3,
        "held bytes kept"
    );
    pump_client(&mut c, &reply);
    let mut got = [0u8; 11];
    c.reader().read_exact(&mut got).unwrap();
    assert_eq!(&got, b"first reply");
    // The rest of the record arrives: it opens, and the next write hands over.
    feed(
        &mut server,
        &request[request.len() - 3..],
        usize::MAX,
        &mut plain,
    )
    .unwrap();
    assert_eq!(plain, b"request in two reads");
    assert_eq!(server.pending_in_len(), 0);
    assert_eq!(round_trip(&mut server, &mut c, b"second"), b"second");
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
fn odd_record_versions_are_refused_with_decode_error() {
    let (cfg, cert) = support::dev_tls();
    for version in [[3u8, 1], [3, 4], [3, 0], [0x7f, 0x1c], [0, 0]] {
        let mut server = TlsSession::new(cfg.clone()).unwrap();
        let mut c = client(&cert);
        establish(&mut server, &mut c);
        c.writer().write_all(b"odd version").unwrap();
        let mut record = pump_client(&mut c, &[]);
        record[1..3].copy_from_slice(&version);
        let (err, client_err) = refused(&mut server, &mut c, &record);
        let expected = RecordError::BadRecordVersion {
            version: u16::from_be_bytes(version),
        };
        assert!(
            matches!(err, SessionError::Record(e) if e == expected),
            "{version:?}: {err}"
        );
        assert_eq!(
            client_err,
            Some(rustls::Error::AlertReceived(
                rustls::AlertDescription::DecodeError
            ))
        );
    }
    // Before the hand-over rustls protects the records, and it ignores the field (RFC 8446
    // §5.1 allows that: it authenticates every record as 0x0303), so the record opens to
    // exactly what the client sealed, and the record after it too.
    let mut server = TlsSession::new(cfg).unwrap();
    let mut c = client(&cert);
    handshake_only(&mut server, &mut c);
    c.writer().write_all(b"odd version").unwrap();
    let mut record = pump_client(&mut c, &[]);
    record[2] = 1;
    let mut plain = Vec::new();
    feed(&mut server, &record, usize::MAX, &mut plain).unwrap();
    assert_eq!(plain, b"odd version");
    assert_eq!(round_trip(&mut server, &mut c, b"next"), b"next");
    assert!(server.uses_record_layer());
}

#[test]
fn an_empty_record_flood_ends_with_unexpected_message() {
    let (cfg, cert) = support::dev_tls();
    let mut server = TlsSession::new(cfg).unwrap();
    let mut c = extractable_client(&cert);
    establish(&mut server, &mut c);
    let mut peer = into_raw_peer(c);
    let mut plain = Vec::new();
    // Up to the limit is fine (rustls allows as many), and data resets the count.
    let mut wire = Vec::new();
    for _ in 0..EMPTY_RECORDS_IN_A_ROW_MAX {
        peer.seal_record(23, &[], &mut wire).unwrap();
    }
    peer.seal(b"data", &mut wire).unwrap();
    let (read, reply) = read_all(&mut server, &wire, &mut plain);
    read.unwrap();
    assert!(reply.is_empty());
    assert_eq!(plain, b"data");
    // A flood: a thousand empty records in one read.
    let mut flood = Vec::new();
    for _ in 0..1000 {
        peer.seal_record(23, &[], &mut flood).unwrap();
    }
    let (read, reply) = read_all(&mut server, &flood, &mut plain);
    assert!(
        matches!(
            read,
            Err(SessionError::Record(RecordError::TooManyEmptyRecords {
                max: EMPTY_RECORDS_IN_A_ROW_MAX
            }))
        ),
        "{read:?}"
    );
    assert_eq!(
        peer_opens(&mut peer, &reply),
        Err(RecordError::PeerAlert(10))
    );
    assert_eq!(plain, b"data");
}

#[test]
fn a_warning_alert_is_an_error_and_gets_no_reply() {
    let (cfg, cert) = support::dev_tls();
    for description in [40u8, 42, 80] {
        let mut server = TlsSession::new(cfg.clone()).unwrap();
        let mut c = extractable_client(&cert);
        establish(&mut server, &mut c);
        let mut peer = into_raw_peer(c);
        let mut alert = Vec::new();
        peer.seal_record(21, &[1, description], &mut alert).unwrap();
        let (read, reply) = read_all(&mut server, &alert, &mut Vec::new());
        assert!(
            matches!(
                read,
                Err(SessionError::Record(RecordError::PeerAlert(d))) if d == description
            ),
            "{read:?}"
        );
        assert!(reply.is_empty(), "nothing answers an error alert");
        let mut wire = Vec::new();
        server.close_notify(&mut wire);
        assert!(wire.is_empty(), "the session is over");
    }
}

#[test]
fn after_a_write_error_no_close_notify_is_sealed() {
    let (cfg, cert) = support::dev_tls();
    // On the record layer and while rustls still holds the keys.
    for handed_over in [true, false] {
        let session = || {
            let mut server = TlsSession::new(cfg.clone()).unwrap();
            let mut c = client(&cert);
            if handed_over {
                establish(&mut server, &mut c);
            } else {
                handshake_only(&mut server, &mut c);
            }
            (server, c)
        };
        // Without a write error, close_notify goes out and the client sees a clean end.
        let (mut server, mut c) = session();
        let mut wire = Vec::new();
        server.close_notify(&mut wire);
        assert!(!wire.is_empty());
        pump_client(&mut c, &wire);
        assert_eq!(c.reader().read_to_end(&mut Vec::new()).unwrap(), 0);
        // A reply sealed and lost on the socket: nothing more is sealed after the gap.
        let (mut server, _c) = session();
        let mut lost = Vec::new();
        server.encrypt(b"never arrives", &mut lost).unwrap();
        server.write_failed();
        let mut wire = Vec::new();
        server.close_notify(&mut wire);
        assert!(wire.is_empty(), "handed over: {handed_over}");
        assert!(matches!(
            server.encrypt(b"more", &mut wire),
            Err(SessionError::Failed)
        ));
        assert!(wire.is_empty());
    }
}

/// Answers every frame with `pong`.
struct Pong;

impl engine::Service for Pong {
    type Msg = ();
    type Adopt = ();
    type Timer = ();

    fn on_open(&mut self, _io: &mut engine::ShardIo<Self>, _conn: proto::ids::ConnId) {}

    fn on_frame(&mut self, io: &mut engine::ShardIo<Self>, conn: proto::ids::ConnId, _p: &[u8]) {
        let _ = io.send_with(conn, |out| out.extend_from_slice(&testkit::frame(b"pong")));
    }

    fn on_close(
        &mut self,
        _io: &mut engine::ShardIo<Self>,
        _conn: proto::ids::ConnId,
        _reason: engine::CloseReason,
    ) {
    }

    fn on_mesh(&mut self, _io: &mut engine::ShardIo<Self>, _from: proto::ids::ShardId, _msg: ()) {}

    fn on_adopt(
        &mut self,
        _io: &mut engine::ShardIo<Self>,
        _from: proto::ids::ShardId,
        _conn: proto::ids::ConnId,
        _msg: (),
    ) {
    }

    fn on_timer(&mut self, _io: &mut engine::ShardIo<Self>, _t: ()) {}
}

#[test]
fn an_empty_record_flood_on_a_real_socket_closes_only_that_connection() {
    let (tls, cert) = support::dev_tls();
    let mut cfg = support::config(1);
    cfg.tls = Some(tls);
    let rt = engine::start(cfg, |_| Pong).expect("start");
    let mut good = testkit::FrameClient::tls(rt.local_addr(), &cert);
    good.send(b"ping");
    assert_eq!(good.recv(), b"pong");

    // The attacker: a real handshake and one request (the server hands its keys over with
    // the reply), then the test takes the client's keys and floods empty records.
    let tcp = std::net::TcpStream::connect(rt.local_addr()).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut stream = rustls::StreamOwned::new(extractable_client(&cert), tcp);
    stream.write_all(&testkit::frame(b"ping")).unwrap();
    let mut reply = [0u8; 8];
    stream.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"\0\0\0\x04pong");
    let rustls::StreamOwned { conn, sock, .. } = stream;
    let (mut peer, mut tcp) = (into_raw_peer(conn), sock);
    let mut flood = Vec::new();
    for _ in 0..=EMPTY_RECORDS_IN_A_ROW_MAX {
        peer.seal_record(23, &[], &mut flood).unwrap();
    }
    tcp.write_all(&flood).unwrap();
    let mut back = Vec::new();
    tcp.read_to_end(&mut back).expect("closed by the server");
    assert_eq!(
        peer_opens(&mut peer, &back),
        Err(RecordError::PeerAlert(10)),
        "unexpected_message, then the connection closed"
    );

    good.send(b"ping");
    assert_eq!(good.recv(), b"pong", "the shard goes on");
    rt.stop();
    rt.join().unwrap();
}

/// Handshakes `server` with `c` in memory, whole flights at a time; returns whether the
/// server reported the handshake as resumed from a ticket.
fn handshake_reporting_resumption(
    server: &mut TlsSession,
    c: &mut rustls::ClientConnection,
) -> bool {
    let mut resumed = false;
    let mut to_server = pump_client(c, &[]);
    for _ in 0..4 {
        let (mut plain, mut wire) = (Vec::new(), Vec::new());
        let progress = server.read(&mut to_server, &mut plain, &mut wire).unwrap();
        resumed |= progress.resumed;
        // The ticket rides in the server's last flight: the client has it after this.
        to_server = pump_client(c, &wire);
        if !server.is_handshaking() && !c.is_handshaking() && to_server.is_empty() {
            break;
        }
    }
    assert!(!server.is_handshaking() && !c.is_handshaking());
    resumed
}

#[test]
fn a_second_connection_resumes_from_the_first_ones_ticket() {
    let (cfg, cert) = support::dev_tls();
    let client_cfg = engine::tls::client_config_resuming(&cert).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let mut server = TlsSession::new(cfg.clone()).unwrap();
        let mut c = rustls::ClientConnection::new(client_cfg.clone(), name.clone()).unwrap();
        let resumed = handshake_reporting_resumption(&mut server, &mut c);
        // After a resumed handshake the keys move to our record layer as after a full one.
        assert_eq!(round_trip(&mut server, &mut c, b"hello"), b"hello");
        assert!(server.uses_record_layer());
        seen.push((c.handshake_kind(), resumed));
    }
    use rustls::HandshakeKind::{Full, Resumed};
    assert_eq!(
        seen,
        [
            (Some(Full), false),
            (Some(Resumed), true),
            (Some(Resumed), true)
        ],
        "each connection leaves a fresh ticket for the next"
    );
}

#[test]
fn a_client_config_without_resumption_always_runs_a_full_handshake() {
    let (cfg, cert) = support::dev_tls();
    let client_cfg = engine::tls::client_config_trusting(&cert).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    for _ in 0..2 {
        let mut server = TlsSession::new(cfg.clone()).unwrap();
        let mut c = rustls::ClientConnection::new(client_cfg.clone(), name.clone()).unwrap();
        assert!(!handshake_reporting_resumption(&mut server, &mut c));
        assert_eq!(c.handshake_kind(), Some(rustls::HandshakeKind::Full));
    }
}

/// What a live upgrade does to a session: export, then import in a "new process".
fn moved(server: &TlsSession) -> TlsSession {
    let mut state = Vec::new();
    let pending = server
        .export(&mut state)
        .expect("a session on the record layer moves");
    assert_eq!(state.len(), engine::tls::records::RECORD_STATE_BYTES);
    TlsSession::import(&state, pending).unwrap()
}

#[test]
fn a_session_exported_and_imported_goes_on_where_it_stopped() {
    let (cfg, cert) = support::dev_tls();
    let mut server = TlsSession::new(cfg).unwrap();
    let mut c = client(&cert);
    establish(&mut server, &mut c);
    assert_eq!(round_trip(&mut server, &mut c, b"before"), b"before");
    let mut server = moved(&server);
    // Both directions continue: the sequence numbers moved with the keys.
    for i in 0..3u8 {
        let msg = [b'a' + i; 100];
        assert_eq!(round_trip(&mut server, &mut c, &msg), msg);
    }
}

#[test]
fn a_partial_record_moves_with_the_session() {
    let (cfg, cert) = support::dev_tls();
    let mut server = TlsSession::new(cfg).unwrap();
    let mut c = client(&cert);
    establish(&mut server, &mut c);
    c.writer().write_all(b"split across the move").unwrap();
    let record = pump_client(&mut c, &[]);
    let mut plain = Vec::new();
    feed(&mut server, &record[..10], 3, &mut plain).unwrap();
    assert_eq!(server.pending_in_len(), 10);
    let mut server = moved(&server);
    feed(&mut server, &record[10..], 7, &mut plain).unwrap();
    assert_eq!(plain, b"split across the move");
}

#[test]
fn a_session_still_on_rustls_does_not_move() {
    let (cfg, cert) = support::dev_tls();
    let mut server = TlsSession::new(cfg).unwrap();
    let mut c = client(&cert);
    handshake_only(&mut server, &mut c);
    assert!(server.export(&mut Vec::new()).is_none());
}

#[test]
fn imported_state_is_checked() {
    use engine::tls::records::{StateError, RECORD_STATE_BYTES};
    let (cfg, cert) = support::dev_tls();
    let mut server = TlsSession::new(cfg).unwrap();
    let mut c = client(&cert);
    establish(&mut server, &mut c);
    let mut state = Vec::new();
    server.export(&mut state).unwrap();
    assert_eq!(
        TlsSession::import(&state[1..], &[]).unwrap_err(),
        StateError::Length {
            len: RECORD_STATE_BYTES - 1
        }
    );
    let mut bad = state.clone();
    bad[0] = 9;
    assert!(matches!(
        TlsSession::import(&bad, &[]),
        Err(StateError::Inconsistent(_))
    ));
    let mut bad = state.clone();
    bad[3] = 5; // a key length no AEAD has
    assert!(matches!(
        TlsSession::import(&bad, &[]),
        Err(StateError::Inconsistent(_))
    ));
    let too_long = vec![0u8; engine::tls::session::TLS_PENDING_BYTES_MAX + 1];
    assert!(TlsSession::import(&state, &too_long).is_err());
}
