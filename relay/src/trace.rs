//! One stream's part of its call's trace (`CALL_TRACES`): every Media Streams frame and every
//! Realtime event either way, as [`callkeeper_core::trace::line`]s, written to the store in
//! chunks (at [`TRACE_CHUNK_BYTES`], and what is left when the stream ends). Off, it costs a
//! branch per frame; on, a JSON parse and a line per frame, kept off the call's task by a
//! spawned write.

use callkeeper_core::ids::CallSid;
use callkeeper_core::store::{CallStore, TRACE_CHUNK_BYTES};
use callkeeper_core::time::now_ms;
use callkeeper_core::trace::{self, Direction, Peer, TraceMode};
use std::sync::{Arc, Mutex};

/// Cheap to clone: the session and its agent share one.
#[derive(Clone, Default)]
pub struct Tracer {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    mode: TraceMode,
    calls: Arc<dyn CallStore>,
    call_sid: CallSid,
    /// Names this stream's chunks: the generation and the relay, so two relays' never collide.
    stream: String,
    buffer: Mutex<Buffer>,
}

#[derive(Default)]
struct Buffer {
    lines: Vec<String>,
    bytes: usize,
    first_at: i64,
    chunks: u32,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_on() { "Tracer(on)" } else { "Tracer(off)" })
    }
}

impl Tracer {
    /// No trace.
    pub fn off() -> Tracer {
        Tracer::default()
    }

    /// The trace of `call_sid`'s stream `generation` on relay `instance`, or none with `mode` off.
    pub fn new(mode: TraceMode, calls: Arc<dyn CallStore>, call_sid: CallSid, generation: u32, instance: &str) -> Tracer {
        if mode == TraceMode::Off {
            return Tracer::off();
        }
        let stream: String =
            format!("relay-g{generation}-{instance}").chars().filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c)).collect();
        Tracer { inner: Some(Arc::new(Inner { mode, calls, call_sid, stream, buffer: Mutex::default() })) }
    }

    pub fn is_on(&self) -> bool {
        self.inner.is_some()
    }

    /// Keeps a text frame (a JSON event) that went `dir` between the relay and `peer` now.
    pub fn text(&self, peer: Peer, dir: Direction, text: &str) {
        if self.is_on() {
            self.text_at(now_ms(), peer, dir, text);
        }
    }

    /// [`Self::text`], at `at` (frames read before the call was known).
    pub fn text_at(&self, at: i64, peer: Peer, dir: Direction, text: &str) {
        let Some(inner) = &self.inner else { return };
        let event = serde_json::from_str(text).unwrap_or_else(|_| serde_json::json!({ "unreadable_bytes": text.len() }));
        let line = trace::line(inner.mode, at, peer, dir, &event);
        let full = {
            let mut buffer = inner.buffer.lock().expect("not poisoned");
            if buffer.lines.is_empty() {
                buffer.first_at = at;
            }
            buffer.bytes += line.len() + 1;
            buffer.lines.push(line);
            (buffer.bytes >= TRACE_CHUNK_BYTES * 9 / 10).then(|| take(&mut buffer, &inner.stream))
        };
        if let Some((key, lines)) = full {
            let (calls, call_sid) = (inner.calls.clone(), inner.call_sid.clone());
            tokio::spawn(async move { write(calls.as_ref(), &call_sid, &key, &lines).await });
        }
    }

    /// Writes what is left: the stream has ended.
    pub async fn finish(&self) {
        let Some(inner) = &self.inner else { return };
        let rest = {
            let mut buffer = inner.buffer.lock().expect("not poisoned");
            (!buffer.lines.is_empty()).then(|| take(&mut buffer, &inner.stream))
        };
        if let Some((key, lines)) = rest {
            write(inner.calls.as_ref(), &inner.call_sid, &key, &lines).await;
        }
    }
}

/// The buffer's lines as the next chunk, and its key (sorting by time, then by chunk).
fn take(buffer: &mut Buffer, stream: &str) -> (String, Vec<String>) {
    let key = format!("{:013}-{stream}-{:05}", buffer.first_at, buffer.chunks);
    buffer.chunks += 1;
    buffer.bytes = 0;
    (key, std::mem::take(&mut buffer.lines))
}

/// A trace is for whoever debugs the call: a store that fails loses the chunk, not the call.
async fn write(calls: &dyn CallStore, call_sid: &CallSid, key: &str, lines: &[String]) {
    for attempt in 1..=3 {
        match calls.append_trace(call_sid, key, lines).await {
            Ok(()) => return,
            Err(e) if attempt == 3 => {
                tracing::warn!(call_sid = %call_sid, error = %e, lines = lines.len(), "a trace chunk was not written")
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200 * attempt)).await,
        }
    }
}
