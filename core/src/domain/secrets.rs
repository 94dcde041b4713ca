//! Secret strings that never print, and the randomness to make them.

use std::fmt;

/// A secret value: `Debug` and `Display` print a redaction, so it cannot reach a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// 32 random bytes, hex: for generated local secrets.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        fill_random(&mut bytes);
        Self(hex::encode(bytes))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

pub fn fill_random(buf: &mut [u8]) {
    // The OS generator failing leaves nothing safe to do: no secret may be made without it.
    getrandom::fill(buf).expect("the operating system's random generator failed");
}
