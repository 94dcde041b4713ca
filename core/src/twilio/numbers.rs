//! Where a phone number's calls and messages go: what this deployment needs a number's settings
//! on Twilio to be, and how a number differs from it. `callkeeper twilio configure` sets them
//! through the IncomingPhoneNumbers API; `callkeeper doctor` checks them.

use crate::process::config::Config;
use crate::twilio::rest::IncomingNumber;
use crate::twilio::routes::Route;

/// One of a number's settings that is not what this deployment needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The field's name in the API's form (`VoiceUrl`).
    pub field: &'static str,
    /// As the number has it; empty when not set.
    pub from: String,
    pub to: String,
}

/// The settings a number needs, by the API's form names, every URL with the connection overrides
/// (`#rc=3&rp=5xx,ct`, so that a 503 is retried):
/// - *A call comes in*: `incoming_call`, POST;
/// - *Primary handler fails*: `stream_ended`, which gives the caller the fallback (voicemail or
///   the fallback number) even when `incoming_call` could not answer, with the store down;
/// - the call's status callback: `stream_ended` too, which records how the call ended even when
///   the stream's own callback was lost;
/// - on a number that takes messages, *A message comes in*: `whatsapp/inbound` (it answers SMS
///   and WhatsApp alike).
pub fn wanted(config: &Config, number: &IncomingNumber) -> Vec<(&'static str, String)> {
    let url = |route: Route| config.callback_url(route.path()).to_string();
    let mut fields = vec![
        ("VoiceUrl", url(Route::IncomingCall)),
        ("VoiceMethod", "POST".to_string()),
        ("VoiceFallbackUrl", url(Route::StreamEnded)),
        ("VoiceFallbackMethod", "POST".to_string()),
        ("StatusCallback", url(Route::StreamEnded)),
        ("StatusCallbackMethod", "POST".to_string()),
    ];
    if number.sms_capable {
        fields.extend([("SmsUrl", url(Route::WhatsappInbound)), ("SmsMethod", "POST".to_string())]);
    }
    fields
}

/// What differs between `number` and what this deployment needs; empty when it points here.
pub fn changes(config: &Config, number: &IncomingNumber) -> Vec<Change> {
    wanted(config, number)
        .into_iter()
        .filter_map(|(field, to)| {
            let from = number.field(field).unwrap_or_default();
            // Twilio answers methods as it was given them; `post` is POST.
            let same = if field.ends_with("Method") { from.eq_ignore_ascii_case(&to) } else { from == to };
            (!same).then(|| Change { field, from: from.to_string(), to })
        })
        .collect()
}

/// Why Twilio could not reach this deployment, if it could not: a webhook base or relay on a
/// loopback or private host, or not over TLS (Twilio signs over https and streams over wss; a
/// number pointed at plain http works only until someone reads the traffic).
pub fn unreachable_by_twilio(config: &Config) -> Option<String> {
    let check = |name: &str, value: &str, scheme: &str| -> Option<String> {
        let url = url::Url::parse(value).ok()?;
        let local = match url.host()? {
            url::Host::Domain(host) => host == "localhost" || host.ends_with(".localhost"),
            url::Host::Ipv4(ip) => ip.is_loopback() || ip.is_private() || ip.is_unspecified() || ip.is_link_local(),
            url::Host::Ipv6(ip) => ip.is_loopback() || ip.is_unspecified(),
        };
        if local {
            return Some(format!("{name} is {value}: Twilio cannot reach it; set it to this deployment's public {scheme} URL"));
        }
        (url.scheme() != scheme).then(|| format!("{name} is {value}: Twilio needs {scheme}; set it to this deployment's {scheme} URL"))
    };
    check("PUBLIC_BASE_URL", config.public_base_url.as_str(), "https")
        .or_else(|| check("RELAY_PUBLIC_URL", config.relay_public_url.as_str(), "wss"))
}

