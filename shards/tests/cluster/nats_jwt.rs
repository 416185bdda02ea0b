//! NATS's decentralised auth for a test: an operator, an account with JetStream and a user,
//! as JWTs signed with NKeys (what `nsc` makes), the operator-mode server lines that trust
//! them, and the user's credentials file (`SWITCHBOARD_NATS_CREDS`).

use data_encoding::{BASE32_NOPAD, BASE64URL_NOPAD};
use nkeys::KeyPair;
use serde_json::{json, Value};

/// A signed JWT of `claims` (`jti`, `iat`, `iss`, `sub` and `name` filled in here).
fn jwt(issuer: &KeyPair, subject: &str, name: &str, mut claims: Value) -> String {
    let header = json!({"typ": "JWT", "alg": "ed25519-nkey"});
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    claims["iat"] = json!(now);
    claims["iss"] = json!(issuer.public_key());
    claims["sub"] = json!(subject);
    claims["name"] = json!(name);
    claims["jti"] = json!("");
    let digest = ring::digest::digest(&ring::digest::SHA256, claims.to_string().as_bytes());
    claims["jti"] = json!(BASE32_NOPAD.encode(digest.as_ref()));
    let signed = format!(
        "{}.{}",
        BASE64URL_NOPAD.encode(header.to_string().as_bytes()),
        BASE64URL_NOPAD.encode(claims.to_string().as_bytes())
    );
    let sig = issuer.sign(signed.as_bytes()).unwrap();
    format!("{signed}.{}", BASE64URL_NOPAD.encode(&sig))
}

/// An operator trusting one account (JetStream on, no limits) and a user of it, and the
/// system account the server needs for JetStream.
pub struct Trust {
    /// The server config lines: `operator`, `resolver`, `resolver_preload`.
    pub server_block: String,
    /// The user's credentials file's text.
    pub creds: String,
}

pub fn operator_account_user() -> Trust {
    let operator = KeyPair::new_operator();
    let account = KeyPair::new_account();
    let user = KeyPair::new_user();
    // JetStream needs the server's system account.
    let system = KeyPair::new_account();
    let sys_jwt = jwt(
        &operator,
        &system.public_key(),
        "SYS",
        json!({"nats": {"limits": {"subs": -1, "data": -1, "payload": -1, "imports": -1,
                                   "exports": -1, "wildcards": true, "conn": -1, "leaf": -1},
                        "type": "account", "version": 2}}),
    );
    let op_jwt = jwt(
        &operator,
        &operator.public_key(),
        "test-operator",
        json!({"nats": {"type": "operator", "version": 2}}),
    );
    let unlimited = json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1,
        "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1
    });
    let acc_jwt = jwt(
        &operator,
        &account.public_key(),
        "boxes",
        json!({"nats": {"limits": unlimited, "type": "account", "version": 2}}),
    );
    let user_jwt = jwt(
        &account,
        &user.public_key(),
        "box",
        json!({"nats": {"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
                        "type": "user", "version": 2}}),
    );
    let server_block = format!(
        "operator: \"{op_jwt}\"\nsystem_account: {sys}\nresolver: MEMORY\n\
         resolver_preload: {{\n  {acc}: \"{acc_jwt}\"\n  {sys}: \"{sys_jwt}\"\n}}\n",
        acc = account.public_key(),
        sys = system.public_key(),
    );
    let creds = format!(
        "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\n\
         -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
        user.seed().unwrap()
    );
    Trust {
        server_block,
        creds,
    }
}
