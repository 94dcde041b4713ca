//! Secrets from SSM Parameter Store, read once at start: in AWS the template passes the
//! *name* of each secret's parameter (`TWILIO_AUTH_TOKEN_SSM_PARAMETER` and so on), never the
//! value, so no secret sits in a function's or task's configuration. Locally the secrets come
//! from the environment as before.

use std::collections::HashMap;

/// The settings that may come from SSM, each by `<NAME>_SSM_PARAMETER`.
pub const SECRET_SETTINGS: [&str; 3] = ["TWILIO_AUTH_TOKEN", "STREAM_TOKEN_SECRET", "OPENAI_API_KEY"];

/// The setting that names a secret's parameter.
pub fn parameter_setting(secret: &str) -> String {
    format!("{secret}_SSM_PARAMETER")
}

#[derive(Debug, thiserror::Error)]
#[error("secrets: {}", .0.join("; "))]
pub struct ParameterError(pub Vec<String>);

/// Which secrets `lookup` names by parameter: `(setting, parameter name)`. Setting both the
/// value and its parameter is an error, so nobody wonders which one is used.
pub fn wanted(lookup: &impl Fn(&str) -> Option<String>) -> Result<Vec<(&'static str, String)>, ParameterError> {
    let get = |name: &str| lookup(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    let mut wanted = Vec::new();
    let mut errors = Vec::new();
    for secret in SECRET_SETTINGS {
        let setting = parameter_setting(secret);
        match (get(&setting), get(secret)) {
            (Some(_), Some(_)) => errors.push(format!("set {secret} or {setting}, not both")),
            (Some(parameter), None) => wanted.push((secret, parameter)),
            (None, _) => {}
        }
    }
    if errors.is_empty() {
        Ok(wanted)
    } else {
        Err(ParameterError(errors))
    }
}

/// Reads the secrets `lookup` names by parameter, as settings to lay over the environment.
/// Nothing is asked of AWS when no parameter is named.
pub async fn resolve(lookup: &impl Fn(&str) -> Option<String>) -> Result<HashMap<String, String>, ParameterError> {
    let wanted = wanted(lookup)?;
    if wanted.is_empty() {
        return Ok(HashMap::new());
    }
    let client = aws_sdk_ssm::Client::new(&crate::store::aws::sdk_config().await);
    fetch(&client, wanted).await
}

/// Reads each `(setting, parameter)` decrypted; every failure is named.
pub async fn fetch(client: &aws_sdk_ssm::Client, wanted: Vec<(&'static str, String)>) -> Result<HashMap<String, String>, ParameterError> {
    let mut values = HashMap::new();
    let mut errors = Vec::new();
    for (secret, parameter) in wanted {
        let setting = parameter_setting(secret);
        match client.get_parameter().name(&parameter).with_decryption(true).send().await {
            Ok(out) => match out.parameter.and_then(|p| p.value).filter(|v| !v.trim().is_empty()) {
                Some(value) => {
                    values.insert(secret.to_string(), value);
                }
                None => errors.push(format!("{setting}: parameter {parameter} is empty")),
            },
            Err(e) => {
                let reason = match e.as_service_error() {
                    Some(service) if service.is_parameter_not_found() => "not found".to_string(),
                    _ => aws_sdk_ssm::error::DisplayErrorContext(&e).to_string(),
                };
                errors.push(format!("{setting}: could not read parameter {parameter}: {reason}"));
            }
        }
    }
    if errors.is_empty() {
        Ok(values)
    } else {
        Err(ParameterError(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    #[test]
    fn names_only_the_secrets_given_by_parameter() {
        let got = wanted(&lookup(&[("TWILIO_AUTH_TOKEN_SSM_PARAMETER", "/ck/twilio"), ("OPENAI_API_KEY", "sk-local")])).unwrap();
        assert_eq!(got, vec![("TWILIO_AUTH_TOKEN", "/ck/twilio".to_string())]);
        assert!(wanted(&lookup(&[("OPENAI_API_KEY_SSM_PARAMETER", "  ")])).unwrap().is_empty());
    }

    #[test]
    fn a_value_and_its_parameter_together_are_refused() {
        let err = wanted(&lookup(&[("TWILIO_AUTH_TOKEN", "tok"), ("TWILIO_AUTH_TOKEN_SSM_PARAMETER", "/ck/twilio")])).unwrap_err();
        assert_eq!(err.to_string(), "secrets: set TWILIO_AUTH_TOKEN or TWILIO_AUTH_TOKEN_SSM_PARAMETER, not both");
    }
}
