//! The local stack `simulate` starts when it is given no target: `callkeeper serve` (webhooks,
//! watchdog, reconciler, workers) and two `callkeeper relay`s (the media socket) as processes of
//! this same binary on one data folder, as Lambda and Fargate tasks are in AWS, so a scenario can
//! kill a relay, freeze it or replace it while the webhooks go on answering. The relays stand
//! behind a small balancer ([`super::balancer`]) that plays the ALB: each new WebSocket goes to a
//! relay whose `/readyz` answers, so a call that moves to a new stream reaches a healthy relay.
//! Their Twilio is the simulator's [`FakeTwilio`]; with `--offline` their OpenAI is the
//! simulator's too.

use super::balancer::Balancer;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long a process may take to answer `/healthz`.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Relays behind the balancer.
pub const RELAYS: usize = 2;
/// How long a relay told to stop (SIGTERM) may take to move its calls and exit.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// One relay's slot: its port stays, its process may be replaced.
struct Relay {
    addr: SocketAddr,
    process: Option<Child>,
    /// Processes started in this slot so far: names the next one (`relay-a`, `relay-a2`, …).
    starts: u32,
}

pub struct LocalStack {
    pub data_dir: PathBuf,
    pub server: SocketAddr,
    /// The balancer's address: the relays' public URL.
    pub relay: SocketAddr,
    balancer: Balancer,
    relays: Vec<Relay>,
    env: Vec<(String, String)>,
    serve: Child,
}

/// CPU time and memory of the stack's processes, from `/proc` (Linux).
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub cpu_ms: u64,
    pub rss_kib: u64,
}

impl LocalStack {
    /// Starts the processes with `env` (on top of this process's environment) and waits until
    /// all answer.
    pub async fn start(data_dir: &Path, env: Vec<(String, String)>) -> anyhow::Result<LocalStack> {
        std::fs::create_dir_all(data_dir)?;
        let server = free_port()?;
        let relays: Vec<Relay> =
            (0..RELAYS).map(|_| Ok(Relay { addr: free_port()?, process: None, starts: 0 })).collect::<anyhow::Result<_>>()?;
        let balancer = Balancer::start(relays.iter().map(|r| r.addr).collect()).await?;
        let mut env = env;
        env.extend([
            ("CALLKEEPER_DATA_DIR".into(), data_dir.display().to_string()),
            ("CALLKEEPER_STORE".into(), "embedded".into()),
            ("PUBLIC_BASE_URL".into(), format!("http://{server}")),
            ("RELAY_PUBLIC_URL".into(), format!("ws://{}", balancer.addr)),
        ]);
        let serve = spawn(data_dir, &env, &["serve", "--port", &server.port().to_string()], "serve.log")?;
        let mut stack = LocalStack { data_dir: data_dir.to_path_buf(), server, relay: balancer.addr, balancer, relays, env, serve };
        wait_healthy(server).await?;
        for i in 0..RELAYS {
            stack.start_relay(i).await?;
        }
        Ok(stack)
    }

    /// Starts relay `i` (again, after it was killed or stopped) on its port.
    pub async fn start_relay(&mut self, i: usize) -> anyhow::Result<()> {
        let slot = &mut self.relays[i];
        slot.starts += 1;
        let name = format!("relay-{}{}", (b'a' + i as u8) as char, if slot.starts > 1 { slot.starts.to_string() } else { String::new() });
        let mut env = self.env.clone();
        env.push(("RELAY_INSTANCE_ID".into(), name.clone()));
        let child = spawn(&self.data_dir, &env, &["relay", "--port", &slot.addr.port().to_string()], &format!("{name}.log"))?;
        slot.process = Some(child);
        wait_healthy(slot.addr).await
    }

    /// Starts every relay slot that has no process.
    pub async fn start_missing_relays(&mut self) -> anyhow::Result<()> {
        for i in 0..RELAYS {
            if self.relays[i].process.is_none() {
                self.start_relay(i).await?;
            }
        }
        Ok(())
    }

    /// The relay holding the newest live stream, if any: where a call alone on the stack is.
    pub fn relay_holding_a_call(&self) -> Option<usize> {
        self.balancer.busiest_backend()
    }

    /// SIGKILL: the relay dies with its sockets, as a crashed task does.
    pub fn kill_relay(&mut self, i: usize) {
        if let Some(mut child) = self.relays[i].process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn kill_all_relays(&mut self) {
        for i in 0..RELAYS {
            self.kill_relay(i);
        }
    }

    /// SIGSTOP and SIGCONT: a relay that hangs with its sockets open (no frames, no heartbeats).
    pub fn freeze_relay(&self, i: usize, frozen: bool) {
        if let Some(child) = &self.relays[i].process {
            let signal = if frozen { "-STOP" } else { "-CONT" };
            let _ = Command::new("kill").args([signal, &child.id().to_string()]).status();
        }
    }

    pub fn thaw_all_relays(&self) {
        for i in 0..RELAYS {
            self.freeze_relay(i, false);
        }
    }

    /// SIGTERM, as ECS stops a task: the relay stops being ready, moves its calls to other
    /// relays and exits. Returns once it has, or after [`STOP_TIMEOUT`] (then it is killed).
    pub async fn stop_relay(&mut self, i: usize) -> anyhow::Result<()> {
        let Some(mut child) = self.relays[i].process.take() else { return Ok(()) };
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let until = tokio::time::Instant::now() + STOP_TIMEOUT;
        while tokio::time::Instant::now() < until {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        anyhow::bail!("relay {i} did not exit within {} s of SIGTERM", STOP_TIMEOUT.as_secs())
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

    /// The processes' CPU time so far and resident memory now.
    pub fn usage(&self) -> Option<Usage> {
        let mut total = Usage::default();
        let relays = self.relays.iter().filter_map(|r| r.process.as_ref().map(Child::id));
        for pid in std::iter::once(self.serve.id()).chain(relays) {
            let one = process_usage(pid)?;
            total.cpu_ms += one.cpu_ms;
            total.rss_kib += one.rss_kib;
        }
        Some(total)
    }
}

impl Drop for LocalStack {
    fn drop(&mut self) {
        self.thaw_all_relays();
        self.kill_all_relays();
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
