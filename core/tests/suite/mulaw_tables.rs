//! Our μ-law codec against the CCITT G.711 reference coder (CPython's audioop), on every code and
//! every 16-bit sample (`fixtures/gen_mulaw_tables.py`).

use callkeeper_core::mulaw;

#[test]
fn decodes_every_code_as_the_standard() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mulaw_decode.json")).unwrap();
    let table: Vec<i16> = serde_json::from_str(&text).unwrap();
    assert_eq!(table.len(), 256);
    for (code, &expected) in table.iter().enumerate() {
        assert_eq!(mulaw::decode(code as u8), expected, "code {code:#04x}");
    }
}

#[test]
fn encodes_every_sample_as_the_standard() {
    let table = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mulaw_encode.bin")).unwrap();
    assert_eq!(table.len(), 65536);
    for (i, &expected) in table.iter().enumerate() {
        let sample = i as u16 as i16;
        assert_eq!(mulaw::encode(sample), expected, "sample {sample}");
    }
}
