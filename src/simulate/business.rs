//! The business a scenario calls: the agent profile its number answers with (stored in the
//! local stack's store before the call), the offline model's script for it, and the business's
//! own system ([`crate::fake_business`]) its tools reach.
//!
//! Each such scenario rings a number of its own ([`Scenario::business_number`]), so its profile
//! touches no other call, and no relay holds an older copy of it.

use super::fake_openai::FakeOpenAi;
use super::scenarios::Scenario;
use crate::fake_business::FakeBusiness;
use crate::fake_realtime::Plan;
use callkeeper_core::phone::E164;
use callkeeper_core::profile::{AgentProfile, ProfileKey};
use callkeeper_core::store::Stores;
use serde_json::json;

/// Signs the stack's tool requests, and the simulator's business checks it.
pub const TOOLS_SECRET: &str = "simulator-tools-secret-0123456789";

/// What a scenario changed, to put back after its call.
pub struct Prepared {
    script: Option<Vec<Plan>>,
}

/// Makes the world the scenario's call needs.
pub async fn prepare(
    scenario: Scenario,
    stores: Option<&Stores>,
    openai: Option<&FakeOpenAi>,
    business: Option<&FakeBusiness>,
    language: &str,
) -> anyhow::Result<Prepared> {
    let mut prepared = Prepared { script: None };
    let Some(number) = scenario.business_number() else { return Ok(prepared) };
    let Some(stores) = stores else { return Ok(prepared) };
    let mut profile = AgentProfile::builtin(language, &callkeeper_core::profile::default_extraction_schema());
    if let (Some(behaviour), Some(business), Some(openai)) = (scenario.tool_behaviour(), business, openai) {
        profile.tools = vec![crate::fake_business::availability_tool(&business.url(behaviour))];
        let before = openai.realtime.script();
        let mut script = before.clone();
        script.insert(1, Plan::call("check_availability", json!({ "listing": "הרצל 12" })));
        openai.realtime.set_script(script);
        prepared.script = Some(before);
    }
    if scenario == Scenario::AfterHours {
        // No day written: closed all week, so whenever the suite runs it is after hours.
        let text = "instructions = \"x\"\n[hours]\ntime_zone = \"Asia/Jerusalem\"\n[after_hours]\nmode = \"voicemail\"\n";
        let hours = callkeeper_core::profile::parse(text, "after-hours.toml", std::path::Path::new("."), &profile)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .hours;
        profile.hours = hours;
    }
    let key = ProfileKey::Number(E164::parse(number).expect("the scenarios' numbers are E.164"));
    stores.calls.put_profile(&key, &profile, callkeeper_core::time::now_ms()).await?;
    Ok(prepared)
}

/// Puts back what [`prepare`] changed beyond the scenario's own number.
pub fn restore(prepared: Prepared, openai: Option<&FakeOpenAi>) {
    if let (Some(script), Some(openai)) = (prepared.script, openai) {
        openai.realtime.set_script(script);
    }
}
