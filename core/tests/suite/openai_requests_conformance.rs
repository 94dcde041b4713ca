//! callkeeper's OpenAI HTTP requests (a recording's transcription, the post-call extraction, a
//! WhatsApp reply), as a fake OpenAI over loopback receives them, read by the openai package's
//! own request types (`scripts/openai_requests_conformance.py`, in the venv `scripts/test.sh`
//! makes): every parameter valid for its type, none the types do not declare.

use callkeeper_core::config::{default_extraction_schema, OpenAiSettings};
use callkeeper_core::openai::OpenAi;
use callkeeper_core::secrets::Secret;
use callkeeper_core::test_support::venv_python;
use callkeeper_core::transcript::Speaker;
use serde_json::{json, Map, Value};
use std::io::Write;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

/// A multipart form's fields as the SDK's types take them: `name[]` fields as one list, the file
/// as its file name.
fn multipart_params(request: &Request) -> Map<String, Value> {
    let content_type = request.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let boundary = content_type.split("boundary=").nth(1).expect("a multipart boundary");
    let body = String::from_utf8_lossy(&request.body);
    let mut params = Map::new();
    for part in body.split(&format!("--{boundary}")).filter(|p| p.contains("Content-Disposition")) {
        let (head, value) = part.split_once("\r\n\r\n").expect("a part has headers and a body");
        let attr = |name: &str| head.split(&format!("{name}=\"")).nth(1).and_then(|rest| rest.split('"').next()).map(str::to_string);
        let name = attr("name").expect("a part has a name");
        let value = match attr("filename") {
            Some(file_name) => json!(file_name),
            None => json!(value.trim_end_matches("\r\n")),
        };
        match name.strip_suffix("[]") {
            Some(list) => params.entry(list).or_insert_with(|| json!([])).as_array_mut().unwrap().push(value),
            None => {
                params.insert(name, value);
            }
        }
    }
    params
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_openai_request_is_one_the_sdk_types_take() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/audio/transcriptions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "text": "שלום", "duration": 1.0, "segments": [{ "start": 0.0, "end": 1.0, "text": "שלום" }],
        })))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "choices": [{ "message": { "role": "assistant", "content": "{\"summary\": \"x\"}" } }],
        })))
        .mount(&server)
        .await;
    let openai = OpenAi::new(OpenAiSettings {
        api_key: Secret::new("sk-test"),
        base_url: format!("{}/v1", server.uri()),
        transcribe_model: "whisper-1".into(),
        extract_model: "gpt-4o-mini".into(),
    });
    openai.transcribe(b"RIFF....WAVE".to_vec(), "he", Speaker::Caller).await.unwrap();
    openai.transcribe_file(b"OggS".to_vec(), "ogg", "he", Speaker::Caller).await.unwrap();
    openai.extract("caller: שלום", &default_extraction_schema(), "he-IL").await.unwrap();
    let history = [("user", "יש לכם תור מחר?".to_string()), ("assistant", "כן, בעשר.".to_string())];
    openai.reply("You answer WhatsApp messages for a clinic.", &history).await.unwrap();

    let requests: Vec<Value> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| match r.url.path() {
            "/v1/audio/transcriptions" => json!({ "endpoint": "audio.transcriptions", "params": multipart_params(r) }),
            _ => json!({ "endpoint": "chat.completions", "params": serde_json::from_slice::<Value>(&r.body).unwrap() }),
        })
        .collect();
    assert_eq!(requests.len(), 4);
    let input = serde_json::to_string(&requests).unwrap();
    let out = tokio::task::spawn_blocking(move || venv_python("scripts/openai_requests_conformance.py", &input)).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let _ = writeln!(std::io::stderr(), "the openai package read: {stdout}");
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
}
