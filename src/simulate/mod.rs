//! `callkeeper simulate`: plays Twilio's side of calls against a callkeeper, and breaks them in
//! the ways real calls break, to show that no call is lost.
//!
//! - With no target it starts a local stack of its own ([`stack`]) whose Twilio REST is the
//!   simulator's ([`fake_twilio`]), so the watchdog's redirects reach the simulated call, and with
//!   `--offline` whose OpenAI is the simulator's too ([`fake_openai`]).
//! - Each call follows the TwiML as Twilio does ([`call`]; its media stream in `stream`), with
//!   its scenario's fault ([`scenarios`]), and leaves a timeline ([`timeline`]) and what the CRM
//!   holds ([`checks`]).
//! - Many calls at once (`--calls`, `--concurrency`) give a load summary ([`report`]).

pub mod audio;
pub mod balancer;
mod business;
pub mod call;
pub mod checks;
pub mod command;
mod deploy;
pub mod fake_openai;
pub mod fake_twilio;
pub mod report;
pub mod scenarios;
pub mod stack;
mod stream;
pub mod timeline;

use crate::fake_realtime::Fault;
use callkeeper_core::config::Config;
use callkeeper_core::ids::random_sid;
use callkeeper_core::signature::{compute, Algorithm};
use callkeeper_core::store::Stores;
use callkeeper_core::twiml_reader::try_parse_twiml;
use scenarios::{Needs, Scenario};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

const CALLER_HE: &[u8] = include_bytes!("../../relay/assets/caller/he.ulaw");
const CALLER_EN: &[u8] = include_bytes!("../../relay/assets/caller/en.ulaw");

/// How long a call's record may take to settle (its recording transcribed) after the call.
const SETTLE: Duration = Duration::from_secs(90);

pub fn caller_audio(language: &str) -> &'static [u8] {
    if language.starts_with("he") {
        CALLER_HE
    } else {
        CALLER_EN
    }
}

/// What the caller says each turn: `--caller`'s audio, or the agent's language's shipped voice.
fn caller_of<'a>(options: &'a Options, language: &str) -> &'a [u8] {
    options.caller_audio.as_deref().unwrap_or(caller_audio(language))
}

/// What the offline model transcribes a caller as saying: the words of a caller the simulator
/// ships (scripts/gen_prompts.sh renders them from these), or, for audio of the user's own,
/// which it cannot understand, that there was speech.
pub fn caller_words(audio: &[u8]) -> &'static str {
    if audio == CALLER_HE {
        "שלום, אני מחפש דירה של ארבעה חדרים בתל אביב."
    } else if audio == CALLER_EN {
        "Hello, I am looking for a four room apartment in Tel Aviv."
    } else {
        "(offline) speech"
    }
}

/// Which callkeeper to play against.
#[derive(Debug, Clone)]
pub enum Target {
    /// A local stack the simulator starts, in this folder.
    Local { data_dir: PathBuf },
    /// A `callkeeper serve` already running on this machine, on this data folder.
    Running { addr: SocketAddr, data_dir: PathBuf },
    /// Any callkeeper by its public URL (a deployed stack), signing with the configured token.
    Remote { base_url: String },
}

pub struct Options {
    pub target: Target,
    pub store: callkeeper_core::store::open::StoreKind,
    pub scenarios: Vec<Scenario>,
    /// Calls to place in all (at least one per scenario).
    pub calls: usize,
    /// Calls on the line at once; default: every scenario that can share the line, at once.
    pub concurrency: Option<usize>,
    /// Play OpenAI too (local stack only).
    pub offline: bool,
    /// `VOICE_AGENT` for the local stack (default: `openai` offline, else the configuration's).
    pub agent: Option<String>,
    pub speed: f64,
    pub from: String,
    pub to: String,
    pub turns: u32,
    /// What the caller says each turn; `None`: the agent's language's shipped voice.
    pub caller_audio: Option<Vec<u8>>,
    /// Write what the (first) caller heard as a WAV file.
    pub save_audio: Option<PathBuf>,
    /// Whether the person a fallback `<Dial>` rings answers.
    pub dial_answers: bool,
}

