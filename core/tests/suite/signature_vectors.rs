//! Replays request signatures made and judged by twilio-python's `RequestValidator`
//! (`fixtures/gen_signature_vectors.py`): our validator must agree on every one, valid and tampered.

use callkeeper_core::signature::{validate, Algorithm, SignedBody};
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    generator: String,
    vectors: Vec<Vector>,
}

#[derive(Deserialize)]
struct Vector {
    name: String,
    token: String,
    algorithm: String,
    url: String,
    #[serde(default)]
    params: Vec<(String, String)>,
    json_body: Option<String>,
    signature: String,
    valid: bool,
}

#[test]
fn agrees_with_twilio_python_on_every_vector() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/signature_vectors.json")).unwrap();
    let fixture: Fixture = serde_json::from_str(&text).unwrap();
    assert!(fixture.vectors.len() >= 600, "{} has too few vectors", fixture.generator);
    let (mut valid, mut invalid) = (0, 0);
    for (i, v) in fixture.vectors.iter().enumerate() {
        let algorithm = match v.algorithm.as_str() {
            "HMAC_SHA1" => Algorithm::HmacSha1,
            "HMAC_SHA256" => Algorithm::HmacSha256,
            other => panic!("vector {i}: unknown algorithm {other}"),
        };
        let body = match &v.json_body {
            Some(json) => SignedBody::Json(json.as_bytes()),
            None => SignedBody::Form(&v.params),
        };
        let got = validate(v.token.as_bytes(), algorithm, &v.url, body, &v.signature);
        assert_eq!(got, v.valid, "vector {i} ({}): url {:?}, params {:?}", v.name, v.url, v.params);
        if got {
            valid += 1
        } else {
            invalid += 1
        }
    }
    // Both outcomes must be well represented, or the replay proves little.
    assert!(valid >= 150 && invalid >= 150, "valid {valid}, invalid {invalid}");
}
