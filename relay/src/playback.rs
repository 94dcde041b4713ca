//! Outbound audio: paced from a clock, marked so we know what the caller heard, and cut on
//! barge-in.
//!
//! The agent's audio (any length, often faster than real time) is cut into 20 ms frames and
//! queued. Frames leave only while the estimated play head (when Twilio will have played all we
//! sent) is less than [`LEAD`] ahead of now: Twilio's buffer never holds more than that, so a
//! `clear` silences the agent at once and a long reply is never dumped on the socket at once.
//! They leave in batches: when Twilio holds only [`REFILL_AT`], it is topped up to the lead in
//! one write, a third of the wake-ups and writes of a frame every 20 ms. A
//! mark follows every [`MARK_EVERY`] frames and the last frame of a response; Twilio echoes each
//! when it has played it, which is how far the caller heard.

use crate::agent::ResponseId;
use bytes::Bytes;
use callkeeper_core::mulaw;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

pub const FRAME: Duration = Duration::from_millis(20);
/// 100 ms ahead of real time: enough to ride out scheduling jitter, little enough that a
/// barge-in cuts within a syllable.
pub const LEAD: Duration = Duration::from_millis(100);
/// Twilio's buffer is refilled when it holds this little: one 20 ms frame of margin for the
/// timer's lateness, so the caller never hears a gap.
pub const REFILL_AT: Duration = Duration::from_millis(40);
/// A mark every 200 ms of audio: the precision of "what the caller heard".
pub const MARK_EVERY: u64 = 10;
/// 60 s of audio waiting to be played; more from the agent is dropped and counted.
pub const MAX_BUFFERED: usize = 3000;

const FRAME_BYTES: usize = mulaw::FRAME_BYTES;

/// What to put on the socket, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    Media(Bytes),
    Mark(String),
    /// Empty Twilio's buffer: barge-in.
    Clear,
}

/// A mark Twilio echoed: the caller has heard `response` up to `heard_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heard {
    pub response: ResponseId,
    pub heard_ms: u64,
    /// The response's first mark: the first moment the caller heard it.
    pub first: bool,
}

/// A response cut by barge-in, at what the caller had heard of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    pub response: ResponseId,
    pub heard_ms: u64,
}

#[derive(Debug)]
struct Pending {
    name: String,
    response: ResponseId,
    /// Frames of the response sent when the mark was.
    frames: u64,
}

#[derive(Debug)]
pub struct Playback {
    queue: VecDeque<(ResponseId, Bytes)>,
    /// The tail of a response shorter than a frame, until more audio or its end.
    partial: Option<(ResponseId, Vec<u8>)>,
    /// When Twilio will have played everything sent so far.
    play_head: Instant,
    /// Audio of these responses and older is dropped: the caller interrupted them.
    cancelled_through: ResponseId,
    /// The response on the wire and how many of its frames have left.
    sending: Option<(ResponseId, u64)>,
    pending_marks: VecDeque<Pending>,
    /// The response the caller is hearing and how much of it, by the last mark.
    heard: Option<(ResponseId, u64)>,
    /// Frames of agent audio dropped: late audio of a cut response, or beyond the cap.
    pub dropped: u64,
    pub marks_sent: u64,
}

impl Playback {
    pub fn new(now: Instant) -> Playback {
        Playback {
            queue: VecDeque::new(),
            partial: None,
            play_head: now,
            cancelled_through: 0,
            sending: None,
            pending_marks: VecDeque::new(),
            heard: None,
            dropped: 0,
            marks_sent: 0,
        }
    }

    /// Queues a response's audio. Audio of a cut response is dropped.
    pub fn push(&mut self, response: ResponseId, audio: Bytes) {
        if response <= self.cancelled_through {
            self.dropped += audio.len().div_ceil(FRAME_BYTES) as u64;
            return;
        }
        if self.partial.as_ref().is_some_and(|(r, _)| *r != response) {
            self.flush_partial();
        }
        let mut audio = audio;
        if let Some((_, tail)) = &mut self.partial {
            let need = FRAME_BYTES - tail.len();
            let take = need.min(audio.len());
            tail.extend_from_slice(&audio[..take]);
            audio = audio.slice(take..);
            if tail.len() < FRAME_BYTES {
                return;
            }
            let (r, frame) = self.partial.take().expect("checked above");
            self.enqueue(r, Bytes::from(frame));
        }
        // Whole frames are slices of the agent's buffer: no copy.
        while audio.len() >= FRAME_BYTES {
            let frame = audio.split_to(FRAME_BYTES);
            self.enqueue(response, frame);
        }
        if !audio.is_empty() {
            self.partial = Some((response, audio.to_vec()));
        }
    }

