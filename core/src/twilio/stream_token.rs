//! The token that ties a media stream to its call and its generation.
//!
//! `incoming_call` puts `token = HMAC-SHA256(secret, call_sid)` in the `<Stream>`'s parameters;
//! a later generation of the call's stream (the conversation continued on a new stream) signs
//! `call_sid:generation`. The relay, which shares the secret, checks it on `start`. A stream for a
//! call we never answered, with a forged call_sid, or claiming another generation than the one it
//! was issued for, is refused even if it reached the relay.

use crate::domain::ids::CallSid;
use crate::domain::secrets::Secret;
use base64::Engine;
use hmac::{Hmac, Mac};
use subtle::ConstantTimeEq;

const CONTEXT: &[u8] = b"callkeeper-stream-v1:";

pub fn issue(secret: &Secret, call_sid: &CallSid, generation: u32) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.expose().as_bytes()).expect("HMAC takes a key of any length");
    mac.update(CONTEXT);
    mac.update(call_sid.as_str().as_bytes());
    // The first generation signs the call alone: the tokens of calls answered before
    // generations existed still verify.
    if generation > 0 {
        mac.update(format!(":{generation}").as_bytes());
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

pub fn verify(secret: &Secret, call_sid: &CallSid, generation: u32, token: &str) -> bool {
    issue(secret, call_sid, generation).as_bytes().ct_eq(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_verify_only_for_their_call_and_secret() {
        let secret = Secret::new("s3cret");
        let call = CallSid::parse("CA0123456789abcdef0123456789abcdef").unwrap();
        let other = CallSid::parse("CAffffffffffffffffffffffffffffffff").unwrap();
        let token = issue(&secret, &call, 0);
        assert!(verify(&secret, &call, 0, &token));
        assert!(!verify(&secret, &other, 0, &token));
        assert!(!verify(&Secret::new("other"), &call, 0, &token));
        assert!(!verify(&secret, &call, 0, ""));
        let second = issue(&secret, &call, 1);
        assert!(verify(&secret, &call, 1, &second));
        assert!(!verify(&secret, &call, 0, &second), "a generation's token is its own");
        assert!(!verify(&secret, &call, 1, &token));
    }
}
