//! Media tokens: HMAC-SHA256 over (purpose, user, SHA-256, size, expiry).
//!
//! A token is 89 bytes written as 178 lowercase hex digits: purpose (1), user (8, the
//! phone's digits as a number), the object's SHA-256 (32), its size (8), the expiry in wall
//! milliseconds (8), then the MAC (32) over those 57 bytes. Upload tokens name the uploader;
//! download tokens name the one recipient they were signed for, so a URL handed on to
//! someone else still only says "this recipient may fetch": the service logs and counts by
//! it. Whoever holds the key can sign: the shards (slots, and each recipient's token at
//! delivery) and the media service (verification only).
//!
//! Refused, without a panic on any input: a wrong length or non-hex text, a MAC that does
//! not match (compared in constant time by `ring::hmac::verify`), an unknown purpose.
//! Expiry and "for this object" are the caller's checks ([`Token::check`]).

use ring::hmac;

/// Bytes of a signing key (a random 256-bit HMAC key).
pub const MEDIA_KEY_BYTES: usize = 32;
/// Bytes of a token before hex.
pub const TOKEN_BYTES: usize = 1 + 8 + 32 + 8 + 8 + 32;
const SIGNED_BYTES: usize = TOKEN_BYTES - 32;

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// PUT the object once.
    Upload = 1,
    /// GET the object (and ranges of it).
    Download = 2,
}

/// What a token says, once its MAC checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// Upload or download.
    pub purpose: Purpose,
    /// The uploader, or the recipient (phone digits as a number).
    pub user: u64,
    /// The object's SHA-256.
    pub sha256: [u8; 32],
    /// The object's size in bytes.
    pub size: u64,
    /// Wall-clock expiry (ms).
    pub expires_at_ms: u64,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not 178 hex digits, or an unknown purpose.
    #[error("malformed media token")]
    Malformed,
    /// The MAC does not match (forged, altered, or another server's key).
    #[error("media token signature does not match")]
    BadSignature,
    /// Past its expiry.
    #[error("media token expired")]
    Expired,
    /// Valid, but for another purpose or another object.
    #[error("media token is for another object or purpose")]
    WrongObject,
}

/// The key tokens are signed with (its bytes are never printed).
#[derive(Clone)]
pub struct MediaKey(hmac::Key);

impl std::fmt::Debug for MediaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MediaKey(..)")
    }
}

impl MediaKey {
    /// A key from its bytes.
    pub fn new(bytes: &[u8; MEDIA_KEY_BYTES]) -> MediaKey {
        MediaKey(hmac::Key::new(hmac::HMAC_SHA256, bytes))
    }

    /// The token for `t`, as hex.
    pub fn sign(&self, t: &Token) -> String {
        let mut raw = [0u8; TOKEN_BYTES];
        raw[0] = t.purpose as u8;
        raw[1..9].copy_from_slice(&t.user.to_be_bytes());
        raw[9..41].copy_from_slice(&t.sha256);
        raw[41..49].copy_from_slice(&t.size.to_be_bytes());
        raw[49..57].copy_from_slice(&t.expires_at_ms.to_be_bytes());
        let tag = hmac::sign(&self.0, &raw[..SIGNED_BYTES]);
        raw[SIGNED_BYTES..].copy_from_slice(tag.as_ref());
        hex(&raw)
    }

    /// What `text` says, if this key signed it.
    pub fn open(&self, text: &str) -> Result<Token, TokenError> {
        let mut raw = [0u8; TOKEN_BYTES];
        unhex(text, &mut raw).ok_or(TokenError::Malformed)?;
        hmac::verify(&self.0, &raw[..SIGNED_BYTES], &raw[SIGNED_BYTES..])
            .map_err(|_| TokenError::BadSignature)?;
        let purpose = match raw[0] {
            1 => Purpose::Upload,
            2 => Purpose::Download,
            _ => return Err(TokenError::Malformed),
        };
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&raw[i..i + 8]);
            u64::from_be_bytes(b)
        };
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(&raw[9..41]);
        Ok(Token {
            purpose,
            user: u64_at(1),
            sha256,
            size: u64_at(41),
            expires_at_ms: u64_at(49),
        })
    }
}

impl Token {
    /// Whether this token allows `purpose` on the object `sha256` at `now_ms`.
    pub fn check(
        &self,
        purpose: Purpose,
        sha256: &[u8; 32],
        now_ms: u64,
    ) -> Result<(), TokenError> {
        if self.purpose != purpose || &self.sha256 != sha256 {
            return Err(TokenError::WrongObject);
        }
        if now_ms >= self.expires_at_ms {
            return Err(TokenError::Expired);
        }
        Ok(())
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// Fills `out` from exactly `2 * out.len()` hex digits; `None` on anything else.
pub fn unhex(text: &str, out: &mut [u8]) -> Option<()> {
    let t = text.as_bytes();
    if t.len() != out.len() * 2 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    for (o, pair) in out.iter_mut().zip(t.chunks_exact(2)) {
        *o = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> Token {
        Token {
            purpose: Purpose::Upload,
            user: 15551234567,
            sha256: [9; 32],
            size: 200_000,
            expires_at_ms: 1_000,
        }
    }

    #[test]
    fn a_signed_token_opens_to_what_was_signed() {
        let key = MediaKey::new(&[1; 32]);
        let text = key.sign(&token());
        assert_eq!(text.len(), TOKEN_BYTES * 2);
        let t = key.open(&text).unwrap();
        assert_eq!(t, token());
        assert_eq!(t.check(Purpose::Upload, &[9; 32], 999), Ok(()));
        assert_eq!(
            t.check(Purpose::Upload, &[9; 32], 1_000),
            Err(TokenError::Expired)
        );
        assert_eq!(
            t.check(Purpose::Download, &[9; 32], 0),
            Err(TokenError::WrongObject)
        );
        assert_eq!(
            t.check(Purpose::Upload, &[8; 32], 0),
            Err(TokenError::WrongObject)
        );
    }

    #[test]
    fn altered_forged_or_malformed_tokens_are_refused() {
        let key = MediaKey::new(&[1; 32]);
        let text = key.sign(&token());
        let other = MediaKey::new(&[2; 32]);
        assert_eq!(other.open(&text), Err(TokenError::BadSignature));
        // A larger size or a later expiry: the MAC no longer matches.
        let mut bigger = token();
        bigger.size += 1;
        let forged = format!("{}{}", &other.sign(&bigger)[..114], &text[114..]);
        assert_eq!(key.open(&forged), Err(TokenError::BadSignature));
        for bad in [
            "",
            "zz",
            &text[1..],
            &format!("{text}0"),
            &text.replace('a', "g"),
        ] {
            assert!(key.open(bad).is_err(), "{bad:?}");
        }
        let mut raw = [0u8; TOKEN_BYTES];
        unhex(&text, &mut raw).unwrap();
        assert_eq!(hex(&raw), text);
    }
}
