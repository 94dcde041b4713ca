//! Secrets by SSM parameter name, read the way a deployed function or the relay reads them at
//! start, against moto_server's SSM.

use callkeeper_core::parameters::{fetch, wanted};
use callkeeper_core::store::contract::require_moto;

fn lookup(pairs: Vec<(&'static str, String)>) -> impl Fn(&str) -> Option<String> {
    move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone())
}

async fn put_secure(ssm: &aws_sdk_ssm::Client, name: &str, value: &str) {
    ssm.put_parameter().name(name).value(value).r#type(aws_sdk_ssm::types::ParameterType::SecureString).send().await.unwrap();
}

#[tokio::test]
async fn secure_strings_are_read_decrypted_and_a_missing_one_is_named() {
    let sdk = require_moto().await;
    let ssm = aws_sdk_ssm::Client::new(&sdk);
    let prefix = format!("/callkeeper-test/{}", callkeeper_core::secrets::Secret::generate().expose());
    let token_name = format!("{prefix}/twilio-auth-token");
    put_secure(&ssm, &token_name, "twilio-token-from-ssm").await;
    let secret_name = format!("{prefix}/stream-token-secret");
    put_secure(&ssm, &secret_name, "stream-secret-from-ssm").await;

    let env = lookup(vec![("TWILIO_AUTH_TOKEN_SSM_PARAMETER", token_name.clone()), ("PUBLIC_BASE_URL", "https://x".into())]);
    let values = fetch(&ssm, wanted(&env).unwrap()).await.unwrap();
    assert_eq!(values.len(), 1);
    assert_eq!(values["TWILIO_AUTH_TOKEN"], "twilio-token-from-ssm");

    // Both in one request.
    let env = lookup(vec![("TWILIO_AUTH_TOKEN_SSM_PARAMETER", token_name.clone()), ("STREAM_TOKEN_SECRET_SSM_PARAMETER", secret_name)]);
    let values = fetch(&ssm, wanted(&env).unwrap()).await.unwrap();
    assert_eq!(values.len(), 2);
    assert_eq!(values["TWILIO_AUTH_TOKEN"], "twilio-token-from-ssm");
    assert_eq!(values["STREAM_TOKEN_SECRET"], "stream-secret-from-ssm");

    let missing = format!("{prefix}/openai-key");
    let env = lookup(vec![("TWILIO_AUTH_TOKEN_SSM_PARAMETER", token_name), ("OPENAI_API_KEY_SSM_PARAMETER", missing.clone())]);
    let err = fetch(&ssm, wanted(&env).unwrap()).await.unwrap_err().to_string();
    assert_eq!(err, format!("secrets: OPENAI_API_KEY_SSM_PARAMETER: could not read parameter {missing}: not found"));

    // A blank value is named too, not taken as a secret.
    let blank = format!("{prefix}/blank");
    put_secure(&ssm, &blank, " ").await;
    let env = lookup(vec![("OPENAI_API_KEY_SSM_PARAMETER", blank.clone())]);
    let err = fetch(&ssm, wanted(&env).unwrap()).await.unwrap_err().to_string();
    assert_eq!(err, format!("secrets: OPENAI_API_KEY_SSM_PARAMETER: parameter {blank} is empty"));
}

#[tokio::test]
async fn an_unreachable_ssm_names_every_parameter_it_could_not_read() {
    // Nothing listens on port 1: the request fails, and start-up must say which secrets it lacks.
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url("http://127.0.0.1:1")
        .region(aws_config::Region::new("eu-west-1"))
        .credentials_provider(aws_sdk_ssm::config::Credentials::new("test", "test", None, None, "test"))
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .load()
        .await;
    let ssm = aws_sdk_ssm::Client::new(&sdk);
    let env = lookup(vec![("TWILIO_AUTH_TOKEN_SSM_PARAMETER", "/ck/twilio".into()), ("OPENAI_API_KEY_SSM_PARAMETER", "/ck/openai".into())]);
    let err = fetch(&ssm, wanted(&env).unwrap()).await.unwrap_err().to_string();
    assert!(err.starts_with("secrets: could not read parameters /ck/openai, /ck/twilio: "), "{err}");
}
