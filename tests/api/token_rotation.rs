//! Rotating Twilio's auth token without a 403: with `TWILIO_AUTH_TOKEN_SECONDARY` set, a webhook
//! or a stream signed with either token is Twilio's, and the REST API is called with whichever
//! token Twilio takes (the primary is refused once the secondary is promoted).

use crate::common;

use callkeeper::media_client::{Dial, MediaCall, Refused};
use callkeeper_core::ids::{random_sid, CallSid};
use callkeeper_core::signature::{compute, Algorithm};
use callkeeper_core::twilio_rest::{CallUpdate, Updated};
use common::*;
use wiremock::matchers::{header, method, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

const NEW_TOKEN: &str = "new-auth-token-fedcba9876543210";

fn signed_by(token: &str, path: &str, form: &[(String, String)]) -> String {
    compute(token.as_bytes(), Algorithm::HmacSha1, &format!("https://ck.example.com{path}"), form)
}

#[tokio::test]
async fn webhooks_and_streams_signed_with_either_token_are_accepted_and_no_other() {
    let app = spawn_app_with(&[("TWILIO_AUTH_TOKEN_SECONDARY", NEW_TOKEN)]).await;
    let path = "/webhook/incoming_call";
    for token in [AUTH_TOKEN, NEW_TOKEN] {
        let form = incoming_call_form(&new_call_sid(), "+972501234567");
        let response = app.post_signed(path, &form, Some(&signed_by(token, path, &form))).await;
        assert_eq!(response.status(), 200, "signed with {token}");
    }
    let form = incoming_call_form(&new_call_sid(), "+972501234567");
    let response = app.post_signed(path, &form, Some(&signed_by("some-other-token-000000000000000", path, &form))).await;
    assert_eq!(response.status(), 403);
    // The stream's upgrade, signed with the new token.
    let dial = |token| Dial {
        connect_to: app.addr,
        public_url: STREAM_URL,
        path: "/ws/twilio-media",
        auth_token: Some(token),
        offer_subprotocol: true,
        tls: false,
    };
    assert!(MediaCall::dial(&dial(NEW_TOKEN), &random_sid("MZ")).await.is_ok());
    let refused = MediaCall::dial(&dial("some-other-token-000000000000000"), &random_sid("MZ")).await.err().unwrap();
    assert_eq!(refused.downcast::<Refused>().unwrap().status, 403);
}

#[tokio::test]
async fn without_a_secondary_token_the_new_one_is_refused() {
    let app = spawn_app().await;
    let path = "/webhook/incoming_call";
    let form = incoming_call_form(&new_call_sid(), "+972501234567");
    assert_eq!(app.post_signed(path, &form, Some(&signed_by(NEW_TOKEN, path, &form))).await.status(), 403);
}

#[tokio::test]
async fn the_rest_api_goes_on_with_the_secondary_once_the_primary_is_refused() {
    let twilio = MockServer::start().await;
    let basic = |token: &str| {
        use base64::Engine;
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{ACCOUNT_SID}:{token}")))
    };
    Mock::given(method("POST"))
        .and(path_regex(r"/Calls/CA[0-9a-f]{32}\.json$"))
        .and(header("authorization", basic(NEW_TOKEN).as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({ "status": "in-progress" })))
        .mount(&twilio)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(r"/Calls/CA[0-9a-f]{32}\.json$"))
        .and(header("authorization", basic(AUTH_TOKEN).as_str()))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(serde_json::json!({ "code": 20003, "message": "Authenticate", "status": 401 })),
        )
        .mount(&twilio)
        .await;
    let app = spawn_app_with(&[("TWILIO_AUTH_TOKEN_SECONDARY", NEW_TOKEN), ("TWILIO_API_BASE", &twilio.uri())]).await;
    let rest = app.config.twilio_rest();
    let sid = CallSid::parse(&new_call_sid()).unwrap();
    for _ in 0..3 {
        let updated = rest.update_call(&sid, &CallUpdate::Complete).await.unwrap();
        assert_eq!(updated, Updated::Done { status: "in-progress".into() });
    }
    // The primary was tried once; after that the token Twilio took goes first.
    let with_old = twilio
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.headers.get("authorization").unwrap() == basic(AUTH_TOKEN).as_str())
        .count();
    assert_eq!(with_old, 1);
}
