//! The part of JSON Schema a business writes a tool's parameters in, and the check of a model's
//! arguments against it before any request leaves.
//!
//! A schema may use only the keywords in [`KEYWORDS`]; [`check_schema`] refuses any other, so
//! nothing a business writes is silently left unchecked. The model is told the same schema, so
//! what it is asked for and what is enforced are one thing.

use serde_json::Value;

/// Keywords a tool's schema may use: the ones [`validate`] enforces, and annotations.
pub const KEYWORDS: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "enum",
    "items",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    // Annotations: shown to the model, not enforced.
    "description",
    "title",
    "examples",
    "format",
];

const TYPES: &[&str] = &["object", "array", "string", "number", "integer", "boolean", "null"];

/// Whether `schema` is one this module can enforce: `at` names where it is, for the error.
pub fn check_schema(schema: &Value, at: &str) -> Result<(), String> {
    let Some(map) = schema.as_object() else { return Err(format!("{at} must be a table (a JSON schema object)")) };
    for key in map.keys() {
        if !KEYWORDS.contains(&key.as_str()) {
            return Err(format!("{at}: the keyword {key:?} is not supported (use {})", KEYWORDS.join(", ")));
        }
    }
    let types: Vec<&str> = match &map.get("type") {
        None => return Err(format!("{at} has no type")),
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        Some(_) => return Err(format!("{at}: type must be a name or a list of names")),
    };
    if let Some(bad) = types.iter().find(|t| !TYPES.contains(t)) {
        return Err(format!("{at}: type {bad:?} is not one of {}", TYPES.join(", ")));
    }
    if let Some(properties) = map.get("properties") {
        let Some(properties) = properties.as_object() else { return Err(format!("{at}.properties must be a table")) };
        for (name, field) in properties {
            check_schema(field, &format!("{at}.properties.{name}"))?;
        }
    }
    if let Some(required) = map.get("required") {
        let names = required.as_array().filter(|r| r.iter().all(Value::is_string));
        let Some(names) = names else { return Err(format!("{at}.required must be a list of field names")) };
        for name in names.iter().filter_map(Value::as_str) {
            if map.get("properties").and_then(|p| p.get(name)).is_none() {
                return Err(format!("{at}.required names {name:?}, which is not in its properties"));
            }
        }
    }
    if map.get("additionalProperties").is_some_and(|a| !a.is_boolean()) {
        return Err(format!("{at}.additionalProperties must be true or false"));
    }
    if map.get("enum").is_some_and(|e| !e.is_array()) {
        return Err(format!("{at}.enum must be a list"));
    }
    if let Some(items) = map.get("items") {
        check_schema(items, &format!("{at}.items"))?;
    }
    for bound in ["minimum", "maximum"] {
        if map.get(bound).is_some_and(|b| !b.is_number()) {
            return Err(format!("{at}.{bound} must be a number"));
        }
    }
    for bound in ["minLength", "maxLength", "minItems", "maxItems"] {
        if map.get(bound).is_some_and(|b| !b.is_u64()) {
            return Err(format!("{at}.{bound} must be a whole number"));
        }
    }
    Ok(())
}

