//! The ways a call can go, each played end to end: what the simulator does to the call (or to
//! the stack around it), and what the caller must end up with.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// The caller hears the greeting, talks, is answered, hangs up.
    Happy,
    /// The stream URL refuses: the relay is down for the whole call.
    RelayDown,
    /// Twilio's socket closes mid-call without a `stop`.
    SocketCloses,
    /// The socket stays open and the caller's media stops.
    MediaStops,
    /// Malformed frames among the caller's media.
    BadFrames,
    /// The caller hangs up during the greeting.
    CallerHangsUp,
    /// Twilio never reports the call's recording.
    RecordingAbsent,
    /// OpenAI's transcription answers 500 twice, then works.
    TranscriptionFlaps,
    /// Every callback is posted three times.
    DuplicateWebhooks,
    /// The Realtime socket drops mid-call.
    ModelDrops,
    /// The relay process is killed mid-call, and started again.
    RelayRestart,
    /// The relay hangs; the watchdog's redirect fails twice, then works.
    TwilioRestFlaps,
    /// The store refuses writes for 5 s around the end of the stream.
    StoreBlip,
}

/// How the call ends for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Talked with the agent to the end.
    Conversation,
    /// Was given the fallback (voicemail or a person).
    Fallback,
    /// Hung up before either.
    Hangup,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Conversation => "conversation",
            Outcome::Fallback => "fallback",
            Outcome::Hangup => "hangup",
        }
    }
}

/// What a scenario needs of the stack around the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// Nothing beyond the call: runs against any target, beside other calls.
    Nothing,
    /// The local stack's processes or store: runs alone, only locally.
    LocalStack,
    /// The simulator's OpenAI (`--offline`), changed for this call: runs alone.
    OfflineOpenAi,
}

impl Scenario {
    pub const ALL: [Scenario; 13] = [
        Scenario::Happy,
        Scenario::RelayDown,
        Scenario::SocketCloses,
        Scenario::MediaStops,
        Scenario::BadFrames,
        Scenario::CallerHangsUp,
        Scenario::RecordingAbsent,
        Scenario::TranscriptionFlaps,
        Scenario::DuplicateWebhooks,
        Scenario::ModelDrops,
        Scenario::RelayRestart,
        Scenario::TwilioRestFlaps,
        Scenario::StoreBlip,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Happy => "happy",
            Scenario::RelayDown => "relay-down",
            Scenario::SocketCloses => "socket-closes",
            Scenario::MediaStops => "media-stops",
            Scenario::BadFrames => "bad-frames",
            Scenario::CallerHangsUp => "caller-hangs-up",
            Scenario::RecordingAbsent => "recording-absent",
            Scenario::TranscriptionFlaps => "transcription-flaps",
            Scenario::DuplicateWebhooks => "duplicate-webhooks",
            Scenario::ModelDrops => "model-drops",
            Scenario::RelayRestart => "relay-restart",
            Scenario::TwilioRestFlaps => "twilio-rest-flaps",
            Scenario::StoreBlip => "store-blip",
        }
    }

    /// `all`, one name, or a comma-separated mix (`happy,media-stops`).
    pub fn parse_list(text: &str) -> Result<Vec<Scenario>, String> {
        if text == "all" {
            return Ok(Scenario::ALL.to_vec());
        }
        text.split(',')
            .map(|name| {
                let name = name.trim();
                Scenario::ALL.into_iter().find(|s| s.name() == name).ok_or_else(|| {
                    let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
                    format!("no scenario {name:?}; there are: all, {}", names.join(", "))
                })
            })
            .collect()
    }

    pub fn expected(self) -> Outcome {
        match self {
            Scenario::Happy
            | Scenario::BadFrames
            | Scenario::RecordingAbsent
            | Scenario::TranscriptionFlaps
            | Scenario::DuplicateWebhooks => Outcome::Conversation,
            Scenario::CallerHangsUp => Outcome::Hangup,
            Scenario::RelayDown
            | Scenario::SocketCloses
            | Scenario::MediaStops
            | Scenario::ModelDrops
            | Scenario::RelayRestart
            | Scenario::TwilioRestFlaps
            | Scenario::StoreBlip => Outcome::Fallback,
        }
    }

    pub fn needs(self) -> Needs {
        match self {
            Scenario::RelayDown | Scenario::RelayRestart | Scenario::TwilioRestFlaps | Scenario::StoreBlip => Needs::LocalStack,
            Scenario::TranscriptionFlaps | Scenario::ModelDrops => Needs::OfflineOpenAi,
            _ => Needs::Nothing,
        }
    }

    /// Whether Twilio reports the call's recording.
    pub fn records(self) -> bool {
        self != Scenario::RecordingAbsent
    }

    /// Whether every callback goes three times.
    pub fn repeats_webhooks(self) -> usize {
        if self == Scenario::DuplicateWebhooks {
            3
        } else {
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_a_wrong_one_lists_them_all() {
        for s in Scenario::ALL {
            assert_eq!(Scenario::parse_list(s.name()), Ok(vec![s]));
        }
        assert_eq!(Scenario::parse_list("happy, media-stops"), Ok(vec![Scenario::Happy, Scenario::MediaStops]));
        assert_eq!(Scenario::parse_list("all").unwrap().len(), 13);
        let wrong = Scenario::parse_list("sad").unwrap_err();
        assert!(wrong.starts_with("no scenario \"sad\"; there are: all, happy, relay-down"), "{wrong}");
    }
}
