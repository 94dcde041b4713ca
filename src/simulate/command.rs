//! `callkeeper simulate`: its arguments, and what it prints and exits with.

use super::{caller_audio, report, run as play, scenarios::Scenario, Options, Target};
use callkeeper_core::store::open::StoreKind;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `callkeeper simulate`'s arguments.
#[derive(clap::Args)]
pub struct SimulateArgs {
    /// Play against a `callkeeper serve` already running on this port (its data folder is
    /// --data-dir), instead of a stack of its own.
    #[arg(long, conflicts_with = "target")]
    pub port: Option<u16>,
    #[arg(long, default_value = "127.0.0.1", requires = "port")]
    pub host: IpAddr,
    /// Play against any callkeeper by its public URL (a deployed stack), signing with
    /// TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN; what cannot be seen from outside is reported
    /// as not checked. With `--store aws` the CRM is read from the stack's table.
    #[arg(long)]
    pub target: Option<String>,
    /// `all`, a scenario, or a comma-separated mix: happy, relay-down, socket-closes,
    /// media-stops, bad-frames, caller-hangs-up, recording-absent, transcription-flaps,
    /// duplicate-webhooks, model-drops, relay-restart, twilio-rest-flaps, store-blip.
    #[arg(long, default_value = "happy")]
    pub scenario: String,
    /// Calls to place (the scenarios' mix, in turn).
    #[arg(long, default_value_t = 1)]
    pub calls: usize,
    /// Calls on the line at once (default: the scenarios that can share the line, at once).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Play OpenAI too (Realtime, transcription, extraction): the whole path with no account.
    #[arg(long)]
    pub offline: bool,
    /// The local stack's voice agent: embedded, openai or silent (default: openai when
    /// --offline, otherwise the configuration's).
    #[arg(long)]
    pub agent: Option<String>,
    /// The caller speaks this many times faster than real time.
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    #[arg(long, default_value = "+972501234567")]
    pub from: String,
    #[arg(long, default_value = "+97231234567")]
    pub to: String,
    /// Caller turns after the greeting.
    #[arg(long, default_value_t = 1)]
    pub turns: u32,
    /// What the caller says: `he`, `en`, a WAV file, or a raw μ-law 8 kHz file. Default: the
    /// agent's language.
    #[arg(long)]
    pub caller: Option<String>,
    /// Write the first call, both sides as the caller lived them, to this WAV file (stereo).
    #[arg(long)]
    pub save_audio: Option<PathBuf>,
    /// Whether the person a fallback `<Dial>` rings answers.
    #[arg(long, default_value = "answered", value_parser = ["answered", "no-answer"])]
    pub dial: String,
    /// One JSON object per call (and a summary object for a load run).
    #[arg(long)]
    pub json: bool,
}