/// The first way `value` breaks `schema` (a schema [`check_schema`] accepted), as a sentence
/// the model can act on; `at` names the value (`arguments`).
pub fn validate(schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if !types.is_empty() && !types.iter().any(|t| is_type(value, t)) {
        return Err(format!("{at} must be {}, not {}", types.join(" or "), type_of(value)));
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(value) {
            let names: Vec<String> = allowed.iter().map(Value::to_string).collect();
            return Err(format!("{at} must be one of {}", names.join(", ")));
        }
    }
    match value {
        Value::Object(fields) => {
            for name in schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                if fields.get(name).is_none_or(Value::is_null) && !types_of(&schema["properties"][name]).contains(&"null") {
                    return Err(format!("{at}.{name} is required"));
                }
            }
            for (name, field) in fields {
                match schema["properties"].get(name) {
                    Some(field_schema) => validate(field_schema, field, &format!("{at}.{name}"))?,
                    None if schema["additionalProperties"] == false => return Err(format!("{at} has no field {name:?}")),
                    None => {}
                }
            }
        }
        Value::Array(items) => {
            let n = items.len() as u64;
            if schema["minItems"].as_u64().is_some_and(|min| n < min) || schema["maxItems"].as_u64().is_some_and(|max| n > max) {
                return Err(format!("{at} has {n} items, outside the allowed count"));
            }
            if schema.get("items").is_some() {
                for (i, item) in items.iter().enumerate() {
                    validate(&schema["items"], item, &format!("{at}[{i}]"))?;
                }
            }
        }
        Value::String(text) => {
            let n = text.chars().count() as u64;
            if schema["minLength"].as_u64().is_some_and(|min| n < min) {
                return Err(format!("{at} must be at least {} characters", schema["minLength"]));
            }
            if schema["maxLength"].as_u64().is_some_and(|max| n > max) {
                return Err(format!("{at} must be at most {} characters", schema["maxLength"]));
            }
        }
        Value::Number(number) => {
            let x = number.as_f64().unwrap_or(f64::NAN);
            if schema["minimum"].as_f64().is_some_and(|min| x < min) {
                return Err(format!("{at} must be at least {}", schema["minimum"]));
            }
            if schema["maximum"].as_f64().is_some_and(|max| x > max) {
                return Err(format!("{at} must be at most {}", schema["maximum"]));
            }
        }
        _ => {}
    }
    Ok(())
}

fn types_of(schema: &Value) -> Vec<&str> {
    match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    }
}

fn is_type(value: &Value, name: &str) -> bool {
    match name {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "number" => value.is_number(),
        "integer" => value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|x| x.fract() == 0.0),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        _ => false,
    }
}

fn type_of(value: &Value) -> &'static str {
    match value {
        Value::Object(_) => "an object",
        Value::Array(_) => "a list",
        Value::String(_) => "a string",
        Value::Number(_) => "a number",
        Value::Bool(_) => "true or false",
        Value::Null => "null",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn listing() -> Value {
        json!({
            "type": "object",
            "required": ["listing"],
            "additionalProperties": false,
            "properties": {
                "listing": { "type": "string", "minLength": 2, "description": "The street" },
                "rooms": { "type": "integer", "minimum": 1, "maximum": 12 },
                "when": { "type": ["string", "null"], "enum": ["morning", "evening", null] },
                "tags": { "type": "array", "items": { "type": "string" }, "maxItems": 2 }
            }
        })
    }

    #[test]
    fn a_schema_with_unknown_keywords_is_refused() {
        assert!(check_schema(&listing(), "parameters").is_ok());
        let e = check_schema(&json!({ "type": "object", "properties": { "id": { "type": "string", "pattern": "^[0-9]+$" } } }), "p")
            .unwrap_err();
        assert!(e.contains("p.properties.id: the keyword \"pattern\" is not supported"), "{e}");
        assert!(check_schema(&json!({ "type": "thing" }), "p").unwrap_err().contains("not one of"));
        assert!(check_schema(&json!({ "type": "object", "required": ["x"] }), "p").unwrap_err().contains("not in its properties"));
        assert!(check_schema(&json!({ "properties": {} }), "p").unwrap_err().contains("no type"));
    }

    #[test]
    fn arguments_are_checked_field_by_field() {
        let schema = listing();
        assert!(validate(&schema, &json!({ "listing": "Herzl 12", "rooms": 3, "when": null, "tags": ["a"] }), "arguments").is_ok());
        let cases = [
            (json!({}), "arguments.listing is required"),
            (json!({ "listing": 5 }), "arguments.listing must be string, not a number"),
            (json!({ "listing": "x" }), "at least 2 characters"),
            (json!({ "listing": "Herzl", "rooms": 40 }), "arguments.rooms must be at most 12"),
            (json!({ "listing": "Herzl", "rooms": 2.5 }), "must be integer"),
            (json!({ "listing": "Herzl", "when": "noon" }), "arguments.when must be one of"),
            (json!({ "listing": "Herzl", "tags": ["a", "b", "c"] }), "3 items"),
            (json!({ "listing": "Herzl", "tags": [1] }), "arguments.tags[0] must be string"),
            (json!({ "listing": "Herzl", "price": 1 }), "arguments has no field \"price\""),
            (json!("Herzl"), "arguments must be object"),
        ];
        for (value, error) in cases {
            let e = validate(&schema, &value, "arguments").unwrap_err();
            assert!(e.contains(error), "{value}: {e}");
        }
    }
}
