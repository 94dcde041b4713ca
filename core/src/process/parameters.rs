//! Secrets from SSM Parameter Store, read once at start: in AWS the template passes the
//! *name* of each secret's parameter (`TWILIO_AUTH_TOKEN_SSM_PARAMETER` and so on), never the
//! value, so no secret sits in a function's or task's configuration. Locally the secrets come
//! from the environment as before.

use std::collections::HashMap;

/// The settings that may come from SSM, each by `<NAME>_SSM_PARAMETER`.
pub const SECRET_SETTINGS: [&str; 6] = [
    "TWILIO_AUTH_TOKEN",
    "TWILIO_AUTH_TOKEN_SECONDARY",
    "STREAM_TOKEN_SECRET",
    "OPENAI_API_KEY",
    "EVENTS_WEBHOOK_SECRET",
    "TOOLS_WEBHOOK_SECRET",
];

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

/// Reads every `(setting, parameter)` decrypted in one `GetParameters` request (a cold start
/// waits for it; three secrets fit well inside its ten names). Every failure is named.
pub async fn fetch(client: &aws_sdk_ssm::Client, wanted: Vec<(&'static str, String)>) -> Result<HashMap<String, String>, ParameterError> {
    let mut names: Vec<String> = wanted.iter().map(|(_, parameter)| parameter.clone()).collect();
    names.sort();
    names.dedup();
    let out = client.get_parameters().set_names(Some(names.clone())).with_decryption(true).send().await.map_err(|e| {
        let reason = aws_sdk_ssm::error::DisplayErrorContext(&e);
        ParameterError(vec![format!("could not read parameters {}: {reason}", names.join(", "))])
    })?;
    // The API takes a name or an ARN, so a result is matched on either.
    let found = |parameter: &str| {
        out.parameters().iter().find(|p| p.name() == Some(parameter) || p.arn() == Some(parameter)).and_then(|p| p.value())
    };
    let mut values = HashMap::new();
    let mut errors = Vec::new();
    for (secret, parameter) in wanted {
        let setting = parameter_setting(secret);
        match found(&parameter) {
            Some(value) if !value.trim().is_empty() => {
                values.insert(secret.to_string(), value.to_string());
            }
            Some(_) => errors.push(format!("{setting}: parameter {parameter} is empty")),
            None => errors.push(format!("{setting}: could not read parameter {parameter}: not found")),
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
