//! Who is logged in on this shard, on which connection. One active session per user: a new
//! login replaces the old one. Users are held as phone integers (8 bytes, no heap). Pure
//! state.

use crate::state::home::AsPhone;
use crate::state::home::Phone;
use crate::tables::id_hash::IdHash;
use crate::tables::steady_map::SteadyMap;

use proto::ids::ConnId;

/// Sessions of users homed here.
#[derive(Debug, Default)]
pub struct Sessions {
    /// Keyed by phones (chosen outside): SipHash.
    by_user: SteadyMap<Phone, ConnId>,
    /// Keyed by connection ids (ours, looked up once per frame): the id hasher.
    by_conn: SteadyMap<ConnId, Phone, IdHash>,
}

impl Sessions {
    /// Logs `user` in on `conn`; returns the connection of the session it replaces.
    /// Logs `user` in on `conn`; returns the connection of the session it replaces.
    pub fn login(&mut self, user: impl AsPhone, conn: ConnId) -> Option<ConnId> {
        // Logins name phones that passed validation: E.164.
        let user = user.as_phone()?;
        let old = self.by_user.insert(user, conn);
        if let Some(old) = old {
            self.by_conn.remove(&old);
        }
        self.by_conn.insert(conn, user);
        old.filter(|o| *o != conn)
    }

    /// The user logged in on `conn`.
    pub fn user_of(&self, conn: ConnId) -> Option<Phone> {
        self.by_conn.get(&conn).copied()
    }

    /// The connection of `user`'s session.
    pub fn conn_of(&self, user: impl AsPhone) -> Option<ConnId> {
        self.by_user.get(&user.as_phone()?).copied()
    }

    /// `conn` closed: returns the user whose session it was (not one it was replaced by).
    pub fn closed(&mut self, conn: ConnId) -> Option<String> {
        let user = self.by_conn.remove(&conn)?;
        if self.by_user.get(&user) == Some(&conn) {
            self.by_user.remove(&user);
        }
        Some(user.to_string())
    }

    /// Users online here.
    pub fn len(&self) -> usize {
        self.by_user.len()
    }

    /// Whether nobody is online here.
    pub fn is_empty(&self) -> bool {
        self.by_user.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_session_per_user_and_late_close_of_the_old_one_is_harmless() {
        let mut s = Sessions::default();
        let a = ConnId::from_u64(1);
        let b = ConnId::from_u64(2);
        const U: &str = "+15550000001";
        assert_eq!(s.login(U, a), None);
        assert_eq!(s.login(U, b), Some(a));
        assert_eq!(
            s.closed(a),
            None,
            "the replaced connection no longer owns the session"
        );
        assert_eq!(s.conn_of(U), Some(b));
        assert_eq!(s.closed(b), Some(U.to_string()));
        assert!(s.is_empty());
    }
}
