//! Who is signed in, and what they may ask for: a session cookie signed with a key of the CRM's
//! own, a CSRF token bound to the session, and short-lived signed links to recordings' audio.
//!
//! Sessions are not stored: the cookie carries the user, its expiry and a fingerprint of the
//! user's password hash and session epoch, under an HMAC. Removing a user, changing their
//! password or signing out (which raises the epoch) ends their sessions, because every request
//! reads the user back and compares the fingerprint.

use callkeeper_core::secrets::{fill_random, Secret};
use callkeeper_core::time::Millis;
use callkeeper_core::users::{User, UserName};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::Duration;

type HmacSha256 = Hmac<Sha256>;

/// The session cookie's name.
pub const COOKIE: &str = "ck_session";
/// The sign-in form's cookie: a nonce its CSRF token is bound to, before there is a session.
pub const SIGN_IN_COOKIE: &str = "ck_signin";
/// How long a session lasts: a working day.
pub const LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// How long a recording's link works: long enough to listen, short enough not to share.
pub const LINK_LIFETIME: Duration = Duration::from_secs(5 * 60);

/// The CRM's signing key.
#[derive(Clone)]
pub struct Keys {
    key: [u8; 32],
}

/// A signed-in user, as a request carries them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user: UserName,
    pub expires_at: Millis,
    /// Random per sign-in; the CSRF token is derived from it.
    nonce: String,
    /// Binds the session to the password and the session epoch it was opened with.
    password: String,
}

impl Keys {
    /// Derived from the stream token secret under a label of its own: the CRM needs no secret
    /// more, and nothing signed for one purpose passes for the other. Rotating that secret ends
    /// every session.
    pub fn derive(secret: &Secret) -> Keys {
        Keys { key: hmac(secret.expose().as_bytes(), &[b"callkeeper crm keys v1"]) }
    }

    fn sign(&self, parts: &[&[u8]]) -> [u8; 32] {
        hmac(&self.key, parts)
    }

    fn verify(&self, parts: &[&[u8]], tag_hex: &str) -> bool {
        let Ok(tag) = hex::decode(tag_hex) else { return false };
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        feed(&mut mac, parts);
        mac.verify_slice(&tag).is_ok()
    }

    /// A new session for `user`, from `now`.
    pub fn open(&self, user: &User, now: Millis) -> Session {
        Session {
            user: user.name.clone(),
            expires_at: now + LIFETIME.as_millis() as Millis,
            nonce: random_hex(16),
            password: self.fingerprint(user),
        }
    }

    fn fingerprint(&self, user: &User) -> String {
        hex::encode(&self.sign(&[b"password", user.password_hash.as_bytes(), &user.session_epoch.to_be_bytes()])[..8])
    }

    /// The cookie's value: `user|expires|nonce|password|tag`.
    pub fn cookie_value(&self, s: &Session) -> String {
        let expires = s.expires_at.to_string();
        let tag = self.sign(&[b"session", s.user.as_str().as_bytes(), expires.as_bytes(), s.nonce.as_bytes(), s.password.as_bytes()]);
        format!("{}|{expires}|{}|{}|{}", s.user.as_str(), s.nonce, s.password, hex::encode(tag))
    }

    /// The session a cookie's value holds, if its tag is ours and it has not expired.
    pub fn read(&self, value: &str, now: Millis) -> Option<Session> {
        let mut parts = value.split('|');
        let (user, expires, nonce, password, tag) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        if !self.verify(&[b"session", user.as_bytes(), expires.as_bytes(), nonce.as_bytes(), password.as_bytes()], tag) {
            return None;
        }
        let expires_at: Millis = expires.parse().ok()?;
        if expires_at <= now {
            return None;
        }
        Some(Session { user: UserName::parse(user).ok()?, expires_at, nonce: nonce.into(), password: password.into() })
    }

    /// Whether the session was opened with the user's current password, since they last
    /// signed out.
    pub fn still_valid(&self, s: &Session, user: &User) -> bool {
        let now = self.fingerprint(user);
        subtle_eq(now.as_bytes(), s.password.as_bytes())
    }

    /// The token every form of this session carries.
    pub fn csrf_token(&self, s: &Session) -> String {
        hex::encode(&self.sign(&[b"csrf", s.nonce.as_bytes()])[..16])
    }

