//! A call as its caller lived it: what they heard and when, each webhook and its answer time,
//! and the silences between (time in which the caller neither heard anything nor spoke).

use serde::Serialize;
use std::time::Duration;
use tokio::time::Instant;

/// Silences shorter than this are how talk goes; longer ones are listed.
const LISTED_SILENCE: Duration = Duration::from_secs(1);

/// When the caller heard something, or spoke.
#[derive(Debug, Default, Clone)]
pub struct Heard {
    /// The agent's audio, span by span.
    pub agent: Vec<(Instant, Instant)>,
    /// Everything else: `<Say>`, `<Play>`, the beep, a ringing `<Dial>`, a person.
    pub other: Vec<(Instant, Instant)>,
    /// The caller talking.
    pub speaking: Vec<(Instant, Instant)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Moment {
    pub at_ms: u64,
    pub what: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Webhook {
    pub at_ms: u64,
    pub name: String,
    /// 0 when no HTTP answer came.
    pub status: u16,
    pub ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Silence {
    pub from_ms: u64,
    pub ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Timeline {
    #[serde(skip)]
    origin: Instant,
    pub moments: Vec<Moment>,
    pub webhooks: Vec<Webhook>,
    pub silences: Vec<Silence>,
    pub longest_silence_ms: u64,
    /// When the call ended, from the ring.
    pub ended_ms: u64,
}

impl Timeline {
    pub fn new(origin: Instant) -> Timeline {
        Timeline { origin, moments: Vec::new(), webhooks: Vec::new(), silences: Vec::new(), longest_silence_ms: 0, ended_ms: 0 }
    }

    fn ms(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.origin).as_millis() as u64
    }

    pub fn note(&mut self, at_ms: u64, what: &str) {
        self.moments.push(Moment { at_ms, what: what.to_string() });
    }

    pub fn webhook(&mut self, sent: Instant, name: &str, status: u16, took: Duration) {
        let at_ms = self.ms(sent);
        self.webhooks.push(Webhook { at_ms, name: name.to_string(), status, ms: took.as_millis() as u64 });
    }

    /// Closes the timeline at `end`: the agent's spans become moments, and the silences are found
    /// between the answer (the first webhook's reply) and the end.
    pub fn heard(&mut self, heard: &Heard, end: Instant) {
        self.ended_ms = self.ms(end);
        for (from, to) in &heard.agent {
            let (a, b) = (self.ms(*from), self.ms(*to));
            self.moments.push(Moment { at_ms: a, what: format!("heard the agent for {:.1} s", (b - a) as f64 / 1000.0) });
        }
        self.moments.sort_by_key(|m| m.at_ms);
        let answered = self.webhooks.first().map_or(0, |w| w.at_ms + w.ms);
        let mut busy: Vec<(u64, u64)> =
            heard.agent.iter().chain(&heard.other).chain(&heard.speaking).map(|(a, b)| (self.ms(*a), self.ms(*b))).collect();
        busy.sort();
        let mut cursor = answered;
        for (from, to) in busy.into_iter().chain(std::iter::once((self.ended_ms, self.ended_ms))) {
            if from > cursor {
                let ms = from - cursor;
                if ms >= LISTED_SILENCE.as_millis() as u64 {
                    self.silences.push(Silence { from_ms: cursor, ms });
                }
                self.longest_silence_ms = self.longest_silence_ms.max(ms);
            }
            cursor = cursor.max(to);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_is_the_time_nothing_was_heard_or_said_after_the_answer() {
        let origin = Instant::now();
        let at = |ms: u64| origin + Duration::from_millis(ms);
        let mut timeline = Timeline::new(origin);
        timeline.webhook(origin, "incoming_call", 200, Duration::from_millis(100));
        let heard = Heard {
            agent: vec![(at(300), at(2000)), (at(5000), at(6000))],
            other: vec![(at(1500), at(2500))],
            speaking: vec![(at(2600), at(3000))],
        };
        timeline.heard(&heard, at(6500));
        // 100–300 (short), 2500–2600 (short), 3000–5000 (listed), 6000–6500 (short).
        assert_eq!(timeline.longest_silence_ms, 2000);
        assert_eq!(timeline.silences.len(), 1);
        assert_eq!((timeline.silences[0].from_ms, timeline.silences[0].ms), (3000, 2000));
    }
}