/// Plays what `args` ask for; prints each call's timeline and record, the fault matrix, or a
/// load summary. Exits 3 when a check fails.
pub async fn run(args: SimulateArgs, data_dir: &Path, data_dir_given: bool, kind: StoreKind) -> anyhow::Result<ExitCode> {
    let SimulateArgs {
        port,
        host,
        target,
        scenario,
        calls,
        concurrency,
        offline,
        agent,
        speed,
        from,
        to,
        turns,
        caller,
        save_audio,
        dial,
        json,
    } = args;
    let target = match (port, target) {
        (Some(port), _) => Target::Running { addr: SocketAddr::new(host, port), data_dir: data_dir.to_path_buf() },
        (None, Some(base_url)) => Target::Remote { base_url },
        (None, None) => Target::Local { data_dir: if data_dir_given { data_dir.to_path_buf() } else { fresh_data_dir()? } },
    };
    if !(speed.is_finite() && (0.1..=100.0).contains(&speed)) {
        anyhow::bail!("--speed must be between 0.1 and 100 (times real time), got {speed}");
    }
    if offline && !matches!(target, Target::Local { .. }) {
        anyhow::bail!("--offline plays OpenAI for the simulator's own stack: it cannot with --port or --target");
    }
    let caller_audio = match caller.as_deref() {
        None => None,
        Some(language @ ("he" | "en")) => Some(caller_audio(language).to_vec()),
        Some(path) => Some(read_caller_audio(path)?),
    };
    let scenarios = Scenario::parse_list(&scenario).map_err(|e| anyhow::anyhow!("--scenario: {e}"))?;
    let matrix = scenarios.len() > 1;
    let save_audio_path = save_audio.clone();
    let options = Options {
        target,
        store: kind,
        scenarios,
        calls,
        concurrency,
        offline,
        agent,
        speed,
        from,
        to,
        turns,
        caller_audio,
        save_audio,
        dial_answers: dial == "answered",
    };
    let run = play(options).await?;
    // One call: its timeline and record. More (or a scenario not played): the table too.
    let many = matrix || run.calls.len() != 1;
    if json {
        for call in &run.calls {
            println!("{}", serde_json::to_string(call)?);
        }
        if many {
            let skipped: Vec<_> = run.skipped.iter().map(|(s, why)| (s.name(), why)).collect();
            println!("{}", serde_json::json!({ "summary": run.summary, "dead_letters": run.dead_letters, "skipped": skipped }));
        }
    } else if !many {
        print!("{}", report::describe(&run.calls[0]));
        if let Some(record) = &run.calls[0].record {
            println!("\n{record}");
        }
    } else {
        for call in run.calls.iter().filter(|c| !c.passed) {
            println!("{}", report::describe(call));
        }
        // A row per call for a matrix; a row per scenario for a load run.
        if run.calls.len() > 20 {
            print!("\n{}", report::by_scenario(&run));
        } else {
            print!("\n{}", report::matrix(&run));
        }
        print!("\n{}", report::summary(&run.summary));
    }
    if let (false, Some(path), Some(audio)) = (json, &save_audio_path, run.calls.first().and_then(|c| c.audio.as_ref())) {
        // Said, not left to be guessed: what the file holds and how long it is.
        let (caller_ms, agent_ms) = audio.sides.spoken_ms();
        println!(
            "\nwrote {}: the first call whole, {:.1} s in stereo: the caller on the left ({:.1} s of speech), the agent as the caller heard it on the right ({:.1} s)",
            path.display(),
            audio.length_ms() as f64 / 1000.0,
            caller_ms as f64 / 1000.0,
            agent_ms as f64 / 1000.0
        );
    }
    if let (false, Some(dir)) = (json, &run.data_dir) {
        println!(
            "\nthe stack's data is kept in {0}: callkeeper --data-dir {0} calls list\n(callkeeper is on your PATH after `cargo install --path . --locked`; or `cargo run --release -- --data-dir {0} calls list`)",
            dir.display()
        );
    }
    Ok(if run.passed() { ExitCode::SUCCESS } else { ExitCode::from(3) })
}

/// A folder of its own for a simulated stack: `callkeeper-sim-XXXXXX` in the system's temp dir,
/// made new with a random name and for its owner only, so nobody else on the machine can have
/// made it first or read the calls it will hold. Kept after the run, for `calls list`.
fn fresh_data_dir() -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new().prefix("callkeeper-sim-").permissions(std::fs::Permissions::from_mode(0o700)).tempdir()?;
    Ok(dir.keep())
}

/// The caller's voice: a WAV file (μ-law or PCM, any channel count: the first is taken, at
/// 8 kHz) or raw μ-law 8 kHz.
fn read_caller_audio(path: &str) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read caller audio {path}: {e}"))?;
    if !bytes.starts_with(b"RIFF") {
        return Ok(bytes);
    }
    let wav = callkeeper_core::wav::view(&bytes).map_err(|e| anyhow::anyhow!("{path} is not a WAV callkeeper reads: {}", e.0))?;
    if wav.sample_rate != callkeeper_core::mulaw::SAMPLE_RATE {
        anyhow::bail!("{path} is {} Hz; the caller's voice must be 8000 Hz, as Twilio's line is", wav.sample_rate);
    }
    Ok((0..wav.frames()).map(|f| callkeeper_core::mulaw::encode(wav.sample(f, 0))).collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_simulated_stacks_folder_is_new_unguessable_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let (a, b) = (super::fresh_data_dir().unwrap(), super::fresh_data_dir().unwrap());
        assert_ne!(a, b);
        for dir in [&a, &b] {
            let name = dir.file_name().unwrap().to_str().unwrap();
            let suffix = name.strip_prefix("callkeeper-sim-").unwrap();
            assert!(!suffix.chars().all(|c| c.is_ascii_digit()), "not a time stamp: {name}");
            assert_eq!(std::fs::metadata(dir).unwrap().permissions().mode() & 0o777, 0o700, "{name}");
            std::fs::remove_dir(dir).unwrap();
        }
    }
}
