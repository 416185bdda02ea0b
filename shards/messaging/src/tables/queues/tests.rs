//! Unit tests of `queues.rs`: shares, the delivery window, the longest queue, the frame an
//! item writes, and the spare buffers of emptied queues.

use super::*;

const U: &str = "+15550000009";
const A: &str = "+15550000010";
const B: &str = "+15550000011";

fn item(id: u64) -> Item {
    from("+15550000002", id)
}

/// What `take_sendable` hands out, decoded.
fn sendable(q: &mut Queues, user: &str) -> Vec<server_frame::Kind> {
    let mut v = Vec::new();
    q.take_sendable(user, |w| {
        v.push(proto::codec::decode_server(&w.bytes).unwrap().kind.unwrap())
    });
    v
}

fn nonces(v: Vec<server_frame::Kind>) -> Vec<u64> {
    v.into_iter()
        .map(|k| match k {
            server_frame::Kind::Message(m) => m.server_msg_id,
            server_frame::Kind::Pong(p) => p.nonce,
            _ => unreachable!(),
        })
        .collect()
}

#[test]
fn items_go_out_in_order_once_per_session_durable_or_not() {
    let mut q = Queues::default();
    for id in 1..=2 {
        q.push(U, item(id)).unwrap();
    }
    assert!(q.mark_durable(U, 2).is_some());
    assert_eq!(nonces(sendable(&mut q, U)), vec![1, 2]);
    assert!(sendable(&mut q, U).is_empty(), "sent once per session");
    q.push(U, item(3)).unwrap();
    assert_eq!(nonces(sendable(&mut q, U)), vec![3], "sent before durable");
    q.session_ended(U);
    assert!(q.mark_durable(U, 4).is_none(), "no such item");
    assert_eq!(
        nonces(sendable(&mut q, U)),
        vec![1, 2, 3],
        "resent after reconnect"
    );
    assert_eq!(q.remove(U, 2).map(|i| i.id), Some(2));
    assert_eq!(q.len_of(U), 2);
    assert_eq!(q.total(), 2);
}

#[test]
fn longest_queue_is_tracked_through_pushes_and_removals() {
    let mut q = Queues::default();
    assert_eq!((q.longest_len(), q.users_queued()), (0, 0));
    for id in 1..=3 {
        q.push(A, item(id)).unwrap();
    }
    q.push(B, item(10)).unwrap();
    assert_eq!((q.longest_len(), q.users_queued()), (3, 2));
    assert_eq!(q.longest_user(), Some((Phone::parse(A).unwrap(), 3)));
    q.remove(A, 1);
    q.remove(A, 2);
    assert_eq!(q.longest_len(), 1);
    q.remove(A, 3);
    q.remove(B, 10);
    assert_eq!((q.longest_len(), q.users_queued()), (0, 0));
    assert_eq!(q.longest_user(), None);
}

/// A message from `sender`, or a receipt-like item when `sender` is empty.
fn from(sender: &str, id: u64) -> Item {
    let Some(sender) = Phone::parse(sender) else {
        return Item::frame_only(id, server_frame::Kind::Pong(proto::v1::Pong { nonce: id }));
    };
    Item::message(MessageParts {
        id,
        sender,
        sender_device: 0,
        client_msg_id: id,
        group_id: 0,
        sent_at_ms: 1,
        body: vec![b'x'; 64],
        media: None,
    })
}