    pub fn csrf_ok(&self, s: &Session, token: &str) -> bool {
        subtle_eq(self.csrf_token(s).as_bytes(), token.as_bytes())
    }

    /// The sign-in form's token, for the nonce in its cookie.
    pub fn sign_in_token(&self, nonce: &str) -> String {
        hex::encode(&self.sign(&[b"sign-in", nonce.as_bytes()])[..16])
    }

    pub fn sign_in_ok(&self, nonce: &str, token: &str) -> bool {
        !nonce.is_empty() && subtle_eq(self.sign_in_token(nonce).as_bytes(), token.as_bytes())
    }

    /// A signed link to a blob (a recording's audio) on the embedded store, valid until
    /// `expires_at`: what S3's presigned URL is in AWS.
    pub fn blob_link(&self, blob_key: &str, expires_at: Millis) -> String {
        let expires = expires_at.to_string();
        let tag = self.sign(&[b"blob", blob_key.as_bytes(), expires.as_bytes()]);
        let key: String = form_urlencoded::byte_serialize(blob_key.as_bytes()).collect();
        format!("{}?key={key}&expires={expires}&sig={}", super::BLOB_PATH, hex::encode(tag))
    }

    pub fn blob_link_ok(&self, blob_key: &str, expires_at: Millis, sig: &str, now: Millis) -> bool {
        expires_at > now && self.verify(&[b"blob", blob_key.as_bytes(), expires_at.to_string().as_bytes()], sig)
    }
}

pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    fill_random(&mut buf);
    hex::encode(buf)
}

/// HMAC-SHA256 over the parts, each prefixed by its length, so no two lists of parts sign alike.
fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    feed(&mut mac, parts);
    mac.finalize().into_bytes().into()
}

fn feed(mac: &mut HmacSha256, parts: &[&[u8]]) {
    for part in parts {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part);
    }
}

fn subtle_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(hash: &str) -> User {
        User { name: UserName::parse("dana").unwrap(), password_hash: hash.into(), created_at: 0, updated_at: 0, session_epoch: 0 }
    }

    #[test]
    fn a_session_reads_back_until_it_expires_and_only_untouched() {
        let keys = Keys::derive(&Secret::new("s"));
        let session = keys.open(&user("h1"), 1_000);
        let value = keys.cookie_value(&session);
        assert_eq!(keys.read(&value, 2_000), Some(session.clone()));
        assert_eq!(keys.read(&value, session.expires_at), None, "expired");
        assert_eq!(keys.read(&value.replacen("dana", "root", 1), 2_000), None, "another user");
        let later = value.replacen(&session.expires_at.to_string(), &(session.expires_at + 1).to_string(), 1);
        assert_eq!(keys.read(&later, 2_000), None, "a longer life");
        assert_eq!(Keys::derive(&Secret::new("other")).read(&value, 2_000), None, "another key");
        assert!(keys.still_valid(&session, &user("h1")));
        assert!(!keys.still_valid(&session, &user("h2")), "the password changed");
        assert!(!keys.still_valid(&session, &User { session_epoch: 1, ..user("h1") }), "signed out since");
    }

    #[test]
    fn csrf_tokens_and_recording_links_are_bound_to_what_they_sign() {
        let keys = Keys::derive(&Secret::new("s"));
        let a = keys.open(&user("h"), 0);
        let b = keys.open(&user("h"), 0);
        assert!(keys.csrf_ok(&a, &keys.csrf_token(&a)));
        assert!(!keys.csrf_ok(&b, &keys.csrf_token(&a)), "another session's token");
        assert!(!keys.csrf_ok(&a, ""));
        let link = keys.blob_link("recordings/a/RE1.wav", 10_000);
        assert!(link.starts_with("/crm/blob?key=recordings%2Fa%2FRE1.wav&expires=10000&sig="), "{link}");
        let sig = link.rsplit("sig=").next().unwrap();
        assert!(keys.blob_link_ok("recordings/a/RE1.wav", 10_000, sig, 9_000));
        assert!(!keys.blob_link_ok("recordings/a/RE1.wav", 10_000, sig, 10_000), "expired");
        assert!(!keys.blob_link_ok("recordings/a/RE2.wav", 10_000, sig, 9_000), "another recording");
        assert!(!keys.blob_link_ok("recordings/a/RE1.wav", 20_000, sig, 9_000), "a longer life");
    }
}
