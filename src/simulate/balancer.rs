//! The part the ALB plays in front of the relays: each new connection goes to a relay whose
//! `/readyz` answers 200 (round robin among them), and its bytes are passed both ways untouched.
//! A draining relay answers 503, a frozen one not at all, a killed one refuses: none gets a new
//! stream. A relay that dies takes its connections with it, as a crashed task does.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// How long a relay may take to answer `/readyz` before the next one is asked.
const READY_TIMEOUT: Duration = Duration::from_millis(300);

struct Backend {
    addr: SocketAddr,
    live: AtomicUsize,
    /// When it was last given a connection, by the balancer's count of connections.
    last_given: AtomicU64,
}

pub struct Balancer {
    pub addr: SocketAddr,
    backends: Arc<Vec<Backend>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Balancer {
    pub async fn start(backends: Vec<SocketAddr>) -> anyhow::Result<Balancer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let backends: Arc<Vec<Backend>> =
            Arc::new(backends.into_iter().map(|addr| Backend { addr, live: AtomicUsize::new(0), last_given: AtomicU64::new(0) }).collect());
        let shared = backends.clone();
        let task = tokio::spawn(async move {
            let client = reqwest::Client::builder().timeout(READY_TIMEOUT).build().expect("a plain HTTP client");
            let given = Arc::new(AtomicU64::new(0));
            while let Ok((inbound, _)) = listener.accept().await {
                let (backends, client, given) = (shared.clone(), client.clone(), given.clone());
                tokio::spawn(async move {
                    let n = given.fetch_add(1, Ordering::SeqCst) + 1;
                    let Some(i) = ready_backend(&client, &backends, n as usize).await else {
                        tracing::warn!("balancer: no relay is ready; the connection is refused");
                        return;
                    };
                    let backend = &backends[i];
                    let Ok(mut outbound) = TcpStream::connect(backend.addr).await else { return };
                    let _ = (inbound.set_nodelay(true), outbound.set_nodelay(true));
                    backend.live.fetch_add(1, Ordering::SeqCst);
                    backend.last_given.store(n, Ordering::SeqCst);
                    let mut inbound = inbound;
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    backend.live.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Ok(Balancer { addr, backends, task })
    }

    /// The relay given the newest connection still open.
    pub fn busiest_backend(&self) -> Option<usize> {
        self.backends
            .iter()
            .enumerate()
            .filter(|(_, b)| b.live.load(Ordering::SeqCst) > 0)
            .max_by_key(|(_, b)| b.last_given.load(Ordering::SeqCst))
            .map(|(i, _)| i)
    }
}

/// The first relay, from the `n`-th on, whose `/readyz` answers 200.
async fn ready_backend(client: &reqwest::Client, backends: &[Backend], n: usize) -> Option<usize> {
    for k in 0..backends.len() {
        let i = (n + k) % backends.len();
        let url = format!("http://{}{}", backends[i].addr, callkeeper_core::routes::READYZ);
        if client.get(url).send().await.is_ok_and(|r| r.status().is_success()) {
            return Some(i);
        }
    }
    None
}
