//! The service's rules: each file is an `impl ShardState` block for one family of events,
//! taking the event and `now` and writing what to do into an `Out`. Handlers read and change
//! the tables (`tables/`) through the state (`state/`); neither of those depends on a
//! handler. [`dispatch`] is where each event enters and is sent to its handler.

pub mod dispatch;
pub mod group;
pub mod group_consent;
pub mod login;
pub mod media;
pub mod mesh_back;
pub mod presence;
pub mod receipt;
pub mod route;
pub mod upgrade;
