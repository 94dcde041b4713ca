//! The people who may read the CRM: a name and a password hash, kept in the store. Passwords are
//! hashed with Argon2id (memory-hard) at OWASP's parameters and kept as a PHC string, so the
//! parameters travel with each hash and can be raised later without breaking old ones.

use crate::domain::time::Millis;
use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use serde::{Deserialize, Serialize};

/// Shorter passwords are refused: the CRM holds every caller's recording.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// OWASP's Argon2id minimum: 19 MiB, 2 passes, one lane.
const MEMORY_KIB: u32 = 19 * 1024;
const PASSES: u32 = 2;

/// A user's name: 1 to 64 of lowercase letters, digits, `.`, `_`, `-` and `@` (an email fits).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a user name is 1 to 64 of a-z, 0-9, '.', '_', '-' and '@', got {0:?}")]
pub struct BadUserName(pub String);

impl UserName {
    pub fn parse(value: &str) -> Result<UserName, BadUserName> {
        let ok =
            (1..=64).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b".-_@".contains(&b));
        if ok {
            Ok(UserName(value.to_string()))
        } else {
            Err(BadUserName(value.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for UserName {
    type Error = BadUserName;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        UserName::parse(&value)
    }
}

impl From<UserName> for String {
    fn from(name: UserName) -> String {
        name.0
    }
}

impl std::fmt::Display for UserName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub name: UserName,
    /// Argon2id, as a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`). Never shown.
    #[serde(skip_serializing)]
    pub password_hash: String,
    pub created_at: Millis,
    pub updated_at: Millis,
    /// Raised by signing out (and `crm user sign-out`): every session opened before is over,
    /// as each carries the epoch it was opened in.
    #[serde(default)]
    pub session_epoch: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("a password has at least {MIN_PASSWORD_CHARS} characters")]
    TooShort,
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

fn argon2() -> Argon2<'static> {
    let params = Params::new(MEMORY_KIB, PASSES, 1, None).expect("valid Argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// The password's hash, with a fresh random salt.
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(PasswordError::TooShort);
    }
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| PasswordError::Hash(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| PasswordError::Hash(e.to_string()))?;
    let hash = argon2().hash_password(password.as_bytes(), &salt).map_err(|e| PasswordError::Hash(e.to_string()))?;
    Ok(hash.to_string())
}

/// Whether `password` is the one `hash` was made from (in constant time; with the parameters
/// the hash carries). Takes the hash's memory (19 MiB at ours) for the time of the check only:
/// see [`argon2_memory`].
pub fn verify_password(hash: &str, password: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else { return false };
    let (Some(expected), Ok(params)) = (parsed.hash, Params::try_from(&parsed)) else { return false };
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm) else { return false };
    let Ok(version) = parsed.version.map_or(Ok(Version::default()), Version::try_from) else { return false };
    let Some(salt) = parsed.salt else { return false };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else { return false };
    let mut out = vec![0u8; expected.len()];
    let mut memory = argon2_memory(params.block_count());
    let argon2 = Argon2::new(algorithm, version, params);
    if argon2.hash_password_into_with_memory(password.as_bytes(), salt, &mut out, &mut memory[..]).is_err() {
        return false;
    }
    use subtle::ConstantTimeEq;
    out.ct_eq(expected.as_bytes()).into()
}

/// Argon2's working memory, `blocks` of 1 KiB, in an allocation the allocator maps on its own
/// and unmaps when it is dropped, so the process gives it back after every check. glibc would
/// otherwise keep it: after the first 19 MiB block it has mapped and freed, it raises its
/// threshold for mapping to that size, and every later one comes from (and stays in) its heaps.
/// The threshold never rises above 32 MiB on 64-bit, so the allocation reserves a little more;
/// only the pages Argon2 writes are ever resident.
fn argon2_memory(blocks: usize) -> Vec<Block> {
    const MAPPED: usize = (33 << 20) / std::mem::size_of::<Block>();
    let mut memory = Vec::with_capacity(blocks.max(MAPPED));
    memory.resize(blocks, Block::default());
    memory
}

/// A hash no password matches (its output is all zeros), at our parameters: an unknown name
/// is checked against it, so it costs what a known one does.
pub const NO_ONES_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2lnbi1pbiBkdW1teSBzYWx0$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_hashes_to_argon2id_and_verifies_only_itself() {
        let hash = hash_password("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        assert!(verify_password(&hash, "correct horse battery"));
        assert!(!verify_password(&hash, "correct horse battery!"));
        assert_ne!(hash, hash_password("correct horse battery").unwrap(), "a fresh salt each time");
        assert_eq!(hash_password("short"), Err(PasswordError::TooShort));
        assert!(!verify_password("not a hash", "anything at all"));
        assert!(!verify_password(NO_ONES_HASH, "correct horse battery"));
        assert!(PasswordHash::new(NO_ONES_HASH).is_ok(), "the dummy hash is one the check runs in full");
    }

    #[test]
    fn user_names_are_checked() {
        assert!(UserName::parse("dana@example.com").is_ok());
        assert!(UserName::parse("dana.levi_2").is_ok());
        for bad in ["", "Dana", "dana levi", "דנה", &"a".repeat(65)] {
            assert!(UserName::parse(bad).is_err(), "{bad:?}");
        }
    }
}