/// One call's report: what `--json` prints, a line per call.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CallReport {
    pub call_sid: String,
    pub scenario: &'static str,
    pub outcome: &'static str,
    pub expected: &'static str,
    pub longest_silence_ms: u64,
    /// When the scenario's fault was made, from the ring.
    pub fault_at_ms: Option<u64>,
    pub time_to_fallback_ms: Option<u64>,
    pub subprotocol: Option<String>,
    /// From `start` to the greeting's first frame.
    pub greeting_after_ms: Option<u64>,
    pub greeting_ms: u64,
    /// Per caller turn: from the end of the caller's speech to the first frame of the answer.
    pub answer_after_ms: Vec<Option<u64>>,
    pub agent_audio_ms: u64,
    pub marks_echoed: usize,
    pub close: Option<String>,
    pub frames_sent: u64,
    pub frames_heard: u64,
    /// Media streams the call had (more than one: the conversation moved to a new stream).
    pub streams: u32,
    /// After the fault: the silence right before the agent was heard again.
    pub gap_ms: Option<u64>,
    pub crm: Option<checks::Crm>,
    pub checks: Vec<checks::Check>,
    pub passed: bool,
    pub timeline: timeline::Timeline,
    /// The whole call's sound, both sides, for `--save-audio`.
    #[serde(skip)]
    pub audio: Option<audio::CallAudio>,
    /// The call's whole record as `calls show` prints it, when the store is readable.
    #[serde(skip)]
    pub record: Option<String>,
}

/// What a run did: every call, the load summary, and whether all checks passed.
pub struct Run {
    pub calls: Vec<CallReport>,
    /// Scenarios that could not be played where the simulator stands, and why.
    pub skipped: Vec<(Scenario, String)>,
    pub summary: report::Summary,
    /// Dead letters left on the stack's queues after the run (when the store is readable).
    pub dead_letters: Option<Vec<String>>,
    pub data_dir: Option<PathBuf>,
}

impl Run {
    pub fn passed(&self) -> bool {
        self.calls.iter().all(|c| c.passed) && self.dead_letters.as_ref().is_none_or(Vec::is_empty)
    }
}

/// The local stack's settings: its Twilio is the simulator's, and offline so is its OpenAI.
fn stack_env(
    options: &Options,
    account_sid: &str,
    auth_token: &str,
    twilio: &fake_twilio::FakeTwilio,
    openai: Option<&fake_openai::FakeOpenAi>,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        ("TWILIO_ACCOUNT_SID".into(), account_sid.into()),
        ("TWILIO_AUTH_TOKEN".into(), auth_token.into()),
        ("TWILIO_API_BASE".into(), twilio.base_url()),
        // Failed jobs come back within seconds, not minutes: a run waits for them.
        ("JOB_RETRY_BASE_SECS".into(), "1".into()),
    ];
    if let Some(openai) = openai {
        env.extend([
            ("OPENAI_API_KEY".into(), OFFLINE_KEY.into()),
            ("OPENAI_BASE_URL".into(), openai.base_url()),
            ("OPENAI_REALTIME_URL".into(), openai.realtime.url()),
            ("TOOLS_WEBHOOK_SECRET".into(), business::TOOLS_SECRET.into()),
        ]);
    }
    let agent = options.agent.clone().or_else(|| openai.map(|_| "openai".to_string()));
    if let Some(agent) = agent {
        env.push(("VOICE_AGENT".into(), agent));
    }
    env
}

const OFFLINE_KEY: &str = "sk-simulator-offline";

/// What a run plays against, and what it can see of it.
struct Setup {
    base_url: String,
    account_sid: String,
    auth_token: String,
    /// The agent's language, for the caller's voice.
    language: String,
    data_dir: Option<PathBuf>,
    twilio: Option<fake_twilio::FakeTwilio>,
    openai: Option<Arc<fake_openai::FakeOpenAi>>,
    stack: Option<Arc<tokio::sync::Mutex<stack::LocalStack>>>,
    /// The target's store, when it can be read from here.
    stores: Option<Stores>,
}