#[test]
fn an_item_is_small_and_gives_back_the_frame_it_was_made_of() {
    assert_eq!(std::mem::size_of::<Item>(), 56);
    for (media, group) in [(None, 0), (None, 7), (Some(Box::default()), 7)] {
        let mut m = from("+15550000002", 300);
        if media.is_some() || group != 0 {
            m = Item::message(MessageParts {
                id: 300,
                sender: Phone::parse("+15550000002").unwrap(),
                sender_device: 0,
                client_msg_id: 300,
                group_id: group,
                sent_at_ms: 1,
                body: vec![b'x'; 200],
                media: media.clone(),
            });
        }
        let frame = m.frame();
        let server_frame::Kind::Message(msg) = &frame else {
            panic!("{frame:?}")
        };
        assert_eq!(
            (msg.from.as_str(), msg.server_msg_id),
            ("+15550000002", 300)
        );
        assert_eq!((&msg.media, msg.group_id), (&media, group));
        assert_eq!(m.group_id(), group);
        let encoded = m.encoded_frame();
        // Written field by field, the same bytes prost writes for the frame.
        assert_eq!(encoded, encode(frame.clone()).into_vec());
        assert_eq!(
            m.wire_bytes(),
            proto::limits::FRAME_HEADER_BYTES + encoded.len()
        );
        let rec = crate::durable::record::ItemRec {
            user: Phone::parse("+15550000001"),
            id: 300,
            frame: encoded,
            sender: Phone::parse("+15550000002"),
            client_msg_id: 300,
            group_id: msg.group_id,
            sender_device: 0,
        };
        let back = Item::from_record(&rec).expect("decodes");
        assert_eq!(back.frame(), frame);
        assert!(back.durable && back.answered);
    }
}

#[test]
fn one_sender_gets_its_share_and_receipts_keep_their_room() {
    const MALLORY: &str = "+15550000666";
    let mut q = Queues::default();
    let per = QUEUE_MESSAGES_PER_SENDER_MAX as u64;
    for id in 0..per {
        q.push(U, from(MALLORY, id)).unwrap();
    }
    assert_eq!(q.push(U, from(MALLORY, per)), Err(QueueFull::SenderShare));
    q.push(U, from("+15550000777", per + 1))
        .expect("another sender still gets through");
    // Enough senders fill the message share, never the receipts' room.
    let mut id = per + 2;
    'fill: for s in 0.. {
        for _ in 0..per {
            if q.len_of(U) >= QUEUE_MESSAGES_PER_USER_MAX {
                break 'fill;
            }
            q.push(U, from(&format!("+1555100{s:04}"), id)).unwrap();
            id += 1;
        }
    }
    assert_eq!(q.push(U, from("+15550000888", id)), Err(QueueFull::Queue));
    q.push(U, from("", id + 1)).expect("a receipt still fits");
    assert_eq!(q.remove(U, 0).map(|i| i.id), Some(0));
    q.push(U, from(MALLORY, id + 2))
        .expect("an ack frees one of the sender's share");
}

#[test]
fn the_per_sender_count_exists_only_for_long_queues_and_stays_right() {
    const M: &str = "+15550000666";
    let per = QUEUE_MESSAGES_PER_SENDER_MAX as u64;
    let mut q = Queues::default();
    q.push(U, from("+15550000777", 0)).unwrap();
    for id in 1..per {
        q.push(U, from(M, id)).unwrap();
    }
    assert!(
        q.get_mut(U).unwrap().by_sender.is_some(),
        "built at the share"
    );
    assert_eq!(
        q.push(U, from(M, per)),
        Ok(()),
        "M holds one less than its share"
    );
    assert_eq!(q.push(U, from(M, per + 1)), Err(QueueFull::SenderShare));
    for id in 1..=per * 3 / 4 {
        q.remove(U, id);
    }
    assert!(q.get_mut(U).unwrap().by_sender.is_none(), "dropped at half");
    for id in per + 2..per * 2 {
        if q.push(U, from(M, id)).is_err() {
            assert_eq!(
                q.len_of(U),
                1 + per as usize,
                "rebuilt with the right count"
            );
            return;
        }
    }
    panic!("the share was never reached again");
}

#[test]
fn window_and_capacity_are_bounded() {
    let mut q = Queues::default();
    for id in 0..QUEUE_ITEMS_PER_USER_MAX as u64 {
        q.push(U, from("", id)).unwrap();
        q.mark_durable(U, id);
    }
    assert_eq!(q.push(U, from("", u64::MAX)), Err(QueueFull::Queue));
    assert_eq!(sendable(&mut q, U).len(), DELIVERY_WINDOW_ITEMS);
    q.remove(U, 0);
    assert_eq!(sendable(&mut q, U).len(), 1, "an ack opens one slot");
}

