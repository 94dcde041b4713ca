//! The doctor's checks of what callkeeper stands on: OpenAI, the store, the events receiver.

use super::twilio::plain;
use super::{last4, Check, Options};
use callkeeper_core::config::{Config, VoiceAgentKind};
use callkeeper_core::event_delivery::signed_post;
use callkeeper_core::job::QueueName;
use callkeeper_relay::agent::openai::connection::Connection;
use callkeeper_relay::agent::openai::protocol;

/// The key, the models the settings name, and a Realtime session that confirms μ-law both ways.
pub async fn openai(config: &Config, http: &reqwest::Client) -> Vec<Check> {
    let Some(openai) = &config.openai else {
        return vec![Check::fail(
            "openai",
            "OPENAI_API_KEY is not set: the agent and the transcripts need it (platform.openai.com → API keys)",
        )];
    };
    let key = last4(openai.api_key.expose());
    let get = |path: String| http.get(format!("{}{path}", openai.base_url)).bearer_auth(openai.api_key.expose()).send();
    let mut checks = Vec::new();
    match get("/models".into()).await {
        Ok(r) if r.status().is_success() => checks.push(Check::pass("openai key", format!("OPENAI_API_KEY {key} works"))),
        Ok(r) if r.status() == 401 => {
            checks.push(Check::fail(
                "openai key",
                format!("OpenAI refused OPENAI_API_KEY {key} (401): set a valid key (platform.openai.com → API keys)"),
            ));
            checks.push(Check::fail("openai models", "not run: the key was refused"));
            checks.push(Check::fail("openai realtime", "not run: the key was refused"));
            return checks;
        }
        Ok(r) => checks.push(Check::fail(
            "openai key",
            format!(
                "OpenAI answered HTTP {} to the models list with OPENAI_API_KEY {key}: check the key's project and permissions",
                r.status().as_u16()
            ),
        )),
        Err(e) => checks.push(Check::fail(
            "openai key",
            format!("{} did not answer ({}): check OPENAI_BASE_URL and this machine's network", openai.base_url, plain(&e)),
        )),
    }
    let mut wanted = vec![
        ("OPENAI_REALTIME_MODEL", config.realtime.model.as_str()),
        ("REALTIME_TRANSCRIBE_MODEL", config.realtime.transcribe_model.as_str()),
        ("OPENAI_TRANSCRIBE_MODEL", openai.transcribe_model.as_str()),
        ("OPENAI_EXTRACT_MODEL", openai.extract_model.as_str()),
    ];
    let mut seen = std::collections::HashSet::new();
    wanted.retain(|(_, model)| seen.insert(*model));
    let mut missing = Vec::new();
    for (setting, model) in &wanted {
        match get(format!("/models/{model}")).await {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => missing.push(format!("{setting} {model} (HTTP {})", r.status().as_u16())),
            Err(e) => missing.push(format!("{setting} {model} ({})", plain(&e))),
        }
    }
    let names: Vec<&str> = wanted.iter().map(|(_, m)| *m).collect();
    checks.push(if missing.is_empty() {
        Check::pass("openai models", format!("{} exist", names.join(", ")))
    } else {
        Check::fail(
            "openai models",
            format!("not available to this key: {}; set the setting to a model the project has", missing.join(", ")),
        )
    });
    checks.push(realtime(config, openai).await);
    checks
}

/// Opens a Realtime session as the relay does, waits for `session.updated` to confirm μ-law
/// both ways, and closes it before any audio.
async fn realtime(config: &Config, openai: &callkeeper_core::config::OpenAiSettings) -> Check {
    if config.relay.voice_agent != VoiceAgentKind::OpenAi {
        return Check::pass("openai realtime", format!("not used: VOICE_AGENT={}", config.relay.voice_agent.as_str()));
    }
    let profile = config.builtin_profile();
    let update = protocol::session_update(&profile, &config.realtime, &protocol::tools(&profile, config.transfer_number.is_some()));
    match Connection::open(&config.realtime, &openai.api_key, update, callkeeper_relay::trace::Tracer::off()).await {
        Ok(connection) => {
            connection.close().await;
            Check::pass(
                "openai realtime",
                format!("{} confirmed audio/pcmu in and out (session.updated), closed with no audio", config.realtime.model),
            )
        }
        Err(e) => Check::fail(
            "openai realtime",
            format!("{e}: check OPENAI_REALTIME_URL, OPENAI_REALTIME_MODEL and the key's access to the Realtime API"),
        ),
    }
}

