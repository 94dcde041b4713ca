//! The embedded agent: the default when no AI is configured. It greets the caller and answers
//! each caller turn, found by energy ([`super::vad`]), with a short prompt. Its prompts ship in
//! the binary as μ-law (rendered by `scripts/gen_prompts.sh`), so both directions of a call can
//! be heard working with no network at all.

use super::vad::{Vad, VadEvent};
use super::{AgentError, AgentInput, AgentLink, AgentOutput, CallInfo, ResponseId, Speaker, VoiceAgent};
use bytes::Bytes;
use callkeeper_core::time::Millis;

/// One prompt: its audio and what it says, for the transcript.
#[derive(Debug, Clone)]
pub struct Prompt {
    pub audio: Bytes,
    pub text: &'static str,
}

#[derive(Debug, Clone)]
pub struct EmbeddedAgent {
    pub greeting: Prompt,
    pub reply: Prompt,
}

const HE_HOLD: &[u8] = include_bytes!("../../assets/prompts/he/hold.ulaw");
const EN_HOLD: &[u8] = include_bytes!("../../assets/prompts/en/hold.ulaw");

/// What the caller hears while the agent reconnects ("one moment, I am still here"): Hebrew for
/// `he*`, English otherwise. Any agent may say it; it ships in the binary with the prompts.
pub fn hold(language: &str) -> Prompt {
    if language.starts_with("he") {
        Prompt { audio: Bytes::from_static(HE_HOLD), text: "רגע אחד, אני איתך." }
    } else {
        Prompt { audio: Bytes::from_static(EN_HOLD), text: "One moment, I am still here." }
    }
}

const HE_GREETING: &[u8] = include_bytes!("../../assets/prompts/he/greeting.ulaw");
const HE_REPLY: &[u8] = include_bytes!("../../assets/prompts/he/reply.ulaw");
const EN_GREETING: &[u8] = include_bytes!("../../assets/prompts/en/greeting.ulaw");
const EN_REPLY: &[u8] = include_bytes!("../../assets/prompts/en/reply.ulaw");

impl EmbeddedAgent {
    /// Hebrew for `he*`, English otherwise: the prompts it ships.
    pub fn for_language(language: &str) -> EmbeddedAgent {
        if language.starts_with("he") {
            EmbeddedAgent {
                greeting: Prompt {
                    audio: Bytes::from_static(HE_GREETING), text: "שלום, הגעתם לסוכן הדיגיטלי. במה אפשר לעזור?"
                },
                reply: Prompt { audio: Bytes::from_static(HE_REPLY), text: "הבנתי, תודה. ספרו לי עוד." },
            }
        } else {
            EmbeddedAgent {
                greeting: Prompt {
                    audio: Bytes::from_static(EN_GREETING),
                    text: "Hello, you have reached the digital agent. How can I help?",
                },
                reply: Prompt { audio: Bytes::from_static(EN_REPLY), text: "I see, thank you. Tell me more." },
            }
        }
    }
}

/// Sends one prompt as a response. `false` when the relay has gone.
async fn say(link: &AgentLink, response: ResponseId, prompt: &Prompt) -> bool {
    let outputs = [
        AgentOutput::Audio { response, mulaw: prompt.audio.clone(), made: tokio::time::Instant::now() },
        AgentOutput::ResponseDone { response },
        AgentOutput::Transcript { speaker: Speaker::Agent, text: prompt.text.to_string() },
    ];
    for output in outputs {
        if link.output.send(output).await.is_err() {
            return false;
        }
    }
    true
}

#[async_trait::async_trait]
impl VoiceAgent for EmbeddedAgent {
    fn name(&self) -> &'static str {
        "embedded"
    }

    async fn converse(&self, _call: CallInfo, mut link: AgentLink) -> Result<(), AgentError> {
        let mut response: ResponseId = 1;
        if !say(&link, response, &self.greeting).await {
            return Ok(());
        }
        let mut vad = Vad::default();
        while let Some(input) = link.input.recv().await {
            // Only the caller's audio matters here. An `Interrupted` needs nothing: the prompt's
            // audio is already with the relay, which dropped what was not heard.
            let AgentInput::Audio { mulaw, received_at, .. } = input else { continue };
            let relay_listening = match vad.push(&mulaw) {
                Some(VadEvent::SpeechStarted) => link.output.send(AgentOutput::SpeechStarted).await.is_ok(),
                Some(VadEvent::SpeechEnded { frames_ago }) => {
                    let at: Millis = received_at - i64::from(frames_ago) * 20;
                    response += 1;
                    link.output.send(AgentOutput::CallerTurnEnded { at }).await.is_ok() && say(&link, response, &self.reply).await
                }
                None => true,
            };
            if !relay_listening {
                break;
            }
        }
        Ok(())
    }
}