    /// The response has no more audio: its last partial frame is padded with silence.
    pub fn finish(&mut self, response: ResponseId) {
        if self.partial.as_ref().is_some_and(|(r, _)| *r == response) {
            self.flush_partial();
        }
    }

    fn flush_partial(&mut self) {
        if let Some((response, mut tail)) = self.partial.take() {
            tail.resize(FRAME_BYTES, mulaw::SILENCE);
            self.enqueue(response, Bytes::from(tail));
        }
    }

    fn enqueue(&mut self, response: ResponseId, frame: Bytes) {
        if self.queue.len() >= MAX_BUFFERED {
            self.dropped += 1;
        } else {
            self.queue.push_back((response, frame));
        }
    }

    /// When the next batch is due, if any audio is waiting: when Twilio holds only
    /// [`REFILL_AT`] (at once, if it holds less).
    pub fn next_due(&self) -> Option<Instant> {
        if self.queue.is_empty() {
            return None;
        }
        Some(self.play_head.checked_sub(REFILL_AT).unwrap_or(self.play_head))
    }

    /// Sends what the clock allows. Returns the responses whose first frame left now.
    pub fn take_due(&mut self, now: Instant, out: &mut Vec<Out>) -> Vec<ResponseId> {
        let mut started = Vec::new();
        while let Some((response, _)) = self.queue.front() {
            let response = *response;
            let head = self.play_head.max(now);
            // After this frame, Twilio would hold more than the lead.
            if head + FRAME > now + LEAD {
                break;
            }
            let (_, frame) = self.queue.pop_front().expect("front exists");
            if self.queue.is_empty() {
                // A long answer grew the queue; a call spends most of its time between answers.
                self.queue.shrink_to_fit();
            }
            self.play_head = head + FRAME;
            let sent = match &mut self.sending {
                Some((r, n)) if *r == response => {
                    *n += 1;
                    *n
                }
                _ => {
                    self.sending = Some((response, 1));
                    started.push(response);
                    1
                }
            };
            out.push(Out::Media(frame));
            let last_of_response = self.queue.front().is_none_or(|(next, _)| *next != response);
            if sent % MARK_EVERY == 0 || last_of_response {
                let name = format!("r{response}.{sent}");
                self.pending_marks.push_back(Pending { name: name.clone(), response, frames: sent });
                self.marks_sent += 1;
                out.push(Out::Mark(name));
            }
        }
        started
    }

    /// Twilio played up to this mark. Unknown names (marks of audio cleared by barge-in, which
    /// Twilio echoes at once) are ignored.
    pub fn on_mark(&mut self, name: &str) -> Option<Heard> {
        let position = self.pending_marks.iter().position(|p| p.name == name)?;
        let mark = self.pending_marks.drain(..=position).next_back().expect("position is in range");
        let first = self.heard.is_none_or(|(r, _)| r != mark.response);
        self.heard = Some((mark.response, mark.frames));
        Some(Heard { response: mark.response, heard_ms: mark.frames * FRAME.as_millis() as u64, first })
    }

    /// How long until everything queued or sent has played.
    pub fn time_to_play(&self, now: Instant) -> Duration {
        FRAME * (self.queue.len() + usize::from(self.partial.is_some())) as u32 + self.play_head.saturating_duration_since(now)
    }

    /// Whether the caller is hearing, or is about to hear, the agent.
    pub fn is_audible(&self) -> bool {
        !self.queue.is_empty() || !self.pending_marks.is_empty() || self.partial.is_some()
    }

