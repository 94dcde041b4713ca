//! The local stack `simulate` starts when it is given no target: `callkeeper serve` (webhooks,
//! watchdog, reconciler, workers) and `callkeeper relay` (the media socket) as two processes of
//! this same binary on one data folder, as Lambda and Fargate are two in AWS, so a scenario can
//! kill the relay, or freeze it, while the webhooks go on answering. Their Twilio is the
//! simulator's [`FakeTwilio`]; with `--offline` their OpenAI is the simulator's too.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long a process may take to answer `/healthz`.
const START_TIMEOUT: Duration = Duration::from_secs(30);

pub struct LocalStack {
    pub data_dir: PathBuf,
    pub server: SocketAddr,
    pub relay: SocketAddr,
    env: Vec<(String, String)>,
    serve: Child,
    relay_process: Option<Child>,
}

/// CPU time and memory of the stack's processes, from `/proc` (Linux).
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub cpu_ms: u64,
    pub rss_kib: u64,
}

impl LocalStack {
    /// Starts both processes with `env` (on top of this process's environment) and waits until
    /// both answer.
    pub async fn start(data_dir: &Path, env: Vec<(String, String)>) -> anyhow::Result<LocalStack> {
        std::fs::create_dir_all(data_dir)?;
        let server = free_port()?;
        let relay = free_port()?;
        let mut env = env;
        env.extend([
            ("CALLKEEPER_DATA_DIR".into(), data_dir.display().to_string()),
            ("CALLKEEPER_STORE".into(), "embedded".into()),
            ("PUBLIC_BASE_URL".into(), format!("http://{server}")),
            ("RELAY_PUBLIC_URL".into(), format!("ws://{relay}")),
        ]);
        let serve = spawn(data_dir, &env, &["serve", "--port", &server.port().to_string()], "serve.log")?;
        let mut stack = LocalStack { data_dir: data_dir.to_path_buf(), server, relay, env, serve, relay_process: None };
        wait_healthy(server).await?;
        stack.start_relay().await?;
        Ok(stack)
    }

    /// Starts the relay (again, after [`LocalStack::kill_relay`]) on its port.
    pub async fn start_relay(&mut self) -> anyhow::Result<()> {
        let child = spawn(&self.data_dir, &self.env, &["relay", "--port", &self.relay.port().to_string()], "relay.log")?;
        self.relay_process = Some(child);
        wait_healthy(self.relay).await
    }

    /// SIGKILL: the relay dies with its sockets, as a crashed task does.
    pub fn kill_relay(&mut self) {
        if let Some(mut child) = self.relay_process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP and SIGCONT: a relay that hangs with its sockets open (no frames, no heartbeats).
    pub fn freeze_relay(&self, frozen: bool) {
        if let Some(child) = &self.relay_process {
            let signal = if frozen { "-STOP" } else { "-CONT" };
            let _ = Command::new("kill").args([signal, &child.id().to_string()]).status();
        }
    }

    /// Holds the store's write lock for `duration` from another connection, as a store that
    /// refuses writes would: the processes' writes wait, then fail.
    pub fn lock_store(&self, duration: Duration) -> tokio::task::JoinHandle<anyhow::Result<()>> {
        let path = self.data_dir.join(callkeeper_core::store::embedded::DATABASE_FILE);
        tokio::task::spawn_blocking(move || {
            let conn = rusqlite::Connection::open(path)?;
            conn.busy_timeout(Duration::from_secs(10))?;
            conn.execute_batch("BEGIN EXCLUSIVE")?;
            std::thread::sleep(duration);
            conn.execute_batch("ROLLBACK")?;
            Ok(())
        })
    }

    /// Both processes' CPU time so far and resident memory now.
    pub fn usage(&self) -> Option<Usage> {
        let mut total = Usage::default();
        for pid in std::iter::once(self.serve.id()).chain(self.relay_process.as_ref().map(Child::id)) {
            let one = process_usage(pid)?;
            total.cpu_ms += one.cpu_ms;
            total.rss_kib += one.rss_kib;
        }
        Some(total)
    }
}

impl Drop for LocalStack {
    fn drop(&mut self) {
        self.freeze_relay(false);
        self.kill_relay();
        let _ = self.serve.kill();
        let _ = self.serve.wait();
    }
}

fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn spawn(data_dir: &Path, env: &[(String, String)], args: &[&str], log: &str) -> anyhow::Result<Child> {
    let log = std::fs::File::create(data_dir.join(log))?;
    let child = Command::new(std::env::current_exe()?)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    Ok(child)
}

async fn wait_healthy(addr: SocketAddr) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let until = tokio::time::Instant::now() + START_TIMEOUT;
    while tokio::time::Instant::now() < until {
        if let Ok(response) = client.get(format!("http://{addr}/healthz")).timeout(Duration::from_secs(1)).send().await {
            if response.status().is_success() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the local stack did not answer on {addr} within {} s (see its log in the data folder)", START_TIMEOUT.as_secs())
}

#[cfg(target_os = "linux")]
fn process_usage(pid: u32) -> Option<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    // USER_HZ is 100 on every Linux we run on.
    Some(Usage { cpu_ms: ticks * 10, rss_kib })
}

#[cfg(not(target_os = "linux"))]
fn process_usage(_pid: u32) -> Option<Usage> {
    None
}
