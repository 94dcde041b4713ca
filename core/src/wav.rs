//! 16-bit PCM WAV, the format of Twilio's `.wav` recordings: read, split into channels, write.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wav {
    pub sample_rate: u32,
    /// One vector of samples per channel.
    pub channels: Vec<Vec<i16>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a 16-bit PCM WAV file: {0}")]
pub struct BadWav(pub &'static str);

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

pub fn parse(bytes: &[u8]) -> Result<Wav, BadWav> {
    if bytes.len() < 12 || &bytes[..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(BadWav("no RIFF/WAVE header"));
    }
    let (mut format, mut pos) = (None, 12);
    while pos + 8 <= bytes.len() {
        let (id, len) = (&bytes[pos..pos + 4], u32_at(bytes, pos + 4) as usize);
        let body = pos + 8;
        let end = body.checked_add(len).filter(|e| *e <= bytes.len()).unwrap_or(bytes.len());
        match id {
            b"fmt " if len >= 16 => {
                let (tag, channels, rate, bits) =
                    (u16_at(bytes, body), u16_at(bytes, body + 2), u32_at(bytes, body + 4), u16_at(bytes, body + 14));
                if tag != 1 || bits != 16 || channels == 0 {
                    return Err(BadWav("only 16-bit PCM is read"));
                }
                format = Some((channels as usize, rate));
            }
            b"data" => {
                let (channels, sample_rate) = format.ok_or(BadWav("data before fmt"))?;
                let mut out = vec![Vec::with_capacity((end - body) / 2 / channels); channels];
                for (i, pair) in bytes[body..end].chunks_exact(2).enumerate() {
                    out[i % channels].push(i16::from_le_bytes([pair[0], pair[1]]));
                }
                return Ok(Wav { sample_rate, channels: out });
            }
            _ => {}
        }
        pos = body + len + (len & 1);
    }
    Err(BadWav("no data chunk"))
}

/// Samples of one channel as a mono WAV file.
pub fn mono(samples: &[i16], sample_rate: u32) -> Vec<u8> {
    let data_len = (samples.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + data_len as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&sample_rate.to_le_bytes());
    out.extend_from_slice(&(sample_rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

/// Interleaves channels into one WAV file (what Twilio sends for a dual-channel recording).
pub fn interleaved(channels: &[Vec<i16>], sample_rate: u32) -> Vec<u8> {
    let n = channels.len() as u16;
    let frames = channels.iter().map(Vec::len).min().unwrap_or(0);
    let data_len = (frames * channels.len() * 2) as u32;
    let mut out = mono(&[], sample_rate);
    out.truncate(44);
    out[4..8].copy_from_slice(&(36 + data_len).to_le_bytes());
    out[22..24].copy_from_slice(&n.to_le_bytes());
    out[28..32].copy_from_slice(&(sample_rate * 2 * u32::from(n)).to_le_bytes());
    out[32..34].copy_from_slice(&(2 * n).to_le_bytes());
    out[40..44].copy_from_slice(&data_len.to_le_bytes());
    for i in 0..frames {
        for channel in channels {
            out.extend_from_slice(&channel[i].to_le_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dual_channel_round_trip() {
        let caller: Vec<i16> = (0..800).map(|i| (i * 7) as i16).collect();
        let agent: Vec<i16> = (0..800).map(|i| -(i as i16)).collect();
        let wav = parse(&interleaved(&[caller.clone(), agent.clone()], 8000)).unwrap();
        assert_eq!((wav.sample_rate, wav.channels.len()), (8000, 2));
        assert_eq!((&wav.channels[0], &wav.channels[1]), (&caller, &agent));
        assert_eq!(parse(&mono(&caller, 8000)).unwrap().channels, vec![caller]);
        assert!(parse(b"RIFF\0\0\0\0WAVEjunk").is_err(), "no fmt or data chunk");
    }
}