async fn setup(options: &Options) -> anyhow::Result<Setup> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    match &options.target {
        Target::Local { data_dir } => {
            let account_sid = random_sid("AC");
            let auth_token = callkeeper_core::secrets::Secret::generate().expose().to_string();
            let twilio = fake_twilio::FakeTwilio::start(&account_sid).await?;
            let language = env("AGENT_LANGUAGE").unwrap_or_else(|| "he".into());
            let openai = if options.offline {
                let words = caller_words(caller_of(options, &language));
                Some(Arc::new(fake_openai::FakeOpenAi::start(OFFLINE_KEY, &language, words).await?))
            } else {
                None
            };
            let local =
                stack::LocalStack::start(data_dir, stack_env(options, &account_sid, &auth_token, &twilio, openai.as_deref())).await?;
            let stores = callkeeper_core::store::open::open(callkeeper_core::store::open::StoreKind::Embedded, data_dir, 5).await?;
            Ok(Setup {
                base_url: format!("http://{}", local.server),
                account_sid,
                auth_token,
                language,
                data_dir: Some(data_dir.clone()),
                twilio: Some(twilio),
                openai,
                stack: Some(Arc::new(tokio::sync::Mutex::new(local))),
                stores: Some(stores),
            })
        }
        Target::Running { addr, data_dir } => {
            let (config, _) = crate::local_config::resolve(data_dir, *addr)?;
            let readable = options.store == callkeeper_core::store::open::StoreKind::Aws
                || data_dir.join(callkeeper_core::store::embedded::DATABASE_FILE).exists();
            let stores = if readable {
                Some(callkeeper_core::store::open::open(options.store, data_dir, config.queue_max_receives).await?)
            } else {
                None
            };
            Ok(Setup {
                base_url: config.public_base_url.as_str().trim_end_matches('/').to_string(),
                account_sid: config.twilio_account_sid.to_string(),
                auth_token: config.twilio_auth_token.expose().to_string(),
                language: config.language.clone(),
                data_dir: None,
                twilio: None,
                openai: None,
                stack: None,
                stores,
            })
        }
        Target::Remote { base_url } => {
            let (Some(account_sid), Some(auth_token)) = (env("TWILIO_ACCOUNT_SID"), env("TWILIO_AUTH_TOKEN")) else {
                anyhow::bail!(
                    "--target needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN: the simulator signs as Twilio signs for that stack"
                );
            };
            let stores = match options.store {
                callkeeper_core::store::open::StoreKind::Aws => Some(callkeeper_core::store::open::stores_from_env(5).await?),
                callkeeper_core::store::open::StoreKind::Embedded => None,
            };
            Ok(Setup {
                base_url: base_url.trim_end_matches('/').to_string(),
                account_sid,
                auth_token,
                language: env("AGENT_LANGUAGE").unwrap_or_else(|| "he".into()),
                data_dir: None,
                twilio: None,
                openai: None,
                stack: None,
                stores,
            })
        }
    }
}