    /// Barge-in: drops everything not yet played and every response up to the newest one seen.
    /// Returns the response the caller was hearing, cut where the marks say they heard it.
    /// The caller must send Twilio a `clear`.
    pub fn clear(&mut self, now: Instant) -> Option<Cut> {
        if !self.is_audible() {
            return None;
        }
        let hearing = self.pending_marks.front().map(|p| p.response).or_else(|| self.queue.front().map(|(r, _)| *r));
        let newest = [self.queue.back().map(|(r, _)| *r), self.partial.as_ref().map(|(r, _)| *r), self.sending.map(|(r, _)| r)]
            .into_iter()
            .flatten()
            .max();
        self.dropped += self.queue.len() as u64 + u64::from(self.partial.is_some());
        self.queue.clear();
        self.partial = None;
        self.pending_marks.clear();
        self.cancelled_through = self.cancelled_through.max(newest.unwrap_or(0));
        self.play_head = now;
        let response = hearing?;
        let heard_frames = match self.heard {
            Some((r, frames)) if r == response => frames,
            _ => 0,
        };
        Some(Cut { response, heard_ms: heard_frames * FRAME.as_millis() as u64 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audio(frames: usize, byte: u8) -> Bytes {
        Bytes::from(vec![byte; frames * FRAME_BYTES])
    }

    /// Wakes the playback every 20 ms from `from` to `to`, as the session's timer does.
    fn play(p: &mut Playback, from: Instant, to: Instant, out: &mut Vec<Out>) {
        let mut now = from;
        while now <= to {
            p.take_due(now, out);
            now += FRAME;
        }
    }

    fn media(out: &[Out]) -> usize {
        out.iter().filter(|o| matches!(o, Out::Media(_))).count()
    }

    #[test]
    fn paces_a_long_reply_with_a_small_lead() {
        let t0 = Instant::now();
        let mut p = Playback::new(t0);
        p.push(1, audio(100, 1));
        p.finish(1);
        let mut out = Vec::new();
        assert_eq!(p.take_due(t0, &mut out), vec![1]);
        assert_eq!(media(&out), 5, "only the lead leaves at once");
        // One second later, 50 more frames have played: the lead is kept, never more.
        out.clear();
        play(&mut p, t0 + FRAME, t0 + Duration::from_secs(1), &mut out);
        assert_eq!(media(&out), 50);
        // Twilio holds 100 ms; the next batch when it holds 40.
        assert_eq!(p.next_due(), Some(t0 + Duration::from_millis(1060)));
        let mut early = Vec::new();
        p.take_due(t0 + Duration::from_millis(1019), &mut early);
        assert!(early.is_empty(), "nothing leaves before a frame has played");
        let mut batch = Vec::new();
        p.take_due(t0 + Duration::from_millis(1060), &mut batch);
        assert_eq!(media(&batch), 3, "60 ms in one write");
        out.extend(batch);
        // A late wake-up sends no burst: what Twilio would already have played is not sent "in the past".
        out.clear();
        p.take_due(t0 + Duration::from_secs(3), &mut out);
        assert_eq!(media(&out), 5);
        play(&mut p, t0 + Duration::from_secs(3), t0 + Duration::from_secs(10), &mut out);
        assert_eq!(media(&out), 42);
        assert_eq!(p.next_due(), None);
        assert_eq!(p.marks_sent, 10, "a mark per 10 frames, the last one at the end");
        assert_eq!(out.last(), Some(&Out::Mark("r1.100".into())));
    }

    #[test]
    fn odd_lengths_are_joined_and_the_end_padded() {
        let t0 = Instant::now();
        let mut p = Playback::new(t0);
        p.push(1, Bytes::from(vec![7u8; 100]));
        p.push(1, Bytes::from(vec![7u8; 100]));
        p.finish(1);
        let mut out = Vec::new();
        p.take_due(t0, &mut out);
        let Out::Media(second) = &out[1] else { panic!("{out:?}") };
        assert_eq!(media(&out), 2);
        assert_eq!(&second[..40], &[7u8; 40][..]);
        assert!(second[40..].iter().all(|&b| b == mulaw::SILENCE));
    }

    #[test]
    fn barge_in_cuts_at_the_last_mark_heard_and_drops_late_audio() {
        let t0 = Instant::now();
        let mut p = Playback::new(t0);
        p.push(1, audio(50, 1));
        let mut out = Vec::new();
        play(&mut p, t0, t0 + Duration::from_millis(400), &mut out);
        let heard = p.on_mark("r1.10").unwrap();
        assert_eq!(heard, Heard { response: 1, heard_ms: 200, first: true });
        assert_eq!(p.on_mark("r1.20").map(|h| h.first), Some(false));
        let cut = p.clear(t0 + Duration::from_millis(450)).unwrap();
        assert_eq!(cut, Cut { response: 1, heard_ms: 400 });
        assert_eq!(p.next_due(), None);
        // Late audio of the cut response is dropped; stale marks are ignored.
        p.push(1, audio(10, 1));
        assert_eq!(p.next_due(), None);
        assert_eq!(p.on_mark("r1.30"), None);
        // The next response plays at once.
        p.push(2, audio(3, 2));
        p.finish(2);
        out.clear();
        assert_eq!(p.take_due(t0 + Duration::from_millis(460), &mut out), vec![2]);
        assert_eq!(media(&out), 3);
        assert!(p.dropped >= 10);
        assert_eq!(p.clear(t0 + Duration::from_secs(5)), Some(Cut { response: 2, heard_ms: 0 }));
        assert_eq!(p.clear(t0 + Duration::from_secs(5)), None, "nothing audible, nothing to cut");
    }

    #[test]
    fn the_buffer_is_capped() {
        let t0 = Instant::now();
        let mut p = Playback::new(t0);
        p.push(1, audio(MAX_BUFFERED + 25, 1));
        assert_eq!(p.dropped, 25);
    }
}
