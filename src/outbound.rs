//! `callkeeper call`: places an outbound call through Twilio's REST API. Twilio fetches its
//! TwiML from `outbound_call` when it is answered, so it gets the same stream, recording and
//! watchdog as an incoming call; its end is reported to `stream_ended`.

use callkeeper_core::call::{CallStatus, Direction, NewCall};
use callkeeper_core::config::Config;
use callkeeper_core::ids::CallSid;
use callkeeper_core::phone::E164;
use callkeeper_core::store::CallStore;
use callkeeper_core::time::now_ms;
use callkeeper_core::twilio_rest::OutboundCall;
use callkeeper_functions::Route;

pub async fn place(config: &Config, calls: &dyn CallStore, to: &str, from: Option<&str>, detect_machine: bool) -> anyhow::Result<String> {
    let to = E164::parse(to).ok_or_else(|| anyhow::anyhow!("--to must be a +E164 number, got {to:?}"))?;
    let from = match from {
        Some(from) => E164::parse(from).ok_or_else(|| anyhow::anyhow!("--from must be a +E164 number, got {from:?}"))?,
        None => {
            config.twilio_phone_number.clone().ok_or_else(|| anyhow::anyhow!("no caller id: pass --from or set TWILIO_PHONE_NUMBER"))?
        }
    };
    let request = OutboundCall {
        to: to.to_string(),
        from: from.to_string(),
        url: Some(config.callback_url(Route::OutboundCall.path())),
        status_callback: Some(config.callback_url(Route::StreamEnded.path())),
        status_callback_events: vec!["completed".into()],
        machine_detection: detect_machine.then(|| "Enable".to_string()),
        ..Default::default()
    };
    let created = config.twilio_rest().create_call(&request).await?;
    let call_sid = CallSid::parse(&created.sid).map_err(|e| anyhow::anyhow!("Twilio answered a call sid we cannot read: {e}"))?;
    // Twilio may already have fetched the TwiML (and `outbound_call` recorded the call): then
    // this finds it and changes nothing.
    let call = NewCall {
        call_sid: call_sid.clone(),
        account_sid: config.twilio_account_sid.clone(),
        from: from.to_string(),
        to: to.to_string(),
        contact: Some(to.clone()),
        direction: Direction::Outbound,
        status: CallStatus::Ringing,
        twilio_status: Some(created.status.clone()),
        at: now_ms(),
    };
    calls.create_call(&call).await?;
    Ok(format!("calling {to} from {from}: {call_sid} ({})", created.status))
}
