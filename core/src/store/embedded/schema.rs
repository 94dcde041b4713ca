//! The SQLite schema, versioned with `PRAGMA user_version`: each migration runs once, in order.

use rusqlite::Connection;

const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE calls (
    call_sid        TEXT PRIMARY KEY,
    account_sid     TEXT NOT NULL,
    from_addr       TEXT NOT NULL,
    to_addr         TEXT NOT NULL,
    contact         TEXT,
    direction       TEXT NOT NULL,
    status          TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    status_at       INTEGER NOT NULL,
    stream_sid      TEXT,
    fallback_reason TEXT,
    fallback_action TEXT,
    end_reason      TEXT,
    twilio_status   TEXT
);
CREATE INDEX calls_recent ON calls (created_at DESC);
-- Sparse, as the DynamoDB index is: only calls still on the line.
CREATE INDEX calls_active ON calls (status_at) WHERE status IN ('ringing', 'awaiting_stream', 'streaming');
CREATE INDEX calls_by_contact ON calls (contact, created_at DESC) WHERE contact IS NOT NULL;

CREATE TABLE call_events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    call_sid TEXT NOT NULL,
    key      TEXT NOT NULL,
    at       INTEGER NOT NULL,
    kind     TEXT NOT NULL,
    detail   TEXT NOT NULL,
    UNIQUE (call_sid, key)
);

CREATE TABLE recordings (
    recording_sid   TEXT PRIMARY KEY,
    call_sid        TEXT NOT NULL,
    url             TEXT,
    status          TEXT NOT NULL,
    duration_secs   INTEGER,
    channels        INTEGER,
    source          TEXT,
    error_code      TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    job_enqueued_at INTEGER
);
CREATE INDEX recordings_by_call ON recordings (call_sid, created_at);

CREATE TABLE contacts (
    phone        TEXT PRIMARY KEY,
    first_seen   INTEGER NOT NULL,
    last_seen    INTEGER NOT NULL,
    profile_name TEXT
);

CREATE TABLE messages (
    message_sid       TEXT PRIMARY KEY,
    account_sid       TEXT NOT NULL,
    channel           TEXT NOT NULL,
    direction         TEXT NOT NULL,
    contact           TEXT NOT NULL,
    from_addr         TEXT NOT NULL,
    to_addr           TEXT NOT NULL,
    body              TEXT NOT NULL,
    media             TEXT NOT NULL,
    profile_name      TEXT,
    status            TEXT NOT NULL,
    error_code        TEXT,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    reply_enqueued_at INTEGER
);
CREATE INDEX messages_by_contact ON messages (contact, created_at DESC);

CREATE TABLE jobs (
    id            TEXT PRIMARY KEY,
    queue         TEXT NOT NULL,
    body          TEXT NOT NULL,
    sent_at       INTEGER NOT NULL,
    visible_at    INTEGER NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    receipt       TEXT,
    dead_at       INTEGER,
    last_error    TEXT
);
CREATE INDEX jobs_ready ON jobs (queue, visible_at) WHERE dead_at IS NULL;
CREATE INDEX jobs_dead ON jobs (queue, dead_at) WHERE dead_at IS NOT NULL;
"#,
    r#"
-- The relay: heartbeats, the stream's figures (JSON) and the turns of the conversation.
ALTER TABLE calls ADD COLUMN heartbeat_at INTEGER;
ALTER TABLE calls ADD COLUMN relay_instance TEXT;
ALTER TABLE calls ADD COLUMN stream_figures TEXT;

CREATE TABLE turns (
    call_sid          TEXT NOT NULL,
    seq               INTEGER NOT NULL,
    caller_stopped_at INTEGER,
    first_audio_at    INTEGER,
    first_mark_at     INTEGER,
    interrupted       INTEGER NOT NULL,
    heard_ms          INTEGER,
    caller_text       TEXT,
    agent_text        TEXT,
    PRIMARY KEY (call_sid, seq)
);
"#,
    r#"
-- The watchdog: a call it claimed stays on its list until Twilio has taken the redirect.
ALTER TABLE calls ADD COLUMN redirect_pending INTEGER NOT NULL DEFAULT 0;
DROP INDEX calls_active;
CREATE INDEX calls_active ON calls (status_at)
    WHERE status IN ('ringing', 'awaiting_stream', 'streaming') OR (status = 'fallback' AND redirect_pending = 1);
"#,
    r#"
-- The transcription worker: one claim per job (by RecordingSid), and the transcripts.
CREATE TABLE job_claims (
    key         TEXT PRIMARY KEY,
    claimed_at  INTEGER NOT NULL,
    lease_until INTEGER NOT NULL,
    done_at     INTEGER
);
CREATE TABLE transcripts (
    call_sid      TEXT NOT NULL,
    recording_sid TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    doc           TEXT NOT NULL,
    PRIMARY KEY (call_sid, recording_sid)
);
"#,
    r#"
-- The AI agent: when the model's audio reached the relay, where a call was transferred, the
-- leads saved during calls (on the call and on its contact), and the agent profiles.
ALTER TABLE turns ADD COLUMN model_audio_at INTEGER;
ALTER TABLE calls ADD COLUMN transfer_to TEXT;
CREATE TABLE leads (
    owner      TEXT PRIMARY KEY, -- `call:CA…` or `contact:+E164`
    doc        TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE agent_profiles (
    key        TEXT PRIMARY KEY, -- `default` or `+E164`
    doc        TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
"#,
    r#"
CREATE TABLE crm_users (
    name          TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL, -- Argon2id, PHC string
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
"#,
    r#"
-- The CRM's pages: calls and messages newest first, a page at a time (the sid breaks ties).
DROP INDEX calls_recent;
CREATE INDEX calls_recent ON calls (created_at DESC, call_sid DESC);
CREATE INDEX messages_recent ON messages (created_at DESC, message_sid DESC);
"#,
    r#"
-- Signing out ends every session opened before (the cookie carries the epoch it was opened in).
ALTER TABLE crm_users ADD COLUMN session_epoch INTEGER NOT NULL DEFAULT 0;
"#,
    r#"
-- A call's stream generation (a new stream continues the conversation after a fault or a move),
-- and how many of those a fault made.
ALTER TABLE calls ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
ALTER TABLE calls ADD COLUMN recoveries INTEGER NOT NULL DEFAULT 0;
"#,
    r#"
-- A call's trace (CALL_TRACES), in chunks of JSON lines.
CREATE TABLE call_traces (
    call_sid TEXT NOT NULL,
    key TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (call_sid, key)
);
"#,
];

pub fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let version: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i + 1)?;
        tx.commit()?;
    }
    Ok(())
}
