//! The conversation so far, as a new model session needs it to go on: who said what (from the
//! live transcript), whether the agent's last words were cut, and the lead saved so far. Kept by
//! the agent as the call goes (a model drop, a session rotated), and read back from the store's
//! turns and lead when another relay takes the call over (a relay crash or hang, a deploy).

use super::Speaker;
use callkeeper_core::stream_report::Turn;
use serde_json::Value;

/// One utterance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub speaker: Speaker,
    pub text: String,
    /// The caller did not hear all of it: they spoke over it, or the line was cut by the fault.
    pub cut: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    pub lines: Vec<Line>,
    /// What `save_lead` has saved for this call so far.
    pub lead: Option<Value>,
}

/// Lines kept at most: a new session needs the gist, and a long call's every word would make
/// each resume slower and dearer. The first two (the greeting and the caller's reason for
/// calling) and the most recent ones are kept.
const MAX_LINES: usize = 60;

impl History {
    /// From the turns the relay wrote: in each, the caller's words, then the agent's answer.
    pub fn from_turns(turns: &[Turn], lead: Option<Value>) -> History {
        let mut history = History { lines: Vec::new(), lead };
        for turn in turns {
            if let Some(text) = turn.caller_text.as_deref() {
                history.said(Speaker::Caller, text);
            }
            if let Some(text) = turn.agent_text.as_deref() {
                history.said(Speaker::Agent, text);
                if turn.interrupted {
                    history.cut_last_agent_line();
                }
            }
        }
        history
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    pub fn said(&mut self, speaker: Speaker, text: &str) {
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        self.lines.push(Line { speaker, text: text.to_string(), cut: false });
        if self.lines.len() > MAX_LINES {
            self.lines.remove(2);
        }
    }

    /// The agent's latest words were not all heard.
    pub fn cut_last_agent_line(&mut self) {
        if let Some(line) = self.lines.iter_mut().rev().find(|l| l.speaker == Speaker::Agent) {
            line.cut = true;
        }
    }

    /// Whether the conversation waits on the agent: the caller spoke last, or the agent's last
    /// words were cut.
    pub fn agent_owes_an_answer(&self) -> bool {
        self.lines.last().is_some_and(|line| line.speaker == Speaker::Caller || line.cut)
    }

    /// The history as one labelled transcript, for a session that must get it as one message.
    pub fn transcript(&self) -> String {
        self.lines
            .iter()
            .map(|line| {
                let who = match line.speaker {
                    Speaker::Caller => "Caller",
                    Speaker::Agent => "Agent",
                };
                let cut = if line.cut { " [cut off: the caller did not hear all of this]" } else { "" };
                format!("{who}: {}{cut}", line.text)
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// What the new session is told after the history: it continues, it does not start over.
    pub fn note(&self, language: &str) -> String {
        let mut note = format!(
            "The phone call was briefly interrupted by a technical fault and has resumed on a new connection; \
             the conversation so far is above. Continue it in {language} from where it was. Do not greet the caller \
             again and do not introduce yourself again."
        );
        if self.lines.last().is_some_and(|l| l.speaker == Speaker::Agent && l.cut) {
            note.push_str(" Your last answer was cut off before the caller heard all of it: say the rest briefly.");
        }
        if let Some(lead) = self.lead.as_ref().filter(|l| l.as_object().is_some_and(|o| !o.is_empty())) {
            note.push_str(&format!(" Already saved about the caller (do not ask again): {lead}."));
        }
        note
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(seq: u32, caller: Option<&str>, agent: Option<&str>, interrupted: bool) -> Turn {
        let mut t = Turn::new(seq, None);
        t.caller_text = caller.map(str::to_string);
        t.agent_text = agent.map(str::to_string);
        t.interrupted = interrupted;
        t
    }

    #[test]
    fn the_store_s_turns_read_back_in_order_with_what_was_cut() {
        let turns = [
            turn(0, None, Some("שלום, במה אפשר לעזור?"), false),
            turn(1, Some("אני מחפש דירה"), Some("באיזו עיר?"), false),
            turn(2, Some("בחיפה"), Some("יש לנו כמה דירות בחיפה, למשל"), true),
        ];
        let history = History::from_turns(&turns, Some(serde_json::json!({ "city": "חיפה" })));
        let speakers: Vec<Speaker> = history.lines.iter().map(|l| l.speaker).collect();
        use Speaker::*;
        assert_eq!(speakers, [Agent, Caller, Agent, Caller, Agent]);
        assert!(history.lines[4].cut && !history.lines[2].cut);
        assert!(history.agent_owes_an_answer(), "the last answer was cut");
        let note = history.note("he-IL");
        assert!(note.contains("Do not greet") && note.contains("cut off") && note.contains("חיפה"), "{note}");
        assert!(history.transcript().starts_with("Agent: שלום"), "{}", history.transcript());
    }

    #[test]
    fn a_long_call_keeps_its_opening_and_its_latest_lines() {
        let mut history = History::default();
        for i in 0..100 {
            history.said(if i % 2 == 0 { Speaker::Agent } else { Speaker::Caller }, &format!("line {i}"));
        }
        assert_eq!(history.lines.len(), MAX_LINES);
        assert_eq!((history.lines[0].text.as_str(), history.lines[1].text.as_str()), ("line 0", "line 1"));
        assert_eq!(history.lines.last().unwrap().text, "line 99");
        assert!(history.agent_owes_an_answer(), "the caller spoke last");
    }
}
