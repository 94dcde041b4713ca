//! WAV: Twilio's `.wav` recordings (16-bit PCM) and μ-law or A-law ones, read in place and split
//! into channels; 16-bit PCM written.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wav {
    pub sample_rate: u32,
    /// One vector of samples per channel.
    pub channels: Vec<Vec<i16>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a WAV file callkeeper reads: {0}")]
pub struct BadWav(pub &'static str);

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// How the samples of a WAV file are coded: Twilio's recordings are 16-bit PCM; μ-law (format 7)
/// and A-law (format 6), 8 bits a sample, are read too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Pcm16,
    MuLaw,
    ALaw,
}

impl Coding {
    fn bytes_per_sample(self) -> usize {
        match self {
            Coding::Pcm16 => 2,
            Coding::MuLaw | Coding::ALaw => 1,
        }
    }
}

/// A WAV file read in place: its samples are decoded as they are asked for, so a long recording
/// is never held twice.
#[derive(Debug, Clone, Copy)]
pub struct WavView<'a> {
    pub sample_rate: u32,
    pub channels: usize,
    pub coding: Coding,
    data: &'a [u8],
}

impl WavView<'_> {
    /// Samples per channel.
    pub fn frames(&self) -> usize {
        self.data.len() / (self.channels * self.coding.bytes_per_sample())
    }

    pub fn duration_ms(&self) -> u64 {
        self.frames() as u64 * 1000 / u64::from(self.sample_rate.max(1))
    }

    /// Sample `frame` of `channel`, as 16-bit PCM.
    pub fn sample(&self, frame: usize, channel: usize) -> i16 {
        let i = frame * self.channels + channel;
        match self.coding {
            Coding::Pcm16 => i16::from_le_bytes([self.data[2 * i], self.data[2 * i + 1]]),
            Coding::MuLaw => crate::audio::mulaw::decode(self.data[i]),
            Coding::ALaw => alaw_decode(self.data[i]),
        }
    }

    /// Frames `frames` of `channel` as a mono 16-bit PCM WAV file.
    pub fn mono_wav(&self, channel: usize, frames: std::ops::Range<usize>) -> Vec<u8> {
        let samples: Vec<i16> = frames.map(|f| self.sample(f, channel)).collect();
        mono(&samples, self.sample_rate)
    }
}

/// G.711 A-law to 16-bit PCM (ITU-T G.711; the inverse of the encoder's even-bit inversion).
fn alaw_decode(code: u8) -> i16 {
    let a = code ^ 0x55;
    let (exponent, mantissa) = ((a >> 4) & 0x07, i32::from(a & 0x0F));
    let magnitude = match exponent {
        0 => (mantissa << 4) + 8,
        e => ((mantissa << 4) + 0x108) << (e - 1),
    };
    (if a & 0x80 != 0 { magnitude } else { -magnitude }) as i16
}

/// Reads a WAV file in place (see [`WavView`]).
pub fn view(bytes: &[u8]) -> Result<WavView<'_>, BadWav> {
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
                let coding = match (tag, bits) {
                    (1, 16) => Coding::Pcm16,
                    (7, 8) => Coding::MuLaw,
                    (6, 8) => Coding::ALaw,
                    _ => return Err(BadWav("only 16-bit PCM, 8-bit μ-law and 8-bit A-law are read")),
                };
                if channels == 0 {
                    return Err(BadWav("no channels"));
                }
                format = Some((channels as usize, rate, coding));
            }
            b"data" => {
                let (channels, sample_rate, coding) = format.ok_or(BadWav("data before fmt"))?;
                return Ok(WavView { sample_rate, channels, coding, data: &bytes[body..end] });
            }
            _ => {}
        }
        pos = body + len + (len & 1);
    }
    Err(BadWav("no data chunk"))
}

/// Reads a whole WAV file into its channels' samples (for short clips).
pub fn parse(bytes: &[u8]) -> Result<Wav, BadWav> {
    let view = view(bytes)?;
    let channels = (0..view.channels).map(|c| (0..view.frames()).map(|f| view.sample(f, c)).collect()).collect();
    Ok(Wav { sample_rate: view.sample_rate, channels })
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

    /// An 8-bit G.711 WAV (format 7 or 6), as other tools write them.
    fn g711_wav(tag: u16, channels: u16, codes: &[u8]) -> Vec<u8> {
        let mut out = b"RIFF\0\0\0\0WAVEfmt ".to_vec();
        out.extend_from_slice(&18u32.to_le_bytes());
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&channels.to_le_bytes());
        out.extend_from_slice(&8000u32.to_le_bytes());
        out.extend_from_slice(&(8000 * u32::from(channels)).to_le_bytes());
        out.extend_from_slice(&channels.to_le_bytes());
        out.extend_from_slice(&8u16.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(b"data");
        out.extend_from_slice(&(codes.len() as u32).to_le_bytes());
        out.extend_from_slice(codes);
        out
    }

    #[test]
    fn mu_law_and_a_law_wavs_are_read() {
        let codes: Vec<u8> = (0..=255).collect();
        let mu = parse(&g711_wav(7, 1, &codes)).unwrap();
        assert_eq!(mu.channels[0], codes.iter().map(|&c| crate::audio::mulaw::decode(c)).collect::<Vec<_>>());
        // G.711 A-law's table values: 0xD5 is the smallest positive step, 0x55 its negative,
        // 0xAA the largest positive, 0x2A the largest negative.
        let a = parse(&g711_wav(6, 2, &[0xD5, 0x55, 0xAA, 0x2A])).unwrap();
        assert_eq!((a.channels[0].clone(), a.channels[1].clone()), (vec![8, 32256], vec![-8, -32256]));
        assert!(view(&g711_wav(3, 1, &codes)).is_err(), "float is not read");
    }
}