/// Where a WhatsApp sender's webhooks are set: Twilio's API for numbers does not reach them.
pub const WHATSAPP_SENDER_CONSOLE: &str = "Twilio Console → Messaging → Senders → WhatsApp senders → the sender → \
     Webhook URL for incoming messages: POST {inbound}; Status callback URL: {status}";

/// [`WHATSAPP_SENDER_CONSOLE`] with this deployment's URLs.
pub fn whatsapp_sender_hint(config: &Config) -> String {
    WHATSAPP_SENDER_CONSOLE
        .replace("{inbound}", config.callback_url(Route::WhatsappInbound.path()).as_str())
        .replace("{status}", config.callback_url(Route::WhatsappStatus.path()).as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let settings = [
            ("PUBLIC_BASE_URL", "https://hooks.example.com"),
            ("RELAY_PUBLIC_URL", "wss://relay.example.com"),
            ("TWILIO_ACCOUNT_SID", "AC0123456789abcdef0123456789abcdef"),
            ("TWILIO_AUTH_TOKEN", "tok"),
        ];
        Config::from_lookup(|name| settings.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())).unwrap()
    }

    #[test]
    fn a_number_pointing_here_has_no_changes_and_one_pointing_elsewhere_is_named() {
        let config = config();
        let mut number = IncomingNumber { sid: "PN1".into(), phone_number: "+97231234567".into(), sms_capable: true, ..Default::default() };
        let all = changes(&config, &number);
        assert_eq!(all.len(), 8, "{all:?}");
        for (field, value) in wanted(&config, &number) {
            match field {
                "VoiceUrl" => number.voice_url = value,
                "VoiceMethod" => number.voice_method = value.to_lowercase(),
                "VoiceFallbackUrl" => number.voice_fallback_url = value,
                "VoiceFallbackMethod" => number.voice_fallback_method = value,
                "StatusCallback" => number.status_callback = value,
                "StatusCallbackMethod" => number.status_callback_method = value,
                "SmsUrl" => number.sms_url = value,
                "SmsMethod" => number.sms_method = value,
                other => panic!("{other}"),
            }
        }
        assert_eq!(changes(&config, &number), vec![]);
        assert_eq!(number.voice_url, "https://hooks.example.com/webhook/incoming_call#rc=3&rp=5xx,ct");
        number.voice_url = "https://old.example.com/voice".into();
        let changed = changes(&config, &number);
        assert_eq!(changed.len(), 1);
        assert_eq!((changed[0].field, changed[0].from.as_str()), ("VoiceUrl", "https://old.example.com/voice"));
        // A number without messaging is not given a messaging URL.
        number.sms_capable = false;
        assert!(wanted(&config, &number).iter().all(|(field, _)| !field.starts_with("Sms")));
    }

    #[test]
    fn only_public_tls_urls_are_reachable_by_twilio() {
        assert_eq!(unreachable_by_twilio(&config()), None);
        let with = |base: &str, relay: &str| {
            let settings = [
                ("PUBLIC_BASE_URL", base),
                ("RELAY_PUBLIC_URL", relay),
                ("TWILIO_ACCOUNT_SID", "AC0123456789abcdef0123456789abcdef"),
                ("TWILIO_AUTH_TOKEN", "tok"),
            ];
            let config = Config::from_lookup(|name| settings.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())).unwrap();
            unreachable_by_twilio(&config).unwrap_or_default()
        };
        assert!(with("http://127.0.0.1:8080", "wss://relay.example.com")
            .starts_with("PUBLIC_BASE_URL is http://127.0.0.1:8080: Twilio cannot reach it"));
        assert!(with("https://10.0.0.5", "wss://relay.example.com").contains("cannot reach"));
        assert!(with("http://hooks.example.com", "wss://relay.example.com").contains("Twilio needs https"));
        assert!(with("https://hooks.example.com", "ws://relay.example.com")
            .starts_with("RELAY_PUBLIC_URL is ws://relay.example.com: Twilio needs wss"));
    }
}
