//! Placement and redirects: two boxes on one NATS; each phone gets one home box, chosen at
//! sign-up and kept; Register, Verify, Login and LoadTestLogin at the other box answer
//! `Redirect` to the home's advertised address, and work at the home.

use proto::v1::{client_frame, server_frame, ErrorCode};

use crate::nats::{Box, Nats};
use crate::support::V;

pub const ADV_A: &str = "box-a.test:5222";
pub const ADV_B: &str = "box-b.test:5222";

/// The phones whose home rendezvous hashing puts on `id` of boxes a and b.
pub fn phones_homed_on(id: &str, n: usize, from: u64) -> Vec<String> {
    (from..)
        .map(|i| format!("+1555{i:07}"))
        .filter(|p| shards::cluster::placement::choose(p, ["a", "b"]) == Some(id))
        .take(n)
        .collect()
}

pub fn two_boxes(nats: &Nats) -> (Box, Box) {
    let a = Box::start(&nats.url, "a", ADV_A, &[]);
    let b = Box::start(&nats.url, "b", ADV_B, &[]);
    a.wait_stat("cluster_members", 2);
    b.wait_stat("cluster_members", 2);
    (a, b)
}

fn expect_redirect(frame: server_frame::Kind, to: &str) {
    match frame {
        server_frame::Kind::Redirect(r) => assert_eq!(r.addr, to),
        other => panic!("expected Redirect to {to}, got {other:?}"),
    }
}

#[test]
fn sign_up_and_login_work_at_the_home_and_redirect_elsewhere() {
    let nats = Nats::start();
    let (a, b) = two_boxes(&nats);
    let phone = &phones_homed_on("b", 1, 3_000_000)[0];

    let register = client_frame::Kind::Register(proto::v1::Register {
        protocol_version: V,
        phone: phone.clone(),
    });
    let mut at_a = a.client();
    at_a.send(register.clone());
    expect_redirect(at_a.recv(), ADV_B);
    assert!(at_a.is_closed(), "a redirected connection is closed");

    let mut at_b = b.client();
    at_b.send(register);
    assert!(matches!(at_b.recv(), server_frame::Kind::PinSent(_)));
    let verify = client_frame::Kind::Verify(proto::v1::Verify {
        protocol_version: V,
        phone: phone.clone(),
        pin: b.pin_for(phone),
    });
    let mut at_a = a.client();
    at_a.send(verify.clone());
    expect_redirect(at_a.recv(), ADV_B);
    at_b.send(verify);
    let key = match at_b.recv() {
        server_frame::Kind::Verified(v) => v.device_key,
        other => panic!("expected Verified, got {other:?}"),
    };

    let login = client_frame::Kind::Login(proto::v1::Login {
        protocol_version: V,
        phone: phone.clone(),
        device_key: key.clone(),
    });
    let mut at_a = a.client();
    at_a.send(login);
    expect_redirect(at_a.recv(), ADV_B);
    b.client().login(phone, &key);
    let (status, body) = crate::support::admin::get(a.admin, "/readyz");
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    crate::nats::every_cluster_metric_is_documented(a.admin);
    // The box the phone first came to recorded its home (on b), once.
    assert_eq!(a.stat("cluster_homes_created_total"), Some(1));
    assert_eq!(b.stat("cluster_homes_created_total"), Some(0));
}

#[test]
fn every_phone_gets_one_home_and_keeps_it() {
    let nats = Nats::start();
    let (a, b) = two_boxes(&nats);
    let on_a = phones_homed_on("a", 5, 3_100_000);
    let on_b = phones_homed_on("b", 5, 3_100_000);
    for (phone, home, other, home_adv) in on_a
        .iter()
        .map(|p| (p, &a, &b, ADV_A))
        .chain(on_b.iter().map(|p| (p, &b, &a, ADV_B)))
    {
        // First contact at the other box records the home and redirects there.
        let mut c = other.client();
        c.send(load_test_login(phone));
        expect_redirect(c.recv(), home_adv);
        home.client().load_test_login(phone);
        // Again, from the other side: the same home.
        let mut c = other.client();
        c.send(load_test_login(phone));
        expect_redirect(c.recv(), home_adv);
    }
    let created = a.stat("cluster_homes_created_total").unwrap()
        + b.stat("cluster_homes_created_total").unwrap();
    assert_eq!(created, 10, "each phone's home recorded once");
    // A third box joining moves nobody already placed.
    let c3 = Box::start(&nats.url, "c", "box-c.test:5222", &[]);
    c3.wait_stat("cluster_members", 3);
    for phone in &on_a {
        let mut c = c3.client();
        c.send(load_test_login(phone));
        expect_redirect(c.recv(), ADV_A);
    }
}

#[test]
fn a_home_box_that_is_down_is_said_so() {
    let nats = Nats::start();
    let (a, mut b) = two_boxes(&nats);
    let phone = &phones_homed_on("b", 1, 3_200_000)[0];
    b.client().load_test_login(phone);
    b.child.kill().unwrap();
    b.child.wait().unwrap();
    // b's lease runs out; then a says b is down instead of redirecting there.
    a.wait_stat("cluster_members", 1);
    let mut c = a.client();
    c.send(load_test_login(phone));
    let e = match c.recv() {
        server_frame::Kind::Error(e) => e,
        other => panic!("expected an error, got {other:?}"),
    };
    assert_eq!(e.code, ErrorCode::HomeBoxDown as i32);
}

