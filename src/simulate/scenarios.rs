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
    /// The Realtime socket drops mid-call: a new session goes on with the conversation.
    ModelDrops,
    /// The relay holding the call is killed while the caller speaks, and started again.
    RelayRestart,
    /// The relay hangs and Twilio's REST API refuses the watchdog's move twice: retried, the
    /// move goes through and the conversation goes on.
    TwilioRestFlaps,
    /// The store refuses writes for 5 s around the end of the stream.
    StoreBlip,
    /// The relay holding the call is killed (SIGKILL) while the agent's answer plays.
    RelayCrash,
    /// The relay holding the call hangs (SIGSTOP): the watchdog moves the call to a new stream.
    RelayHang,
    /// A rolling deploy while the caller talks: each relay in turn is stopped (SIGTERM) and
    /// replaced; calls move to the other.
    Deploy,
    /// The model ends the session (`session_expired`, close 1001), as at its 60-minute cap.
    SessionExpired,
    /// The model's socket drops and every new session is refused: the fallback.
    ModelDown,
    /// The agent asks the business's own system (a tool over HTTP) and it answers at once.
    ToolCall,
    /// The business's system takes 2 s: the caller hears the tool's filler meanwhile.
    ToolCallSlow,
    /// The business's system is down (503): the agent says so and the call goes on.
    ToolCallDown,
    /// The caller enters digits on the keypad: the model reads them.
    Keypad,
    /// A call after the business's hours: straight to its voicemail.
    AfterHours,
}

/// How the call ends for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Talked with the agent to the end.
    Conversation,
    /// Talked with the agent to the end, across the fault: the conversation went on on a new
    /// stream or a new model session.
    Continued,
    /// Was given the fallback (voicemail or a person).
    Fallback,
    /// Hung up before either.
    Hangup,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Conversation => "conversation",
            Outcome::Continued => "continued",
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
    /// The local stack's relays replaced while the calls talk: all such calls at once.
    Deploy,
}

impl Scenario {
    pub const ALL: [Scenario; 23] = [
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
        Scenario::RelayCrash,
        Scenario::RelayHang,
        Scenario::Deploy,
        Scenario::SessionExpired,
        Scenario::ModelDown,
        Scenario::ToolCall,
        Scenario::ToolCallSlow,
        Scenario::ToolCallDown,
        Scenario::Keypad,
        Scenario::AfterHours,
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
            Scenario::RelayCrash => "relay-crash",
            Scenario::RelayHang => "relay-hang",
            Scenario::Deploy => "deploy",
            Scenario::SessionExpired => "session-expired",
            Scenario::ModelDown => "model-down",
            Scenario::ToolCall => "tool-call",
            Scenario::ToolCallSlow => "tool-call-slow",
            Scenario::ToolCallDown => "tool-call-down",
            Scenario::Keypad => "keypad",
            Scenario::AfterHours => "after-hours",
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
            | Scenario::DuplicateWebhooks
            | Scenario::ToolCall
            | Scenario::ToolCallSlow
            | Scenario::ToolCallDown
            | Scenario::Keypad => Outcome::Conversation,
            Scenario::SocketCloses
            | Scenario::ModelDrops
            | Scenario::RelayRestart
            | Scenario::RelayCrash
            | Scenario::RelayHang
            | Scenario::Deploy
            | Scenario::SessionExpired
            | Scenario::TwilioRestFlaps => Outcome::Continued,
            Scenario::CallerHangsUp => Outcome::Hangup,
            Scenario::RelayDown | Scenario::MediaStops | Scenario::StoreBlip | Scenario::ModelDown | Scenario::AfterHours => {
                Outcome::Fallback
            }
        }
    }

    pub fn needs(self) -> Needs {
        match self {
            Scenario::RelayDown
            | Scenario::RelayRestart
            | Scenario::TwilioRestFlaps
            | Scenario::StoreBlip
            | Scenario::RelayCrash
            | Scenario::RelayHang
            | Scenario::AfterHours => Needs::LocalStack,
            // The deploy replaces the relays under every call on the line: calls share it.
            Scenario::Deploy => Needs::Deploy,
            Scenario::TranscriptionFlaps
            | Scenario::ModelDrops
            | Scenario::SessionExpired
            | Scenario::ModelDown
            | Scenario::ToolCall
            | Scenario::ToolCallSlow
            | Scenario::ToolCallDown
            | Scenario::Keypad => Needs::OfflineOpenAi,
            _ => Needs::Nothing,
        }
    }

    /// Where the fault is the stack's or the model's, not the call's: the scenario's fault is
    /// made once (a later stream of the same call is not broken again).
    pub fn continues(self) -> bool {
        self.expected() == Outcome::Continued
    }

    /// Caller turns the call needs: a deploy replaces two relays while the caller talks.
    pub fn turns(self, default: u32) -> u32 {
        match self {
            Scenario::Deploy => default.max(6),
            _ => default,
        }
    }

    /// The number the call rings, when the scenario's business has a profile of its own (set
    /// by the simulator before the call): each its own number, so no other call shares it.
    pub fn business_number(self) -> Option<&'static str> {
        match self {
            Scenario::ToolCall => Some("+97230000101"),
            Scenario::ToolCallSlow => Some("+97230000102"),
            Scenario::ToolCallDown => Some("+97230000103"),
            Scenario::AfterHours => Some("+97230000109"),
            _ => None,
        }
    }

    /// How the simulator's business endpoint answers the scenario's tool.
    pub fn tool_behaviour(self) -> Option<&'static str> {
        match self {
            Scenario::ToolCall => Some("fast"),
            Scenario::ToolCallSlow => Some("slow"),
            Scenario::ToolCallDown => Some("down"),
            _ => None,
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
        assert_eq!(Scenario::parse_list("all").unwrap().len(), 23);
        let wrong = Scenario::parse_list("sad").unwrap_err();
        assert!(wrong.starts_with("no scenario \"sad\"; there are: all, happy, relay-down"), "{wrong}");
    }
}
