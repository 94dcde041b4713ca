//! Cutting a long channel for OpenAI's transcription, which takes at most 25 MB an upload: as
//! 8 kHz 16-bit WAV that is about 26 minutes, so a longer call would fail every time into the
//! dead-letter queue. A channel is cut into pieces of about [`TARGET`], each cut at the quietest
//! half second within a minute of it (so at most 21 minutes, 20.2 MB at 8 kHz), so no word is
//! split; the lines of each piece are moved by its start, so the transcript's times are the call's.

use crate::audio::wav::WavView;
use std::ops::Range;
use std::time::Duration;

/// OpenAI's limit on one upload.
pub const MAX_UPLOAD_BYTES: usize = 25 * 1024 * 1024;
/// A piece's length, give or take [`SEARCH`].
pub const TARGET: Duration = Duration::from_secs(20 * 60);
/// Where the cut is looked for: this far either side of [`TARGET`].
pub const SEARCH: Duration = Duration::from_secs(60);
/// The quiet stretch the cut is made in the middle of.
const QUIET: Duration = Duration::from_millis(500);
/// Loudness is summed over blocks this long.
const BLOCK: Duration = Duration::from_millis(20);

fn frames_in(duration: Duration, sample_rate: u32) -> usize {
    (duration.as_millis() as u64 * u64::from(sample_rate) / 1000) as usize
}

/// The pieces of `channel`, in order, covering every frame once.
pub fn pieces(view: &WavView<'_>, channel: usize) -> Vec<Range<usize>> {
    let rate = view.sample_rate.max(1);
    // Never over the upload limit, whatever the sample rate (a mono 16-bit WAV, 44-byte header).
    let longest = (MAX_UPLOAD_BYTES - 1024) / 2;
    let search = frames_in(SEARCH, rate).min(longest / 4);
    let target = frames_in(TARGET, rate).min(longest - search).max(1);
    let (block, quiet_blocks) = (frames_in(BLOCK, rate).max(1), (QUIET.as_millis() / BLOCK.as_millis()) as usize);
    let total = view.frames();
    let mut pieces = Vec::new();
    let mut start = 0;
    while total - start > target {
        let window = start + target - search..(start + target + search).min(total);
        // Loudness per block, then the quietest run of `quiet_blocks` blocks.
        let loudness: Vec<u64> = window
            .clone()
            .step_by(block)
            .map(|b| (b..(b + block).min(window.end)).map(|f| u64::from(view.sample(f, channel).unsigned_abs())).sum())
            .collect();
        let run = quiet_blocks.min(loudness.len()).max(1);
        let mut sum: u64 = loudness[..run].iter().sum();
        let (mut best, mut best_at) = (sum, 0);
        for i in run..loudness.len() {
            sum = sum + loudness[i] - loudness[i - run];
            if sum < best {
                (best, best_at) = (sum, i + 1 - run);
            }
        }
        let cut = window.start + (best_at * block + run * block / 2).min(window.len());
        pieces.push(start..cut);
        start = cut;
    }
    pieces.push(start..total);
    pieces
}

/// A piece's start in milliseconds of the call.
pub fn start_ms(piece: &Range<usize>, sample_rate: u32) -> u64 {
    piece.start as u64 * 1000 / u64::from(sample_rate.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_channel_is_cut_at_its_quiet_moments_under_the_limit() {
        // 50 minutes of loud tone with a second of silence at 19:30 and at 39:10.
        let rate = 8000;
        let silent = |s: usize| (19 * 60 + 30..19 * 60 + 31).contains(&(s / rate)) || (39 * 60 + 10..39 * 60 + 11).contains(&(s / rate));
        let samples: Vec<i16> = (0..50 * 60 * rate)
            .map(|s| {
                if silent(s) {
                    0
                } else if s % 2 == 0 {
                    9000
                } else {
                    -9000
                }
            })
            .collect();
        let bytes = crate::audio::wav::mono(&samples, rate as u32);
        let view = crate::audio::wav::view(&bytes).unwrap();
        let pieces = pieces(&view, 0);
        assert_eq!(pieces.len(), 3);
        assert_eq!((pieces[0].start, pieces[2].end), (0, samples.len()));
        assert!(pieces.windows(2).all(|w| w[0].end == w[1].start), "contiguous");
        for piece in &pieces {
            assert!((piece.len()) * 2 + 44 <= MAX_UPLOAD_BYTES, "{piece:?} fits one upload");
            assert!(piece.len() <= frames_in(TARGET + SEARCH, rate as u32));
        }
        // Each cut lies in its second of silence.
        for (cut, second) in [(pieces[0].end, 19 * 60 + 30), (pieces[1].end, 39 * 60 + 10)] {
            assert!(silent(cut), "cut at {} s, not in the silence at {second} s", cut / rate);
        }
        assert_eq!(start_ms(&pieces[1], rate as u32), pieces[1].start as u64 / 8);
    }

    #[test]
    fn a_short_channel_is_one_piece() {
        let bytes = crate::audio::wav::mono(&vec![0i16; 8000 * 30], 8000);
        let view = crate::audio::wav::view(&bytes).unwrap();
        assert_eq!(pieces(&view, 0), vec![0..8000 * 30]);
    }
}