/// The calls table, the bucket and the queues answer with this identity; no dead letters wait.
pub async fn store(config: &Config, options: &Options<'_>) -> Vec<Check> {
    let kind = options.store.as_str();
    let stores = match super::open_store(config, options).await {
        Ok(stores) => stores,
        Err(why) => return vec![Check::fail("store", why)],
    };
    let fix = "check CALLKEEPER_TABLE, CALLKEEPER_BUCKET and the queue names, and this identity's permissions";
    let mut checks = Vec::new();
    checks.push(match stores.calls.ping().await {
        Ok(()) => Check::pass("store calls", format!("{kind}: the calls table answers")),
        Err(e) => Check::fail("store calls", format!("{kind}: {e}: {fix}")),
    });
    checks.push(agent_tools(config, stores.calls.as_ref()).await);
    checks.push(match stores.blobs.get("doctor/absent.wav").await {
        Ok(_) => Check::pass("store recordings", format!("{kind}: the recordings' bucket answers")),
        Err(e) => Check::fail("store recordings", format!("{kind}: {e}: {fix}")),
    });
    let mut depths = Vec::new();
    for queue in QueueName::ALL {
        match stores.queue.depth(queue).await {
            Ok(depth) => depths.push((queue, depth)),
            Err(e) => checks.push(Check::fail("store queues", format!("{} queue: {e}: {fix}", queue.as_str()))),
        }
    }
    if depths.len() == QueueName::ALL.len() {
        let waiting: Vec<String> = depths.iter().map(|(q, d)| format!("{} {}", q.as_str(), d.visible)).collect();
        checks.push(Check::pass("store queues", format!("{kind}: waiting: {}", waiting.join(", "))));
        let dead: Vec<String> = depths.iter().filter(|(_, d)| d.dead > 0).map(|(q, d)| format!("{} in {}", d.dead, q.as_str())).collect();
        checks.push(if dead.is_empty() {
            Check::pass("dead letters", "none")
        } else {
            Check::fail(
                "dead letters",
                format!(
                    "{}: read them with `callkeeper dlq list --queue NAME`, fix the cause, then `callkeeper dlq redrive --queue NAME`",
                    dead.join(", ")
                ),
            )
        });
    }
    checks
}

/// The business tools the stored profiles declare can be called: their requests are signed only
/// with `TOOLS_WEBHOOK_SECRET`, and without it each answers the model "not configured".
async fn agent_tools(config: &Config, store: &dyn callkeeper_core::store::ProfilesPort) -> Check {
    let profiles = match store.profiles().await {
        Ok(profiles) => profiles,
        Err(e) => return Check::fail("agent tools", format!("the profiles could not be read: {e}")),
    };
    let tools: Vec<String> =
        profiles.iter().flat_map(|p| p.profile.tools.iter().map(move |t| format!("{} ({})", t.name, p.key.as_str()))).collect();
    match (&config.tools_secret, tools.is_empty()) {
        (_, true) => Check::pass("agent tools", "no profile declares an HTTP tool"),
        (Some(secret), false) => {
            Check::pass("agent tools", format!("{}; signed with TOOLS_WEBHOOK_SECRET {}", tools.join(", "), super::last4(secret.expose())))
        }
        (None, false) => Check::fail(
            "agent tools",
            format!(
                "{} declared, but TOOLS_WEBHOOK_SECRET is not set, so none is called: set it (16+ characters; in AWS the ToolsWebhookSecretParameter) and give the business the same secret",
                tools.join(", ")
            ),
        ),
    }
}

/// A signed ping to `EVENTS_WEBHOOK_URL`, as deliveries are signed: any 2xx is a receiver.
pub async fn events(config: &Config, http: &reqwest::Client) -> Check {
    let Some(events) = &config.events else {
        return Check::pass("events webhook", "not set (EVENTS_WEBHOOK_URL): no events are sent out");
    };
    let id = callkeeper_core::ids::random_sid("ev");
    let body = serde_json::json!({ "id": id, "type": "doctor.ping", "at": callkeeper_core::time::now_ms(), "data": {} }).to_string();
    let answer = signed_post(http, events, &id, body).send().await;
    // The URL is not shown: many receivers keep their secret in it.
    match answer {
        Ok(r) if r.status().is_success() => Check::pass("events webhook", format!("a signed ping was answered HTTP {}", r.status().as_u16())),
        Ok(r) => Check::fail("events webhook", format!("a signed ping was answered HTTP {}: the receiver must answer 2xx to a signed POST and check EVENTS_WEBHOOK_SECRET (docs/events.md)", r.status().as_u16())),
        Err(e) => Check::fail("events webhook", format!("EVENTS_WEBHOOK_URL did not answer ({}): check the URL and the receiver", plain(&e))),
    }
}