fn load_test_login(phone: &str) -> client_frame::Kind {
    client_frame::Kind::LoadTestLogin(proto::v1::LoadTestLogin {
        protocol_version: V,
        phone: phone.into(),
        secret: b"farm-secret".to_vec(),
    })
}

#[test]
fn a_box_stopped_cleanly_leaves_at_once() {
    let nats = Nats::start();
    let (a, mut b) = two_boxes(&nats);
    let t = std::time::Instant::now();
    // SIGTERM: the box drains and its gateway deletes its member entry on the way out.
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    unsafe { libc::kill(b.child.id() as i32, libc::SIGTERM) };
    let (status, _) = testkit::exit_and_stderr(
        &mut b.child,
        std::time::Duration::from_secs(20),
        "a box stopping on SIGTERM",
    );
    assert!(status.success());
    a.wait_stat("cluster_members", 1);
    let lease = std::time::Duration::from_millis(shards::cluster::membership::MEMBER_LEASE_MS);
    assert!(
        t.elapsed() < lease,
        "left in {:?}, before its lease ran out",
        t.elapsed()
    );
}

/// What `switchboard cluster status` reads: each live box's `{advertise, load}` under its
/// box id in the `switchboard_members` KV bucket, the load being its open connections.
#[test]
fn each_box_announces_its_address_and_load_in_the_members_bucket() {
    let nats = Nats::start();
    let a = Box::start(&nats.url, "a", ADV_A, &[]);
    a.wait_stat("cluster_members", 1);
    let mut held = a.client();
    held.load_test_login("+15553300001");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let member = rt.block_on(async {
        let client = async_nats::connect(nats.url.as_str()).await.unwrap();
        let kv = async_nats::jetstream::new(client)
            .get_key_value(shards::cluster::membership::MEMBERS_BUCKET)
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let value = kv.get("a").await.unwrap().expect("box a is a member");
            let m: shards::cluster::membership::Member = serde_json::from_slice(&value).unwrap();
            if m.load >= 1 || std::time::Instant::now() > deadline {
                return m;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    });
    assert_eq!(member.advertise, ADV_A);
    assert!(member.load >= 1, "{member:?}");
}

/// A box that served alone before it joined a cluster: its users have no home anywhere, and
/// hashing would give bob box a (a login at b redirected away from his account and queue).
/// `switchboard cluster import` (refused while the box runs) records b as home of every
/// account in b's data; then bob logs in at b and finds his queue, and alice of box a
/// reaches him. Run again, it changes nothing.
#[test]
fn cluster_import_homes_the_accounts_of_a_box_that_ran_alone() {
    let data = testkit::temp_dir("box-b-alone");
    let [bob, carol] = [4_900_000, 4_950_000].map(|from| phones_homed_on("a", 1, from).remove(0));
    let alice = &phones_homed_on("a", 1, 4_990_000)[0];
    let nats = Nats::start();
    let import = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["cluster", "import", "--data-dir"])
            .arg(&data)
            .args(["--cluster", &nats.url, "--box-id", "b"])
            .output()
            .expect("run switchboard cluster import");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    {
        let mut cmd = crate::support::switchboard_command(&["--shards", "2", "--no-tls"]);
        cmd.env(shards::config::LOAD_TEST_SECRET_ENV, "farm-secret")
            .arg("--data-dir")
            .arg(&data);
        let (mut alone, line) = crate::support::listening(cmd);
        let addr = shards::server::listening_addr(&line).expect("addr=");
        crate::support::Client::plain(addr).load_test_login(&bob);
        let mut at = crate::support::Client::plain(addr);
        at.load_test_login(&carol);
        at.send_text(&bob, 1, "before the cluster");
        match at.recv() {
            server_frame::Kind::ServerAck(a) => assert_eq!(a.client_msg_id, 1),
            other => panic!("expected the ack, got {other:?}"),
        }
        let (ok, _, err) = import();
        assert!(!ok, "refused while the box runs");
        assert!(err.contains("stop the box"), "{err}");
        // Stopped as an operator stops it (SIGTERM: its logs written out), not killed: a
        // login's account record may still be in its commit window.
        let pid = libc::pid_t::try_from(alone.id()).expect("a pid");
        // SAFETY: a signal to our own child, not yet reaped.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while alone.try_wait().unwrap().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "the box stops on SIGTERM"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    let (ok, out, err) = import();
    assert!(ok, "{err}");
    assert!(
        out.contains("2 accounts in b's data: 2 now homed on b"),
        "{out}"
    );

    let a = Box::start(&nats.url, "a", ADV_A, &[]);
    let b = Box::start_in(data.clone(), &nats.url, "b", ADV_B, &[]);
    a.wait_stat("cluster_members", 2);
    b.wait_stat("cluster_members", 2);
    let mut at_b = b.client();
    assert_eq!(at_b.load_test_login(&bob), 1, "his queue is where it was");
    let mut at_a = a.client();
    at_a.load_test_login(alice);
    at_a.send_text(&bob, 7, "welcome to the cluster");
    let mut got = Vec::new();
    while got.len() < 2 {
        if let server_frame::Kind::Message(m) = at_b.recv() {
            got.push(m.client_msg_id);
            at_b.ack(vec![m.server_msg_id]);
        }
    }
    got.sort_unstable();
    assert_eq!(got, vec![1, 7]);
    drop(b);
    let (ok, out, err) = import();
    assert!(ok, "{err}");
    assert!(out.contains("0 now homed on b, 2 were already"), "{out}");
}
