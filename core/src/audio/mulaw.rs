//! G.711 μ-law, the audio of Twilio Media Streams: 8 kHz mono, one byte per sample, 160 bytes
//! per 20 ms frame. Checked against the CCITT reference coder in `tests/mulaw_tables.rs`.

const BIAS: i32 = 0x84;

/// The linear value of every code, built at compile time.
static DECODE: [i16; 256] = {
    let mut table = [0i16; 256];
    let mut code = 0;
    while code < 256 {
        let u = !(code as u8) as i32;
        let mantissa = u & 0x0F;
        let exponent = (u >> 4) & 0x07;
        let magnitude = (((mantissa << 3) + BIAS) << exponent) - BIAS;
        table[code] = if u & 0x80 != 0 { -magnitude as i16 } else { magnitude as i16 };
        code += 1;
    }
    table
};

pub fn decode(code: u8) -> i16 {
    DECODE[code as usize]
}

/// Encodes as the CCITT reference coder does: on the 14-bit sample (`sample >> 2`, flooring), with
/// the magnitude clipped to 8159 and biased by 33 before its segment is found.
pub fn encode(sample: i16) -> u8 {
    const CLIP_14: i32 = 8159;
    let value = (sample as i32) >> 2;
    let (magnitude, mask) = if value < 0 { (-value, 0x7F) } else { (value, 0xFF) };
    let biased = magnitude.min(CLIP_14) + (BIAS >> 2);
    // Segment ends are 0x3F, 0x7F, … 0x1FFF: the segment is how far the top bit sits above bit 5.
    let segment = (31 - (biased as u32).leading_zeros() as i32 - 5).max(0);
    if segment >= 8 {
        // Past the last segment: the loudest code of the sign.
        return 0x7F ^ mask;
    }
    let code = ((segment << 4) | ((biased >> (segment + 1)) & 0x0F)) as u8;
    code ^ mask
}

/// The code for digital silence.
pub const SILENCE: u8 = 0xFF;
/// Samples per second.
pub const SAMPLE_RATE: u32 = 8000;
/// Bytes in a 20 ms frame.
pub const FRAME_BYTES: usize = 160;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_every_code() {
        for code in 0..=255u8 {
            let back = encode(decode(code));
            // 0x7F and 0xFF are both zero; zero encodes as 0xFF.
            if decode(code) == 0 {
                assert_eq!(back, SILENCE);
            } else {
                assert_eq!(back, code, "code {code:#04x}");
            }
        }
    }

    #[test]
    fn extremes_clip() {
        assert_eq!(encode(i16::MAX), 0x80);
        assert_eq!(encode(i16::MIN), 0x00);
        assert_eq!(decode(0x80), 32124);
    }
}
