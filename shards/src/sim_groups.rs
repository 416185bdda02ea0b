//! The group attacks of issue 22 against the simulated cluster with fake time: one account
//! creating groups without end (item 3), and strangers adding anyone to a group (item 9).
//! (The same over real sockets: `tests/security_groups.rs`.)

use proto::v1::{client_frame::Kind as K, server_frame::Kind as S, ErrorCode};

use crate::budget::{BudgetKind, GROUP_CREATES_PER_USER_PER_HOUR, HOUR_MS};
use crate::limits::GROUPS_ADMINISTERED_PER_USER_MAX;
use crate::sim::Sim;

fn create(req: u64, members: &[&str]) -> K {
    K::GroupCreate(proto::v1::GroupCreate {
        client_req_id: req,
        name: format!("g{req}"),
        members: members.iter().map(|m| m.to_string()).collect(),
    })
}

/// The code of the first error in `frames`, if any.
fn error_of(frames: &[S]) -> Option<ErrorCode> {
    frames.iter().find_map(|f| match f {
        S::Error(e) => ErrorCode::try_from(e.code).ok(),
        _ => None,
    })
}

fn created(frames: &[S]) -> Vec<u64> {
    frames
        .iter()
        .filter_map(|f| match f {
            S::GroupCreated(g) => Some(g.group_id),
            _ => None,
        })
        .collect()
}

/// Creates a group and returns its id, or the error it got.
fn try_create(
    sim: &mut Sim,
    c: engine::ConnId,
    req: u64,
    members: &[&str],
) -> Result<u64, ErrorCode> {
    sim.send(c, create(req, members));
    sim.commit();
    let frames = sim.take(c);
    match (created(&frames).first(), error_of(&frames)) {
        (Some(&id), None) => Ok(id),
        (_, Some(code)) => Err(code),
        (None, None) => panic!("no answer: {frames:?}"),
    }
}

#[test]
fn item3_group_creation_is_held_per_user_per_hour_and_in_all() {
    let mut sim = Sim::new(2);
    let a = "+15550000001";
    let c = sim.login(a, 0);
    for req in 0..GROUP_CREATES_PER_USER_PER_HOUR as u64 {
        try_create(&mut sim, c, req, &[]).unwrap();
    }
    assert_eq!(
        try_create(&mut sim, c, 999, &[]),
        Err(ErrorCode::RateLimited),
        "the hour's budget is spent"
    );
    let refused = |sim: &Sim| -> u64 {
        sim.shards
            .iter()
            .map(|s| s.abuse.refused[BudgetKind::GroupCreate as usize])
            .sum()
    };
    assert_eq!(refused(&sim), 1);
    // Another user is not held by it.
    let b = sim.login("+15550000002", 1);
    try_create(&mut sim, b, 1, &[]).unwrap();

    // Hour after hour the budget refills, up to the cap on groups administered.
    let mut made = GROUP_CREATES_PER_USER_PER_HOUR as usize;
    let mut req = 1_000;
    while made < GROUPS_ADMINISTERED_PER_USER_MAX {
        sim.now += HOUR_MS;
        let c = sim.login(a, 0);
        for _ in 0..GROUP_CREATES_PER_USER_PER_HOUR {
            if made == GROUPS_ADMINISTERED_PER_USER_MAX {
                break;
            }
            req += 1;
            try_create(&mut sim, c, req, &[]).unwrap();
            made += 1;
        }
    }
    sim.now += HOUR_MS;
    let c = sim.login(a, 0);
    assert_eq!(
        try_create(&mut sim, c, 5_000, &[]),
        Err(ErrorCode::TooManyGroups)
    );
    let full: u64 = sim
        .shards
        .iter()
        .map(|s| s.abuse.groups_per_user_full)
        .sum();
    assert_eq!(full, 1);
    // The count survives a restart (it is rebuilt from the log's group records).
    sim.restart();
    let c = sim.login(a, 0);
    assert_eq!(
        try_create(&mut sim, c, 5_001, &[]),
        Err(ErrorCode::TooManyGroups)
    );
    let stats = sim.shards[crate::home::home_of_phone(a, 2).0].abuse_stats();
    assert!(
        stats.contains(&("groups_per_user_full_total", 1)),
        "{stats:?}"
    );
}
