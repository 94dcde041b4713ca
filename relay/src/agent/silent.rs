//! An agent that listens and says nothing: the stream still holds the call (and its recording),
//! with no voice on it. Also the baseline of the relay's capacity benchmark.

use super::{AgentError, AgentLink, CallInfo, VoiceAgent};

pub struct SilentAgent;

#[async_trait::async_trait]
impl VoiceAgent for SilentAgent {
    fn name(&self) -> &'static str {
        "silent"
    }

    async fn converse(&self, _call: CallInfo, mut link: AgentLink) -> Result<(), AgentError> {
        while link.input.recv().await.is_some() {}
        Ok(())
    }
}