#[test]
fn an_emptied_queues_buffer_serves_the_next_queue_and_the_spares_are_bounded() {
    let mut q = Queues::default();
    q.push(U, item(1)).unwrap();
    let buffer = |q: &Queues, user: &str| {
        let u = Phone::parse(user).unwrap();
        q.by_user.get(&u).map(|q| q.items.as_slices().0.as_ptr())
    };
    let first = buffer(&q, U).unwrap();
    assert!(q.remove(U, 1).is_some());
    assert_eq!(q.spare_buffers(), 1, "the emptied queue's buffer is kept");
    q.push(A, item(2)).unwrap();
    assert_eq!(q.spare_buffers(), 0);
    // The same allocation (a deque's front moves within it as items leave).
    let room = first..first.wrapping_add(SPARE_QUEUE_ITEMS_MAX);
    assert!(
        buffer(&q, A).is_some_and(|p| room.contains(&p)),
        "and the next queue made takes it"
    );
    // A buffer grown past SPARE_QUEUE_ITEMS_MAX is freed, not kept.
    for id in 10..10 + SPARE_QUEUE_ITEMS_MAX as u64 + 1 {
        q.push(B, item(id)).unwrap();
    }
    for id in 10..10 + SPARE_QUEUE_ITEMS_MAX as u64 + 1 {
        q.remove(B, id).unwrap();
    }
    assert_eq!(q.spare_buffers(), 0);
    // At most SPARE_QUEUE_BUFFERS_MAX are kept.
    let users: Vec<String> = (0..SPARE_QUEUE_BUFFERS_MAX + 8)
        .map(|n| format!("+1555100{n:04}"))
        .collect();
    for (n, u) in users.iter().enumerate() {
        q.push(u, item(100 + n as u64)).unwrap();
    }
    for (n, u) in users.iter().enumerate() {
        q.remove(u, 100 + n as u64).unwrap();
    }
    assert_eq!(q.spare_buffers(), SPARE_QUEUE_BUFFERS_MAX);
}

#[test]
fn a_delivered_frames_buffer_serves_the_next_delivery_and_the_spares_are_bounded() {
    let mut q = Queues::default();
    q.push(U, item(1)).unwrap();
    q.push(U, item(2)).unwrap();
    let mut sent = Vec::new();
    q.take_sendable(U, |w| sent.push(w.bytes));
    let [first, second] = <[Vec<u8>; 2]>::try_from(sent).unwrap();
    assert_eq!(
        first,
        q.by_user.values().next().unwrap().items[0].encoded_frame()
    );
    let kept = first.as_ptr();
    q.wire_done(first);
    assert_eq!(q.spare_wire_buffers(), 1);
    q.push(U, item(3)).unwrap();
    q.remove(U, 1).unwrap();
    let mut again = Vec::new();
    q.take_sendable(U, |w| again.push(w.bytes));
    assert_eq!(again.len(), 1);
    assert_eq!(
        again[0].as_ptr(),
        kept,
        "the kept buffer carries the next frame"
    );
    assert_eq!(
        again[0],
        q.by_user.values().next().unwrap().items[1].encoded_frame()
    );
    // Bounded: a large buffer is freed, and at most SPARE_WIRE_BUFFERS_MAX are kept.
    q.wire_done(Vec::with_capacity(SPARE_WIRE_BYTES_MAX + 1));
    assert_eq!(q.spare_wire_buffers(), 0);
    for _ in 0..SPARE_WIRE_BUFFERS_MAX + 3 {
        q.wire_done(second.clone());
    }
    assert_eq!(q.spare_wire_buffers(), SPARE_WIRE_BUFFERS_MAX);
}
