//! Conveniences on the two envelopes: `From<Inner>` for every kind, so a frame is built as
//! `ClientFrame::from(Ping { nonce })` or `Ping { nonce }.into()`, and a static name per
//! kind for per-kind counters and logs.

use crate::v1::{self, client_frame, server_frame, ClientFrame, ServerFrame};

/// `impl From<Inner> for Envelope` for each `(Inner, Variant)` pair.
macro_rules! envelope_from {
    ($envelope:ident, $kind:ident { $($inner:ident => $variant:ident),+ $(,)? }) => {
        $(
            impl From<v1::$inner> for $envelope {
                fn from(inner: v1::$inner) -> Self {
                    $envelope { kind: Some($kind::Kind::$variant(inner)) }
                }
            }
        )+
    };
}

envelope_from!(ClientFrame, client_frame {
    Ping => Ping,
    Register => Register,
    Verify => Verify,
    Login => Login,
    SendMessage => Send,
    Ack => Ack,
    Read => Read,
    GroupCreate => GroupCreate,
    GroupAdd => GroupAdd,
    GroupRemove => GroupRemove,
    GroupSend => GroupSend,
    GroupMembersRequest => GroupMembers,
    PresenceSubscribe => PresenceSubscribe,
    LoadTestLogin => LoadTestLogin,
    PresencePrivacy => PresencePrivacy,
    GroupPrivacy => GroupPrivacy,
    MediaSlotRequest => MediaSlot,
});

envelope_from!(ServerFrame, server_frame {
    Pong => Pong,
    Error => Error,
    Busy => Busy,
    PinSent => PinSent,
    Verified => Verified,
    LoggedIn => LoggedIn,
    ServerAck => ServerAck,
    Message => Message,
    Receipt => Receipt,
    GroupCreated => GroupCreated,
    GroupMembers => GroupMembers,
    Presence => Presence,
    GroupUpdated => GroupUpdated,
    Redirect => Redirect,
    MediaSlot => MediaSlot,
});

impl ClientFrame {
    /// The oneof field name of this frame's kind (`"send"`, `"ack"`…), or `"empty"`.
    pub fn kind_name(&self) -> &'static str {
        use client_frame::Kind;
        match &self.kind {
            None => "empty",
            Some(Kind::Ping(_)) => "ping",
            Some(Kind::Register(_)) => "register",
            Some(Kind::Verify(_)) => "verify",
            Some(Kind::Login(_)) => "login",
            Some(Kind::Send(_)) => "send",
            Some(Kind::Ack(_)) => "ack",
            Some(Kind::Read(_)) => "read",
            Some(Kind::GroupCreate(_)) => "group_create",
            Some(Kind::GroupAdd(_)) => "group_add",
            Some(Kind::GroupRemove(_)) => "group_remove",
            Some(Kind::GroupSend(_)) => "group_send",
            Some(Kind::GroupMembers(_)) => "group_members",
            Some(Kind::PresenceSubscribe(_)) => "presence_subscribe",
            Some(Kind::LoadTestLogin(_)) => "load_test_login",
            Some(Kind::PresencePrivacy(_)) => "presence_privacy",
            Some(Kind::GroupPrivacy(_)) => "group_privacy",
            Some(Kind::MediaSlot(_)) => "media_slot",
        }
    }
}

impl ServerFrame {
    /// The oneof field name of this frame's kind (`"message"`, `"receipt"`…), or `"empty"`.
    pub fn kind_name(&self) -> &'static str {
        use server_frame::Kind;
        match &self.kind {
            None => "empty",
            Some(Kind::Pong(_)) => "pong",
            Some(Kind::Error(_)) => "error",
            Some(Kind::Busy(_)) => "busy",
            Some(Kind::PinSent(_)) => "pin_sent",
            Some(Kind::Verified(_)) => "verified",
            Some(Kind::LoggedIn(_)) => "logged_in",
            Some(Kind::ServerAck(_)) => "server_ack",
            Some(Kind::Message(_)) => "message",
            Some(Kind::Receipt(_)) => "receipt",
            Some(Kind::GroupCreated(_)) => "group_created",
            Some(Kind::GroupMembers(_)) => "group_members",
            Some(Kind::Presence(_)) => "presence",
            Some(Kind::GroupUpdated(_)) => "group_updated",
            Some(Kind::Redirect(_)) => "redirect",
            Some(Kind::MediaSlot(_)) => "media_slot",
        }
    }
}

/// Builds an `Error` server frame; `client_msg_id` is 0 when no message is concerned.
pub fn error_frame(code: v1::ErrorCode, detail: &str, client_msg_id: u64) -> ServerFrame {
    v1::Error {
        code: code as i32,
        detail: detail.to_owned(),
        client_msg_id,
        retry_after_ms: 0,
    }
    .into()
}
