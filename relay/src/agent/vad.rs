//! End of speech by energy: enough for the embedded agent to take turns, with no model.
//!
//! A frame is voiced when its RMS passes [`VOICED_RMS`]. Speech starts after [`START_FRAMES`]
//! voiced frames in a row (a click is not speech) and ends after [`END_SILENCE_FRAMES`] quiet
//! frames (a pause between words is not the end of a turn).

use callkeeper_core::mulaw;

/// About -38 dBFS: above a phone line's hiss, below any speech.
pub const VOICED_RMS: f64 = 400.0;
/// 60 ms.
pub const START_FRAMES: u32 = 3;
/// 700 ms.
pub const END_SILENCE_FRAMES: u32 = 35;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VadEvent {
    SpeechStarted,
    /// Speech ended; the last voiced frame was `frames_ago` frames before this one.
    SpeechEnded {
        frames_ago: u32,
    },
}

#[derive(Debug, Default)]
pub struct Vad {
    speaking: bool,
    voiced_run: u32,
    quiet_run: u32,
}

pub fn rms(mulaw_frame: &[u8]) -> f64 {
    if mulaw_frame.is_empty() {
        return 0.0;
    }
    let sum: f64 = mulaw_frame.iter().map(|&c| f64::from(mulaw::decode(c)).powi(2)).sum();
    (sum / mulaw_frame.len() as f64).sqrt()
}

impl Vad {
    pub fn push(&mut self, mulaw_frame: &[u8]) -> Option<VadEvent> {
        let voiced = rms(mulaw_frame) >= VOICED_RMS;
        if voiced {
            self.voiced_run += 1;
            self.quiet_run = 0;
            if !self.speaking && self.voiced_run >= START_FRAMES {
                self.speaking = true;
                return Some(VadEvent::SpeechStarted);
            }
        } else {
            self.voiced_run = 0;
            self.quiet_run += 1;
            if self.speaking && self.quiet_run >= END_SILENCE_FRAMES {
                self.speaking = false;
                return Some(VadEvent::SpeechEnded { frames_ago: self.quiet_run });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(amplitude: f64) -> Vec<u8> {
        (0..160).map(|i| mulaw::encode((amplitude * (i as f64 * 0.3).sin()) as i16)).collect()
    }

    #[test]
    fn a_word_then_silence_is_one_turn() {
        let mut vad = Vad::default();
        let silence = vec![mulaw::SILENCE; 160];
        let speech = tone(8000.0);
        let mut events = Vec::new();
        for frame in std::iter::repeat_n(&speech, 50).chain(std::iter::repeat_n(&silence, 10)).chain(std::iter::repeat_n(&speech, 20)) {
            events.extend(vad.push(frame));
        }
        assert_eq!(events, vec![VadEvent::SpeechStarted], "a 200 ms pause does not end the turn");
        for _ in 0..END_SILENCE_FRAMES {
            events.extend(vad.push(&silence));
        }
        assert_eq!(events, vec![VadEvent::SpeechStarted, VadEvent::SpeechEnded { frames_ago: END_SILENCE_FRAMES }]);
    }

    #[test]
    fn clicks_and_hiss_are_not_speech() {
        let mut vad = Vad::default();
        let hiss = tone(150.0);
        let click = tone(20000.0);
        for i in 0..200 {
            let frame = if i % 10 == 0 { &click } else { &hiss };
            assert_eq!(vad.push(frame), None);
        }
    }
}
