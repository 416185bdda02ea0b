//! The group attacks of issue 22 run as an attacker would, over real TLS sockets: a
//! stranger adding someone to a group (and re-adding them as soon as they leave), and one
//! account creating groups as fast as it can. Each refusal is counted in `/stats` and
//! `/metrics`. (The same rules with fake time, in more detail: `sim/groups.rs`.)

use crate::support;

use proto::v1::{client_frame, server_frame, ErrorCode, GroupAddPolicy};
use support::admin::{fresh_stats, get, metric_sum, parse_prometheus, service_sum};
use support::{Client, TestServer};
use testkit::temp_dir;

fn server(shards: usize) -> (TestServer, std::net::SocketAddr) {
    let s = TestServer::start_cfg(shards, true, temp_dir("groups"), |c| {
        c.admin = Some("127.0.0.1:0".parse().unwrap());
    });
    let admin = s.rt.as_ref().unwrap().admin_addr().expect("admin serves");
    (s, admin)
}

/// Reads `c` up to the first frame `until` matches; returns it.
fn wait_for(c: &mut Client, until: impl Fn(&server_frame::Kind) -> bool) -> server_frame::Kind {
    loop {
        let f = c.recv();
        if until(&f) {
            return f;
        }
    }
}

fn is_refusal(f: &server_frame::Kind) -> bool {
    matches!(f, server_frame::Kind::Error(e) if e.code == ErrorCode::GroupAddRefused as i32)
}

fn user(server: &TestServer, phone: &str) -> Client {
    let mut c = server.client();
    c.load_test_login(phone);
    c
}

fn add(c: &mut Client, group_id: u64, member: &str) {
    c.send(client_frame::Kind::GroupAdd(proto::v1::GroupAdd {
        group_id,
        members: vec![member.into()],
    }));
}

/// The group's members as `c` (a member) reads them, after everything sent before.
fn members(c: &mut Client, group_id: u64) -> (Vec<String>, Vec<server_frame::Kind>) {
    c.send(client_frame::Kind::GroupMembers(
        proto::v1::GroupMembersRequest { group_id },
    ));
    let mut before = Vec::new();
    loop {
        match c.recv() {
            server_frame::Kind::GroupMembers(g) => return (g.members, before),
            other => before.push(other),
        }
    }
}

fn refused(frames: &[server_frame::Kind]) -> usize {
    frames
        .iter()
        .filter(|f| matches!(f, server_frame::Kind::Error(e) if e.code == ErrorCode::GroupAddRefused as i32))
        .count()
}

#[test]
fn a_stranger_cannot_add_someone_nor_re_add_them_after_they_leave() {
    let (server, admin) = server(2);
    let (v, s) = ("+15557770001", "+15557770002");
    let mut victim = user(&server, v);
    let mut stranger = user(&server, s);
    stranger.send(client_frame::Kind::GroupCreate(proto::v1::GroupCreate {
        client_req_id: 1,
        name: "spam".into(),
        members: vec![v.into()],
    }));
    let mut frames = Vec::new();
    let group_id = loop {
        match stranger.recv() {
            server_frame::Kind::GroupCreated(g) => break g.group_id,
            other => frames.push(other),
        }
    };
    if refused(&frames) == 0 {
        wait_for(&mut stranger, is_refusal);
    }
    let (list, more) = members(&mut stranger, group_id);
    assert_eq!(list, vec![s.to_string()], "the victim is not in it");
    assert_eq!(refused(&more), 0, "one refusal: {more:?}");
    assert!(victim.sync().is_empty(), "the victim hears nothing");

    // The victim once let everyone add them, then left and chose contacts only: the
    // stranger's immediate re-add is refused and shows them no member.
    victim.group_privacy(GroupAddPolicy::Everyone);
    add(&mut stranger, group_id, v);
    let updated = wait_for(&mut stranger, |f| {
        matches!(f, server_frame::Kind::GroupUpdated(_))
    });
    let server_frame::Kind::GroupUpdated(u) = updated else {
        unreachable!()
    };
    assert_eq!(u.members, vec![s.to_string(), v.to_string()]);
    victim.group_privacy(GroupAddPolicy::Contacts);
    victim.send(client_frame::Kind::GroupRemove(proto::v1::GroupRemove {
        group_id,
        members: vec![v.into()],
    }));
    victim.sync();
    wait_for(
        &mut stranger,
        |f| matches!(f, server_frame::Kind::GroupUpdated(u) if u.members.len() == 1),
    );
    add(&mut stranger, group_id, v);
    let e = wait_for(&mut stranger, is_refusal);
    assert!(matches!(e, server_frame::Kind::Error(e) if e.detail.contains(v)));
    let (list, frames) = members(&mut stranger, group_id);
    assert_eq!(list, vec![s.to_string()]);
    assert_eq!(refused(&frames), 0, "{frames:?}");
    // The victim's last word from the group is its own leaving (the group's home tells it in
    // order); nothing after it.
    wait_for(
        &mut victim,
        |f| matches!(f, server_frame::Kind::GroupUpdated(u) if u.members == [s]),
    );
    assert!(
        !victim
            .sync()
            .iter()
            .any(|f| matches!(f, server_frame::Kind::GroupUpdated(_))),
        "the victim is not shown the members again"
    );
    let stats = fresh_stats(admin, 2);
    assert_eq!(service_sum(&stats, "group_adds_refused_total"), 2);
    let metrics = parse_prometheus(&get(admin, "/metrics").1);
    assert_eq!(
        metric_sum(&metrics, "switchboard_group_adds_refused_total"),
        2.0
    );
}

#[test]
fn one_account_creating_groups_as_fast_as_it_can_is_held_by_its_hourly_budget() {
    let (server, admin) = server(2);
    let mut a = user(&server, "+15557770003");
    let budget = messaging::tables::budgets::GROUP_CREATES_PER_USER_PER_HOUR as u64;
    for req in 0..budget + 5 {
        a.send(client_frame::Kind::GroupCreate(proto::v1::GroupCreate {
            client_req_id: req,
            name: "flood".into(),
            members: Vec::new(),
        }));
    }
    let answers = a.recv_n(budget as usize + 5);
    let created = answers
        .iter()
        .filter(|f| matches!(f, server_frame::Kind::GroupCreated(_)))
        .count();
    assert_eq!(created as u64, budget);
    for f in answers
        .iter()
        .filter(|f| !matches!(f, server_frame::Kind::GroupCreated(_)))
    {
        let server_frame::Kind::Error(e) = f else {
            panic!("{f:?}")
        };
        assert_eq!(e.code, ErrorCode::RateLimited as i32);
        assert!(e.retry_after_ms > 0 && e.retry_after_ms <= messaging::tables::budgets::HOUR_MS);
    }
    let stats = fresh_stats(admin, 2);
    assert_eq!(service_sum(&stats, "refused_group_create_total"), 5);
    let metrics = parse_prometheus(&get(admin, "/metrics").1);
    assert_eq!(
        metric_sum(&metrics, "switchboard_refused_group_create_total"),
        5.0
    );
}
