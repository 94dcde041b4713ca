//! The counters a stream keeps while it lasts, reported once as [`StreamFigures`] when it ends.

use callkeeper_core::stream_report::{StreamEnd, StreamFigures};
use callkeeper_core::time::Millis;
use std::collections::BTreeMap;

/// Microseconds, in log-spaced buckets: exact below 16 µs, within 25% above. 124 counters, so
/// each call can afford one.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: [u32; BUCKETS],
    total: u64,
}

const BUCKETS: usize = 124;

fn bucket(v: u64) -> usize {
    if v < 16 {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros() as usize;
    (16 + (exp - 4) * 4 + ((v >> (exp - 2)) & 3) as usize).min(BUCKETS - 1)
}

/// The largest value a bucket holds.
fn bucket_top(b: usize) -> u64 {
    if b < 16 {
        return b as u64;
    }
    let exp = (b - 16) / 4 + 4;
    let sub = ((b - 16) % 4) as u64;
    ((4 + sub + 1) << (exp - 2)) - 1
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { counts: [0; BUCKETS], total: 0 }
    }
}

impl Histogram {
    pub fn record(&mut self, micros: u64) {
        self.counts[bucket(micros)] += 1;
        self.total += 1;
    }

    /// The value at quantile `q` (0..=1), as its bucket's upper bound; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0u64;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += u64::from(c);
            if seen >= rank {
                return bucket_top(b);
            }
        }
        bucket_top(BUCKETS - 1)
    }
}

/// Counters of one stream.
#[derive(Debug, Default)]
pub struct Counters {
    pub frames_in: u64,
    pub frames_out: u64,
    pub gaps: u64,
    pub bad_frames: BTreeMap<String, u64>,
    pub marks_heard: u64,
    pub barge_ins: u64,
    pub agent_input_dropped: u64,
    /// The agent's non-fatal errors (`AgentOutput::Error`).
    pub agent_errors: u64,
    pub frame_time: Histogram,
    /// The model's first audio of an answer read → its first frame written to Twilio, µs.
    pub from_model: Histogram,
    last_chunk: Option<u64>,
}

impl Counters {
    /// Counts a bad frame; `true` the first time its kind is seen on this call, to log it once.
    pub fn bad_frame(&mut self, kind: &str) -> bool {
        let n = self.bad_frames.entry(kind.to_string()).or_insert(0);
        *n += 1;
        *n == 1
    }

    /// Counts a caller frame, and the frames missing before it by Twilio's chunk numbers.
    pub fn media_in(&mut self, chunk: u64) {
        self.frames_in += 1;
        if let Some(last) = self.last_chunk {
            if chunk > last + 1 {
                self.gaps += chunk - last - 1;
            }
        }
        self.last_chunk = Some(self.last_chunk.map_or(chunk, |last| last.max(chunk)));
    }
}

/// Everything the figures need besides the counters.
pub struct Ending<'a> {
    pub stream_sid: &'a str,
    pub relay_instance: &'a str,
    pub started_at: Millis,
    pub ended_at: Millis,
    pub end: StreamEnd,
    pub marks_sent: u64,
    pub agent_audio_dropped: u64,
    pub heartbeats: u64,
    /// Caller frame read → written to the model, µs (from the agent).
    pub to_model: &'a Histogram,
}

impl Counters {
    pub fn report(&self, e: Ending<'_>) -> StreamFigures {
        StreamFigures {
            stream_sid: e.stream_sid.to_string(),
            relay_instance: e.relay_instance.to_string(),
            started_at: e.started_at,
            ended_at: e.ended_at,
            end: e.end,
            frames_in: self.frames_in,
            frames_out: self.frames_out,
            gaps: self.gaps,
            bad_frames: self.bad_frames.clone(),
            marks_sent: e.marks_sent,
            marks_heard: self.marks_heard,
            barge_ins: self.barge_ins,
            agent_input_dropped: self.agent_input_dropped,
            agent_audio_dropped: e.agent_audio_dropped,
            heartbeats: e.heartbeats,
            frame_us_p50: self.frame_time.quantile(0.5),
            frame_us_p99: self.frame_time.quantile(0.99),
            agent_errors: self.agent_errors,
            to_model_us_p50: e.to_model.quantile(0.5),
            to_model_us_p99: e.to_model.quantile(0.99),
            from_model_us_p50: self.from_model.quantile(0.5),
            from_model_us_p99: self.from_model.quantile(0.99),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_their_values_within_a_quarter() {
        for v in [0u64, 1, 15, 16, 17, 31, 32, 100, 1_000, 65_535, 1 << 29] {
            let top = bucket_top(bucket(v));
            assert!(top >= v && (top as f64) <= (v.max(1) as f64) * 1.25 + 1.0, "{v} -> {top}");
        }
    }

    #[test]
    fn quantiles() {
        let mut h = Histogram::default();
        for v in 1..=100 {
            h.record(v);
        }
        assert_eq!(h.quantile(0.5), 55, "50 lands in the bucket 48..=55");
        assert_eq!(h.quantile(0.99), 111);
        assert_eq!(Histogram::default().quantile(0.5), 0);
    }

    #[test]
    fn gaps_count_missing_chunks() {
        let mut c = Counters::default();
        for chunk in [1, 2, 3, 7, 8, 8, 10] {
            c.media_in(chunk);
        }
        assert_eq!((c.frames_in, c.gaps), (7, 4));
    }
}
