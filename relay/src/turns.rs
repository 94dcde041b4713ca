//! The turns of a conversation as the relay sees them: when the caller stopped, when the answer
//! left, when the caller first heard it, whether they cut it off. Each change worth keeping
//! returns the turn to write.

use crate::agent::{ResponseId, Speaker};
use callkeeper_core::stream_report::Turn;
use callkeeper_core::time::Millis;

#[derive(Debug, Default)]
pub struct TurnLog {
    next_seq: u32,
    open: Option<Open>,
}

#[derive(Debug)]
struct Open {
    turn: Turn,
    /// The response answering this turn, once its audio arrives.
    response: Option<ResponseId>,
    /// Changed since last written.
    dirty: bool,
}

impl TurnLog {
    /// A log whose first turn is `seq`: a later stream generation goes on numbering the call's
    /// turns where the one before stopped.
    pub fn starting_at(seq: u32) -> TurnLog {
        TurnLog { next_seq: seq, open: None }
    }

    fn open(&mut self, caller_stopped_at: Option<Millis>, response: Option<ResponseId>) -> Option<Turn> {
        let previous = self.take_dirty();
        self.open = Some(Open { turn: Turn::new(self.next_seq, caller_stopped_at), response, dirty: true });
        self.next_seq += 1;
        previous
    }

    /// The open turn, if it has changes not yet written.
    pub fn take_dirty(&mut self) -> Option<Turn> {
        let open = self.open.as_mut()?;
        if !open.dirty {
            return None;
        }
        open.dirty = false;
        Some(open.turn.clone())
    }

    /// The caller stopped speaking: a new turn begins.
    pub fn caller_stopped(&mut self, at: Millis) -> Option<Turn> {
        self.open(Some(at), None)
    }

    /// Audio of `response` arrived. A response nobody's turn asked for (the greeting, or the
    /// agent speaking again) opens a turn of its own.
    /// `at` is when it reached the relay: the model's share of the turn's latency ends there.
    pub fn response_audio(&mut self, response: ResponseId, at: Millis) -> Option<Turn> {
        let previous = match &mut self.open {
            Some(open) if open.response == Some(response) => return None,
            Some(open) if open.response.is_none() => {
                open.response = Some(response);
                None
            }
            _ => self.open(None, Some(response)),
        };
        if let Some(open) = self.open.as_mut() {
            open.turn.model_audio_at = Some(at);
            open.dirty = true;
        }
        previous
    }

    fn answering(&mut self, response: ResponseId) -> Option<&mut Open> {
        self.open.as_mut().filter(|open| open.response == Some(response))
    }

    pub fn first_frame_sent(&mut self, response: ResponseId, at: Millis) {
        if let Some(open) = self.answering(response) {
            if open.turn.first_audio_at.is_none() {
                open.turn.first_audio_at = Some(at);
                open.dirty = true;
            }
        }
    }

    /// The caller first heard `response`: the turn's latency is complete, write it.
    pub fn first_heard(&mut self, response: ResponseId, at: Millis) -> Option<Turn> {
        let open = self.answering(response)?;
        if open.turn.first_mark_at.is_some() {
            return None;
        }
        open.turn.first_mark_at = Some(at);
        open.dirty = true;
        self.take_dirty()
    }

    pub fn cut(&mut self, response: ResponseId, heard_ms: u64) -> Option<Turn> {
        let open = self.answering(response)?;
        open.turn.interrupted = true;
        open.turn.heard_ms = Some(heard_ms);
        open.dirty = true;
        self.take_dirty()
    }

    pub fn transcript(&mut self, speaker: Speaker, text: &str) {
        let Some(open) = self.open.as_mut() else { return };
        let field = match speaker {
            Speaker::Caller => &mut open.turn.caller_text,
            Speaker::Agent => &mut open.turn.agent_text,
        };
        match field {
            Some(existing) => {
                existing.push(' ');
                existing.push_str(text);
            }
            None => *field = Some(text.to_string()),
        }
        open.dirty = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeting_then_a_caller_turn() {
        let mut log = TurnLog::default();
        assert_eq!(log.response_audio(1, 90), None);
        log.first_frame_sent(1, 100);
        log.transcript(Speaker::Agent, "hello");
        let greeting = log.first_heard(1, 180).unwrap();
        assert_eq!(
            (greeting.seq, greeting.caller_stopped_at, greeting.model_audio_at, greeting.first_audio_at, greeting.first_mark_at),
            (0, None, Some(90), Some(100), Some(180))
        );
        assert_eq!(greeting.agent_text.as_deref(), Some("hello"));
        assert_eq!(log.first_heard(1, 190), None, "written once");

        assert_eq!(log.caller_stopped(5_000), None, "nothing left to write of the greeting");
        log.response_audio(2, 5_390);
        log.first_frame_sent(2, 5_400);
        let cut = log.cut(2, 600).unwrap();
        assert_eq!(
            (cut.seq, cut.caller_stopped_at, cut.first_audio_at, cut.interrupted, cut.heard_ms),
            (1, Some(5_000), Some(5_400), true, Some(600))
        );
        log.transcript(Speaker::Caller, "wait");
        assert_eq!(log.take_dirty().and_then(|t| t.caller_text), Some("wait".into()));
        assert_eq!(log.take_dirty(), None);
    }
}
