//! A frame begun before a connection moves to its user's home shard keeps its deadline
//! there (issue 22 item 7): the new shard used to arm only the idle timer, so a slowloris
//! frame sent with the login got the idle timeout (300 s by default) instead of the frame
//! timeout (30 s).

use crate::support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use proto::v1::client_frame;
use support::{raw_frame, TestServer, V};

/// Two shards; every login is sent with the first bytes of a second frame in the same
/// write, then nothing more. Some of the connections land on the shard that is not their
/// user's home and are handed off at login (checked in the statistics); every one of them
/// must be closed by the frame deadline (1 s here), long before the idle one (60 s).
#[test]
fn a_frame_begun_before_a_handoff_keeps_its_deadline_on_the_new_shard() {
    let server = TestServer::start_cfg(2, false, testkit::temp_dir("handoff-frame"), |cfg| {
        cfg.frame_timeout_ms = 1_000;
        cfg.idle_timeout_ms = 60_000;
    });
    // Each lands on either shard as the kernel's SO_REUSEPORT hash picks: 12 all on the home
    // shard happens once in 4,096 runs (then the check on the statistics says so).
    const CONNS: usize = 12;
    // One user each (a second login of one user would close the first as replaced).
    let mut conns = Vec::new();
    for phone in support::phones_on(1, 2, CONNS, 100) {
        let mut login = raw_frame(client_frame::Kind::LoadTestLogin(
            proto::v1::LoadTestLogin {
                protocol_version: V,
                phone,
                secret: b"farm-secret".to_vec(),
            },
        ));
        // A header announcing 100 bytes, and 3 of them.
        login.extend_from_slice(&[0, 0, 0, 100, 1, 2, 3]);
        let mut s = TcpStream::connect(server.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        s.write_all(&login).unwrap();
        conns.push(s);
    }
    let started = Instant::now();
    for (i, s) in conns.iter_mut().enumerate() {
        // LoggedIn, then the close.
        let mut b = [0u8; 4096];
        let closed = loop {
            match s.read(&mut b) {
                Ok(0) => break true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
                Err(_) => break true,
            }
        };
        assert!(
            closed,
            "connection {i} still open {:?} after its login with a frame begun",
            started.elapsed()
        );
    }
    assert!(started.elapsed() < Duration::from_secs(15));
    // The statistics (published once a second) show the handoffs took place.
    let rt = server.rt.as_ref().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let handed_in = loop {
        let n: u64 = rt
            .stats()
            .iter()
            .flatten()
            .map(|s| s.counters.handoffs_in)
            .sum();
        if n > 0 || Instant::now() > deadline {
            break n;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        handed_in > 0,
        "no connection was handed off: the test proved nothing"
    );
}
