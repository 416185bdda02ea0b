//! Who is logged in on this shard, on which connection. One active session per user: a new
//! login replaces the old one. Pure state.

use crate::steady_map::SteadyMap;

use engine::ConnId;

/// Sessions of users homed here.
#[derive(Debug, Default)]
pub struct Sessions {
    by_user: SteadyMap<String, ConnId>,
    by_conn: SteadyMap<ConnId, String>,
}

impl Sessions {
    /// Logs `user` in on `conn`; returns the connection of the session it replaces.
    pub fn login(&mut self, user: &str, conn: ConnId) -> Option<ConnId> {
        let old = self.by_user.insert(user.to_string(), conn);
        if let Some(old) = old {
            self.by_conn.remove(&old);
        }
        self.by_conn.insert(conn, user.to_string());
        old.filter(|o| *o != conn)
    }

    /// The user logged in on `conn`.
    pub fn user_of(&self, conn: ConnId) -> Option<&String> {
        self.by_conn.get(&conn)
    }

    /// The connection of `user`'s session.
    pub fn conn_of(&self, user: &str) -> Option<ConnId> {
        self.by_user.get(user).copied()
    }

    /// `conn` closed: returns the user whose session it was (not one it was replaced by).
    pub fn closed(&mut self, conn: ConnId) -> Option<String> {
        let user = self.by_conn.remove(&conn)?;
        if self.by_user.get(&user) == Some(&conn) {
            self.by_user.remove(&user);
        }
        Some(user)
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
        assert_eq!(s.login("u", a), None);
        assert_eq!(s.login("u", b), Some(a));
        assert_eq!(
            s.closed(a),
            None,
            "the replaced connection no longer owns the session"
        );
        assert_eq!(s.conn_of("u"), Some(b));
        assert_eq!(s.closed(b), Some("u".to_string()));
        assert!(s.is_empty());
    }
}
