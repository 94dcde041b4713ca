//! OpenAI's HTTP API, the two calls the transcription worker makes: a recording's channel to
//! timed text, and a transcript to the fields of a JSON schema. Failures are errors the job
//! queue retries; nothing is retried here.

use crate::domain::transcript::{Line, Speaker};
use crate::process::config::OpenAiSettings;
use serde_json::{json, Value};
use std::time::Duration;

#[derive(Debug, Clone, thiserror::Error)]
pub enum OpenAiError {
    #[error("OpenAI answered HTTP {status}: {message}")]
    Api { status: u16, message: String },
    #[error("could not reach OpenAI: {0}")]
    Network(String),
    #[error("unexpected answer from OpenAI: {0}")]
    Unexpected(String),
}

impl OpenAiError {
    /// OpenAI refused this input for good (a file it cannot decode, too large, of a format it
    /// does not read): sending it again changes nothing. A refused key, a throttle or a failure
    /// of OpenAI's own is not this.
    pub fn refused_the_input(&self) -> bool {
        matches!(self, OpenAiError::Api { status: 400 | 413 | 415 | 422, .. })
    }
}

/// A transcription of one upload (at most 25 MB, ~26 minutes of 8 kHz audio) may take minutes.
/// Inside the transcribe function's 900 s with room for a retry.
pub const TRANSCRIBE_TIMEOUT: Duration = Duration::from_secs(240);
/// A chat completion (the extraction, a WhatsApp reply) is short: inside the reply function's
/// 60 s with the rest of the job.
pub const CHAT_TIMEOUT: Duration = Duration::from_secs(40);

#[derive(Clone)]
pub struct OpenAi {
    http: reqwest::Client,
    settings: OpenAiSettings,
}

impl OpenAi {
    pub fn new(settings: OpenAiSettings) -> OpenAi {
        let http = reqwest::Client::builder().timeout(TRANSCRIBE_TIMEOUT).build().expect("a TLS client builds");
        OpenAi { http, settings }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value, OpenAiError> {
        let response = request.bearer_auth(self.settings.api_key.expose()).send().await.map_err(|e| OpenAiError::Network(e.to_string()))?;
        let status = response.status().as_u16();
        let body = response.text().await.map_err(|e| OpenAiError::Network(e.to_string()))?;
        if !(200..300).contains(&status) {
            let message = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| body.chars().take(200).collect());
            return Err(OpenAiError::Api { status, message });
        }
        serde_json::from_str(&body).map_err(|e| OpenAiError::Unexpected(format!("not JSON: {e}")))
    }

    /// One channel (a WAV file) to lines with timestamps, all spoken by `speaker`.
    pub async fn transcribe(&self, wav: Vec<u8>, language: &str, speaker: Speaker) -> Result<Vec<Line>, OpenAiError> {
        self.transcribe_file(wav, "wav", language, speaker).await
    }

    /// Audio in a format the API reads by its extension (`ogg`, `mp3`, `m4a`, `wav`, `webm`):
    /// a WhatsApp voice note is Ogg Opus.
    pub async fn transcribe_file(
        &self,
        audio: Vec<u8>,
        extension: &str,
        language: &str,
        speaker: Speaker,
    ) -> Result<Vec<Line>, OpenAiError> {
        let file = reqwest::multipart::Part::bytes(audio).file_name(format!("audio.{extension}"));
        let form = reqwest::multipart::Form::new()
            .part("file", file)
            .text("model", self.settings.transcribe_model.clone())
            .text("language", language.to_string())
            .text("response_format", "verbose_json")
            .text("timestamp_granularities[]", "segment");
        let answer = self.send(self.http.post(format!("{}/audio/transcriptions", self.settings.base_url)).multipart(form)).await?;
        let ms = |v: &Value| (v.as_f64().unwrap_or(0.0) * 1000.0).round() as u64;
        let lines: Vec<Line> = match answer["segments"].as_array() {
            Some(segments) => segments
                .iter()
                .map(|s| Line {
                    speaker,
                    start_ms: ms(&s["start"]),
                    end_ms: ms(&s["end"]),
                    text: s["text"].as_str().unwrap_or("").trim().to_string(),
                })
                .filter(|l| !l.text.is_empty())
                .collect(),
            // A model without segments: the whole text as one line.
            None => {
                let text = answer["text"].as_str().ok_or_else(|| OpenAiError::Unexpected("no text in the transcription".into()))?;
                let end = ms(&answer["duration"]);
                vec![Line { speaker, start_ms: 0, end_ms: end, text: text.trim().to_string() }]
                    .into_iter()
                    .filter(|l| !l.text.is_empty())
                    .collect()
            }
        };
        Ok(lines)
    }

    /// The next message of a conversation: `history` is (role, text), oldest first.
    pub async fn reply(&self, system: &str, history: &[(&str, String)]) -> Result<String, OpenAiError> {
        let mut messages = vec![json!({ "role": "system", "content": system })];
        messages.extend(history.iter().map(|(role, text)| json!({ "role": role, "content": text })));
        let body = json!({ "model": self.settings.extract_model, "messages": messages });
        let answer =
            self.send(self.http.post(format!("{}/chat/completions", self.settings.base_url)).timeout(CHAT_TIMEOUT).json(&body)).await?;
        let text =
            answer["choices"][0]["message"]["content"].as_str().ok_or_else(|| OpenAiError::Unexpected("no message content".into()))?;
        Ok(text.trim().to_string())
    }

    /// The transcript's fields under `schema`, by the extraction model.
    pub async fn extract(&self, transcript: &str, schema: &Value, language: &str) -> Result<Value, OpenAiError> {
        let system = format!(
            "You read the transcript of a phone call between a caller and a business's AI agent. \
             Fill in the JSON schema from what was said; use null where the call does not say. \
             Write the summary and intent in the call's language ({language})."
        );
        let body = json!({
            "model": self.settings.extract_model,
            "messages": [{ "role": "system", "content": system }, { "role": "user", "content": transcript }],
            "response_format": { "type": "json_schema", "json_schema": { "name": "call_extraction", "strict": true, "schema": schema } }
        });
        let answer =
            self.send(self.http.post(format!("{}/chat/completions", self.settings.base_url)).timeout(CHAT_TIMEOUT).json(&body)).await?;
        let content =
            answer["choices"][0]["message"]["content"].as_str().ok_or_else(|| OpenAiError::Unexpected("no message content".into()))?;
        serde_json::from_str(content).map_err(|e| OpenAiError::Unexpected(format!("extraction is not JSON: {e}")))
    }
}
