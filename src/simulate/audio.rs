//! A call's sound as the simulated caller lived it, both sides placed in time: the caller's speech
//! and the agent's audio as it played on the phone. From it come the dual-channel recording the
//! simulator reports as Twilio would (the caller on the first channel), and the file
//! `--save-audio` writes, which is the whole call in the same two channels.

use callkeeper_core::{mulaw, wav};
use tokio::time::Instant;

/// What each side sent, μ-law, with when it began.
#[derive(Debug, Default, Clone)]
pub struct Sides {
    pub caller: Vec<(Instant, Vec<u8>)>,
    pub agent: Vec<(Instant, Vec<u8>)>,
}

impl Sides {
    /// From `from` to `to` as two channels of PCM at 8 kHz (caller, agent), silence where
    /// nobody spoke; anything said outside the span is cut to it.
    pub fn channels(&self, from: Instant, to: Instant) -> [Vec<i16>; 2] {
        let samples = to.saturating_duration_since(from).as_millis() as usize * 8;
        let mut channels = [vec![0i16; samples], vec![0i16; samples]];
        for (channel, pieces) in channels.iter_mut().zip([&self.caller, &self.agent]) {
            for (at, audio) in pieces {
                let offset = at.saturating_duration_since(from).as_millis() as usize * 8;
                for (slot, code) in channel.iter_mut().skip(offset).zip(audio) {
                    *slot = mulaw::decode(*code);
                }
            }
        }
        channels
    }

    /// The same as a stereo WAV file.
    pub fn wav(&self, from: Instant, to: Instant) -> Vec<u8> {
        wav::interleaved(&self.channels(from, to), mulaw::SAMPLE_RATE)
    }

    /// How much each side said, in ms: (caller, agent).
    pub fn spoken_ms(&self) -> (u64, u64) {
        let ms = |pieces: &[(Instant, Vec<u8>)]| pieces.iter().map(|(_, a)| a.len() as u64 / 8).sum();
        (ms(&self.caller), ms(&self.agent))
    }
}

/// A whole call's sound, kept with its report for `--save-audio`.
#[derive(Debug, Clone)]
pub struct CallAudio {
    pub sides: Sides,
    pub from: Instant,
    pub to: Instant,
}

impl CallAudio {
    pub fn wav(&self) -> Vec<u8> {
        self.sides.wav(self.from, self.to)
    }

    pub fn length_ms(&self) -> u64 {
        self.to.saturating_duration_since(self.from).as_millis() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn each_side_is_placed_at_its_time_on_its_own_channel() {
        let from = Instant::now();
        let loud = mulaw::encode(8000);
        let sides = Sides {
            caller: vec![(from + Duration::from_millis(10), vec![loud; 8])],
            agent: vec![(from + Duration::from_millis(20), vec![loud; 16]), (from + Duration::from_millis(29), vec![loud; 800])],
        };
        let [caller, agent] = sides.channels(from, from + Duration::from_millis(30));
        assert_eq!(caller.len(), 240);
        let voiced = |c: &[i16]| c.iter().enumerate().filter(|(_, s)| s.abs() > 1000).map(|(i, _)| i).collect::<Vec<_>>();
        assert_eq!(voiced(&caller), (80..88).collect::<Vec<_>>());
        // The second agent piece runs past the end: cut there.
        assert_eq!(voiced(&agent), (160..176).chain(232..240).collect::<Vec<_>>());
        assert_eq!(sides.spoken_ms(), (1, 102));
        let file = sides.wav(from, from + Duration::from_millis(30));
        assert_eq!(&file[22..24], &2u16.to_le_bytes(), "two channels");
        assert_eq!(file.len(), 44 + 240 * 2 * 2);
    }
}