pub async fn run(options: Options) -> anyhow::Result<Run> {
    let Setup { base_url, account_sid, auth_token, language, data_dir, twilio, openai, stack, stores } = setup(&options).await?;
    let caller_audio = Arc::new(caller_of(&options, &language).to_vec());
    let ctx = Arc::new(call::Ctx {
        client: reqwest::Client::new(),
        base_url,
        account_sid,
        auth_token,
        twilio: twilio.clone(),
        stack: stack.clone(),
        offline: openai.clone(),
        from: options.from.clone(),
        to: options.to.clone(),
        turns: options.turns,
        caller_audio,
        speed: options.speed,
        dial_answers: options.dial_answers,
        keep_audio: options.save_audio.is_some(),
    });

    // What can be played from here, and which calls may share the line with others.
    let mut skipped = Vec::new();
    let mut beside = Vec::new();
    let mut alone = Vec::new();
    let mut deploying = false;
    for scenario in &options.scenarios {
        match scenario.needs() {
            Needs::LocalStack if stack.is_none() => skipped.push((*scenario, "needs the local stack (run with no target)".to_string())),
            Needs::OfflineOpenAi if openai.is_none() => {
                skipped.push((*scenario, "needs the simulator's OpenAI (run with no target and --offline)".to_string()))
            }
            Needs::Deploy if stack.is_none() => {
                skipped.push((*scenario, "needs the local stack's relays (run with no target)".to_string()))
            }
            Needs::Nothing => beside.push(*scenario),
            Needs::Deploy => deploying = true,
            _ => alone.push(*scenario),
        }
    }
    let total = options.calls.max(beside.len());
    let sampler = stack.clone().map(report::Sampler::start);
    let started = Instant::now();
    let mut reports = Vec::new();
    if !beside.is_empty() {
        let plan: Vec<Scenario> = (0..total).map(|i| beside[i % beside.len()]).collect();
        let concurrency = options.concurrency.unwrap_or(beside.len()).max(1).min(plan.len());
        let queue = Arc::new(std::sync::Mutex::new(plan.into_iter().enumerate()));
        let mut workers = Vec::new();
        for _ in 0..concurrency {
            let (ctx, queue, stores) = (ctx.clone(), queue.clone(), stores.clone());
            workers.push(tokio::spawn(async move {
                let mut done = Vec::new();
                loop {
                    let next = queue.lock().expect("not poisoned").next();
                    let Some((placed, scenario)) = next else { break };
                    done.push((placed, play_one(&ctx, scenario, stores.as_ref()).await));
                }
                done
            }));
        }
        // Reported in the order the calls were asked for, whichever worker placed them: the
        // first call (the one `--save-audio` keeps) is the first scenario named.
        let mut played = Vec::new();
        for worker in workers {
            played.extend(worker.await?);
        }
        played.sort_by_key(|(placed, _)| *placed);
        reports.extend(played.into_iter().map(|(_, report)| report));
    }
    if let (true, Some(stack)) = (deploying, &stack) {
        // Alone in the run, the deploy's calls are as many as asked; beside others, one.
        let count = if beside.is_empty() && alone.is_empty() { options.calls.max(1) } else { 1 };
        let concurrency = options.concurrency.unwrap_or(count).clamp(1, count);
        reports.extend(deploy::play(&ctx, stack.clone(), stores.clone(), count, concurrency).await?);
    }
    // The business the tool scenarios call, when any is played.
    let business_system = match alone.iter().any(|s| s.tool_behaviour().is_some()) {
        true => Some(crate::fake_business::FakeBusiness::start(business::TOOLS_SECRET).await?),
        false => None,
    };
    for scenario in alone {
        let prepared = business::prepare(scenario, stores.as_ref(), openai.as_deref(), business_system.as_ref(), &language).await?;
        let before = openai.as_ref().map_or((0, 0), |o| o.transcriptions());
        if let Some(openai) = &openai {
            let after = Duration::from_secs(2);
            match scenario {
                Scenario::TranscriptionFlaps => openai.fail_transcriptions(2),
                Scenario::ModelDrops => openai.model_fault(Fault::DropAfter(after)),
                Scenario::SessionExpired => openai.model_fault(Fault::FatalAfter(after)),
                Scenario::ModelDown => openai.model_fault(Fault::DownAfter(after)),
                _ => {}
            }
        }
        let mut report = play_one(&ctx, scenario, stores.as_ref()).await;
        business::restore(prepared, openai.as_deref());
        if let Some(openai) = &openai {
            openai.model_fault(Fault::None);
            openai.fail_transcriptions(0);
            let (asked, failed) = openai.transcriptions();
            if scenario == Scenario::TranscriptionFlaps {
                if let Ok(played) = &mut report {
                    checks::transcription_retried(played, before, (asked, failed));
                }
            }
        }
        reports.push(report);
    }
    let usage = match sampler {
        Some(sampler) => Some(sampler.stop().await),
        None => None,
    };
    let mut calls = Vec::new();
    for report in reports {
        calls.push(report?);
    }
    if let (Some(path), Some(audio)) = (&options.save_audio, calls.first().and_then(|c| c.audio.as_ref())) {
        std::fs::write(path, audio.wav())?;
    }
    let dead_letters = match &stores {
        Some(stores) if stack.is_some() => Some(checks::dead_letters(stores.queue.as_ref()).await?),
        _ => None,
    };
    let concurrency = options.concurrency.unwrap_or(beside.len()).max(1);
    let summary = report::Summary::of(&calls, usage, started.elapsed(), concurrency);
    // The processes stop; the folder stays, for `calls list` and `calls show`.
    drop(stack);
    Ok(Run { calls, skipped, summary, dead_letters, data_dir })
}

/// Plays one call and reads what the CRM made of it. A call the simulator could not play
/// through (the stack never answered, a rescue that never came) is a failed report, not an error.
pub(super) async fn play_one(ctx: &call::Ctx, scenario: Scenario, stores: Option<&Stores>) -> anyhow::Result<CallReport> {
    let played = match call::play(ctx, scenario).await {
        Ok(played) => played,
        Err(e) => return Ok(report::failed_call(scenario, &e)),
    };
    let crm = match stores {
        Some(stores) => checks::read(stores.calls.as_ref(), &played, SETTLE).await?,
        None => None,
    };
    let checks = checks::checks(&played, crm.as_ref(), ctx.twilio.as_ref());
    let record = match (stores, callkeeper_core::ids::CallSid::parse(&played.call_sid)) {
        (Some(stores), Ok(sid)) => crate::calls::show(stores.calls.as_ref(), &sid, false).await?,
        _ => None,
    };
    let mut report = report::call_report(played, crm, checks);
    report.record = record;
    Ok(report)
}

