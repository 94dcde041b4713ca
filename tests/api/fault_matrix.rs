//! The fault matrix: every scenario `callkeeper simulate` knows, played end to end against the
//! local stack it starts (`serve` and two relays behind a balancer, the simulator's Twilio REST and
//! OpenAI), exactly as a user runs it. For each call the record must hold the conversation's
//! turns, or a fallback with a transcript or a voicemail; no caller sits in silence over 10 s;
//! nothing is kept twice; and no job is left dead at the end.

use crate::common;
use std::io::Write;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_callkeeper");

#[test]
fn every_scenario_keeps_its_call() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["simulate", "--offline", "--scenario", "all", "--json", "--data-dir"])
        .arg(dir.path().join("stack"))
        .arg("--save-audio")
        .arg(dir.path().join("heard.wav"))
        .env_remove("PUBLIC_BASE_URL")
        .env_remove("RELAY_PUBLIC_URL")
        .env_remove("TWILIO_ACCOUNT_SID")
        .env_remove("TWILIO_AUTH_TOKEN")
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let docs: Vec<serde_json::Value> = stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let calls: Vec<&serde_json::Value> = docs.iter().filter(|d| d.get("call_sid").is_some()).collect();
    let summary = docs.iter().find(|d| d.get("summary").is_some()).expect("a summary line");

    // The table, in the test's output whether it passes or not (written past the test harness's
    // capture, so CI's log shows it).
    let mut table =
        format!("\n{:<20} {:<13} {:<5} {:>9} {:>12}  {}\n", "scenario", "outcome", "pass", "silence", "to fallback", "the CRM holds");
    for c in &calls {
        let crm = &c["crm"];
        let holds = format!(
            "{} turns, {} transcript lines, {} recordings{}",
            crm["turns"],
            crm["transcript_lines"],
            crm["recordings"],
            crm["fallback_reason"]
                .as_str()
                .map(|r| format!(", fallback {} ({r})", crm["fallback_action"].as_str().unwrap_or("-")))
                .unwrap_or_default()
        );
        table += &format!(
            "{:<20} {:<13} {:<5} {:>6} ms {:>12}  {holds}\n",
            c["scenario"].as_str().unwrap_or("?"),
            c["outcome"].as_str().unwrap_or("?"),
            if c["passed"] == true { "yes" } else { "NO" },
            c["longest_silence_ms"],
            c["time_to_fallback_ms"].as_u64().map_or("-".to_string(), |ms| format!("{ms} ms")),
        );
    }
    let _ = std::io::stderr().write_all(table.as_bytes());

    let failures: Vec<String> = calls
        .iter()
        .filter(|c| c["passed"] != true)
        .map(|c| format!("{}: {}", c["scenario"], serde_json::to_string_pretty(&c["checks"]).unwrap()))
        .collect();
    let logs =
        ["serve.log", "relay-a.log", "relay-b.log"].map(|f| std::fs::read_to_string(dir.path().join("stack").join(f)).unwrap_or_default());
    let tail = |log: &str| log.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    assert!(
        failures.is_empty() && out.status.success(),
        "exit {:?}; failed: {failures:#?}\nstderr: {}\nserve log:\n{}\nrelay-a log:\n{}\nrelay-b log:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr),
        tail(&logs[0]),
        tail(&logs[1]),
        tail(&logs[2])
    );

    // Every scenario was played, none skipped, and each ended as it must.
    let played: Vec<&str> = calls.iter().filter_map(|c| c["scenario"].as_str()).collect();
    assert_eq!(played.len(), 23, "{played:?}");
    assert_eq!(summary["skipped"], serde_json::json!([]));
    assert_eq!(summary["dead_letters"], serde_json::json!([]), "nothing given up on");
    for c in &calls {
        let (scenario, crm) = (c["scenario"].as_str().unwrap(), &c["crm"]);
        assert_eq!(c["outcome"], c["expected"], "{scenario}");
        assert!(c["longest_silence_ms"].as_u64().unwrap() <= 10_000, "{scenario}: {c}");
        assert_eq!(crm["status"], "completed", "{scenario}: {crm}");
        match c["outcome"].as_str().unwrap() {
            // After hours there is no fault to time and no conversation to record: the
            // voicemail is the call.
            "fallback" if scenario == "after-hours" => {
                assert_eq!(crm["fallback_reason"], "after_hours", "{crm}");
                assert!(crm["recordings"].as_u64().unwrap() >= 1 && crm["transcript_lines"].as_u64().unwrap() >= 1, "{crm}");
            }
            "fallback" => {
                assert!(crm["fallback_reason"].is_string(), "{scenario}: {crm}");
                assert!(c["time_to_fallback_ms"].as_u64().is_some(), "{scenario}: the fault and the fallback are timed");
                // The voicemail (and the call's own recording) were kept and transcribed.
                assert!(crm["recordings"].as_u64().unwrap() >= 2, "{scenario}: {crm}");
            }
            "continued" => {
                // The conversation went on across the fault, with the turns before it replayed,
                // and the caller was answered after it.
                assert!(crm["fallback_reason"].is_null(), "{scenario}: {crm}");
                assert!(crm["turns"].as_u64().unwrap() >= 2, "{scenario}: {crm}");
                assert!(c["gap_ms"].as_u64().is_some(), "{scenario}: the agent was heard after the fault: {c}");
            }
            _ => assert!(crm["turns"].as_u64().unwrap() >= 1, "{scenario}: {crm}"),
        }
    }
    let by_name = |name: &str| *calls.iter().find(|c| c["scenario"] == name).unwrap();
    // The happy call was transcribed, summarized, and its live transcript kept.
    let happy = &by_name("happy")["crm"];
    assert!(happy["transcript_lines"].as_u64().unwrap() >= 2 && happy["live_lines"].as_u64().unwrap() >= 2, "{happy}");
    assert!(happy["summary"].as_str().unwrap().starts_with("(offline)"), "{happy}");
    // Its sound was saved whole (`--save-audio` keeps the first call asked for, however the
    // calls sharing the line finished): the offline model speaking the embedded agent's
    // recorded prompts (greeting and reply) on the right, the caller's words on the left.
    assert_eq!(calls[0]["scenario"], "happy", "the calls are reported in the order asked for");
    let wav = callkeeper_core::wav::parse(&std::fs::read(dir.path().join("heard.wav")).unwrap()).unwrap();
    assert_eq!(wav.channels.len(), 2);
    let agent = callkeeper_relay::agent::embedded::EmbeddedAgent::for_language("he");
    for (prompt, what) in [(&agent.greeting, "greeting"), (&agent.reply, "reply")] {
        let sounding_ms = wav.channels[1].iter().filter(|s| **s != 0).count() / 8;
        assert!(
            common::holds_clip(&wav.channels[1], &prompt.audio),
            "the model's {what}, spoken (the agent's side: {sounding_ms} ms of sound)"
        );
    }
    assert!(common::holds_clip(&wav.channels[0], include_bytes!("../../relay/assets/caller/he.ulaw")), "the caller's words");
    // Lost media reaches the fallback in seconds, by the relay, once its greeting (still sent,
    // its marks still echoed) has played out: MEDIA_SILENCE_SECS of nothing from Twilio. A hung
    // relay's by the watchdog.
    let lost = by_name("media-stops");
    let greeting_over = lost["greeting_after_ms"].as_u64().unwrap() + lost["greeting_ms"].as_u64().unwrap();
    let fault_at = lost["fault_at_ms"].as_u64().expect("the fault is timed");
    let after_silence = fault_at + lost["time_to_fallback_ms"].as_u64().unwrap() - fault_at.max(greeting_over);
    assert!(after_silence < 4_000, "the fallback came {after_silence} ms after the line went silent: {lost}");
    // A hung relay's call is moved by the watchdog, within 10 s of silence, Twilio's REST
    // flapping or not; a crashed relay's by `<Connect action>`, in a few seconds.
    for hung in ["relay-hang", "twilio-rest-flaps"] {
        assert!(by_name(hung)["gap_ms"].as_u64().unwrap() <= 10_000, "{hung}");
    }
    assert!(by_name("relay-crash")["gap_ms"].as_u64().unwrap() <= 3_000);
    // The model's faults cost the caller no more than a short pause.
    for model in ["model-drops", "session-expired"] {
        assert!(by_name(model)["gap_ms"].as_u64().unwrap() <= 1_500, "{model}");
    }
    assert_eq!(by_name("model-down")["crm"]["fallback_reason"], "agent_failed");
    assert!(by_name("deploy")["streams"].as_u64().unwrap() >= 2, "the deploy moved its call");
    assert_eq!(by_name("duplicate-webhooks")["crm"]["transcripts"], 1, "three callbacks, one transcript");
    assert!(by_name("bad-frames")["crm"]["bad_frames"].as_u64().unwrap() >= 5);
    // The business's own system: answered at once, slowly (the filler said), or down (told to
    // the model); the call goes on every time.
    for (name, ok, filler) in [("tool-call", true, false), ("tool-call-slow", true, true), ("tool-call-down", false, false)] {
        let tools = by_name(name)["crm"]["tool_calls"].as_array().unwrap().clone();
        assert_eq!(tools.len(), 1, "{name}: {tools:?}");
        assert_eq!((tools[0]["ok"].as_bool(), tools[0]["filler_said"].as_bool()), (Some(ok), Some(filler)), "{name}: {tools:?}");
    }
    assert!(by_name("keypad")["crm"]["keypad_lines"][0].as_str().unwrap().contains("⌨ 1 2 3 #"));
}
