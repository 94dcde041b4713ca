//! Domain types in and out of SQLite columns. A stored value that does not parse is reported as
//! a corrupt record (see `From<rusqlite::Error> for StoreError`), never silently replaced.

use crate::domain::call::{CallStatus, Direction};
use crate::domain::ids::{AccountSid, CallSid, MessageSid, RecordingSid};
use crate::domain::message::{Media, MessageDirection, MessageStatus};
use crate::domain::phone::{Channel, E164};
use crate::domain::recording::RecordingStatus;
use crate::domain::stream_report::StreamFigures;
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct BadColumn(String);

fn parse_text<T>(value: ValueRef<'_>, what: &str, parse: impl FnOnce(&str) -> Option<T>) -> FromSqlResult<T> {
    let text = value.as_str()?;
    parse(text).ok_or_else(|| FromSqlError::Other(Box::new(BadColumn(format!("{what} {text:?}")))))
}

macro_rules! text_column {
    ($ty:ty, $what:literal, $parse:expr, $as_str:expr) => {
        impl FromSql for $ty {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                parse_text(value, $what, $parse)
            }
        }
        impl ToSql for $ty {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                let as_str: fn(&$ty) -> &str = $as_str;
                Ok(ToSqlOutput::from(as_str(self)))
            }
        }
    };
}

text_column!(CallSid, "call_sid", |s| CallSid::parse(s).ok(), |v| v.as_str());
text_column!(AccountSid, "account_sid", |s| AccountSid::parse(s).ok(), |v| v.as_str());
text_column!(RecordingSid, "recording_sid", |s| RecordingSid::parse(s).ok(), |v| v.as_str());
text_column!(MessageSid, "message_sid", |s| MessageSid::parse(s).ok(), |v| v.as_str());
text_column!(E164, "phone number", E164::parse, |v| v.as_str());
text_column!(CallStatus, "call status", CallStatus::parse, |v| v.as_str());
text_column!(Direction, "call direction", Direction::parse, |v| v.as_str());
text_column!(MessageDirection, "message direction", MessageDirection::parse, |v| v.as_str());
text_column!(Channel, "channel", Channel::parse, |v| v.as_str());
text_column!(MessageStatus, "message status", |s| Some(MessageStatus::from(s)), |v| v.as_str());
text_column!(RecordingStatus, "recording status", |s| Some(RecordingStatus::from(s)), |v| v.as_str());

/// Media URLs are kept as a JSON array in one column.
pub struct MediaList(pub Vec<Media>);

impl FromSql for MediaList {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        parse_text(value, "media list", |s| serde_json::from_str(s).ok()).map(MediaList)
    }
}

impl ToSql for MediaList {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(serde_json::to_string(&self.0).expect("media always serializes")))
    }
}

/// A stream's figures are kept as JSON in one column.
pub struct FiguresColumn(pub StreamFigures);

impl FromSql for FiguresColumn {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        parse_text(value, "stream figures", |s| serde_json::from_str(s).ok()).map(FiguresColumn)
    }
}