/// A form POST as Twilio sends it: to `post_url`, signed with `token` over `signed_url` (the
/// public URL callkeeper checks signatures against; the same URL unless behind a proxy).
pub fn signed_post(
    client: &reqwest::Client,
    token: &str,
    signed_url: &str,
    post_url: &str,
    form: &[(String, String)],
) -> reqwest::RequestBuilder {
    let signature = compute(token.as_bytes(), Algorithm::HmacSha1, signed_url, form);
    let body: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
    client.post(post_url).header("content-type", "application/x-www-form-urlencoded").header("x-twilio-signature", signature).body(body)
}

/// Posts a form to one of callkeeper's webhooks on `server`, signed for its public URL.
pub async fn post_webhook(
    client: &reqwest::Client,
    config: &Config,
    server: SocketAddr,
    path: &str,
    form: &[(String, String)],
) -> anyhow::Result<(u16, String)> {
    let token = config.twilio_auth_token.expose();
    let response = signed_post(client, token, config.webhook_url(path).as_str(), &format!("http://{server}{path}"), form).send().await?;
    Ok((response.status().as_u16(), response.text().await?))
}

/// The stream Twilio is told to open when a call is answered.
pub struct Answered {
    /// The `<Stream url>`, which the upgrade is signed over.
    pub stream_url: String,
    /// Its path, to request on the server's socket.
    pub path: String,
    /// The `<Parameter>`s, for `start`.
    pub parameters: Vec<(String, String)>,
}

/// Rings callkeeper as Twilio does (a signed `incoming_call`) and reads the stream from the
/// TwiML: for benchmarks that drive the media socket themselves.
pub async fn ring(
    client: &reqwest::Client,
    config: &Config,
    server: SocketAddr,
    call_sid: &str,
    from: &str,
    to: &str,
) -> anyhow::Result<Answered> {
    let form: Vec<(String, String)> = [
        ("AccountSid", config.twilio_account_sid.as_str()),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", call_sid),
        ("CallStatus", "ringing"),
        ("Direction", "inbound"),
        ("From", from),
        ("To", to),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let (status, twiml) = post_webhook(client, config, server, "/webhook/incoming_call", &form).await?;
    anyhow::ensure!(status == 200, "incoming_call answered HTTP {status}: {twiml}");
    let response = try_parse_twiml(&twiml).map_err(|e| anyhow::anyhow!("incoming_call's answer is not TwiML ({e}): {twiml}"))?;
    let stream = response.find("Stream").ok_or_else(|| anyhow::anyhow!("the TwiML connects no stream: {twiml}"))?;
    let stream_url = stream.attr("url").ok_or_else(|| anyhow::anyhow!("<Stream> has no url"))?.to_string();
    let path = url::Url::parse(&stream_url)?.path().to_string();
    Ok(Answered { stream_url, path, parameters: stream_parameters(stream) })
}

/// A `<Stream>`'s `<Parameter>`s, in order: what `start` carries as `customParameters`.
pub fn stream_parameters(stream: &callkeeper_core::twiml_reader::El) -> Vec<(String, String)> {
    stream
        .children
        .iter()
        .filter(|c| c.name == "Parameter")
        .filter_map(|p| Some((p.attr("name")?.to_string(), p.attr("value")?.to_string())))
        .collect()
}

/// μ-law audio as a 16-bit PCM WAV file anyone can play.
pub fn wav(mulaw: &[u8]) -> Vec<u8> {
    let samples: Vec<i16> = mulaw.iter().map(|&code| callkeeper_core::mulaw::decode(code)).collect();
    callkeeper_core::wav::mono(&samples, callkeeper_core::mulaw::SAMPLE_RATE)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_callers_words_are_the_ones_their_audio_was_rendered_from() {
        let script = include_str!("../../scripts/gen_prompts.sh");
        for language in ["he", "en"] {
            let words = super::caller_words(super::caller_audio(language));
            assert!(script.contains(&format!("render {language} \"{words}\" caller/{language}.ulaw")), "{language}: {words}");
        }
        assert_eq!(super::caller_words(&[0xFF; 800]), "(offline) speech");
    }
}
