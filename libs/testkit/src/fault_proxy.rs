//! A TCP relay in front of a real dependency (PostgreSQL, moto_server) that plays network
//! faults on command:
//!
//! - [`Fault::None`]: bytes pass both ways;
//! - [`Fault::Cut`]: open connections are closed and new ones are closed on accept, so
//!   clients see errors at once;
//! - [`Fault::BlackHole`]: connections are accepted and kept open, but no byte moves
//!   either way, as across a partition where packets are dropped: clients hear nothing,
//!   ever. Bytes read meanwhile are held and delivered when the fault ends, as TCP would
//!   retransmit them.
//! - [`Fault::HoldRequests`]: like a black hole, but only for connections on which the
//!   client sends a request containing the pattern (an SQS `X-Amz-Target`, say): from that
//!   request on, nothing the client sends arrives, and nothing comes back, until the fault
//!   ends. Other requests pass, so one service of an endpoint can hang while another works.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The fault the relay plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    Cut,
    BlackHole,
    HoldRequests(&'static str),
}

/// A relay on a local port to `upstream`. Dropping it stops the relay: the listener
/// closes and every connection, held or not, ends.
#[derive(Debug)]
pub struct FaultProxy {
    pub addr: SocketAddr,
    fault: watch::Sender<Fault>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl FaultProxy {
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        // Connections hold receivers only: when the sender goes with the proxy, their
        // waits end.
        let (fault, rx) = watch::channel(Fault::None);
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let mut fault = rx.clone();
                if *fault.borrow_and_update() == Fault::Cut {
                    continue; // dropped: the client sees the connection close
                }
                tokio::spawn(async move {
                    // A black-holed connection is accepted and never answered, not even
                    // reached through to the upstream, until the fault ends.
                    if !wait_passing(&mut fault, &AtomicBool::new(false)).await {
                        return;
                    }
                    let connect = TcpStream::connect(upstream);
                    let Ok(Ok(outbound)) =
                        tokio::time::timeout(std::time::Duration::from_secs(5), connect).await
                    else {
                        return;
                    };
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    let held = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                    tokio::select! {
                        _ = pipe(ri, wo, fault.clone(), held.clone(), true) => {}
                        _ = pipe(ro, wi, fault, held, false) => {}
                    }
                });
            }
        });
        Ok(Self {
            addr,
            fault,
            accept,
        })
    }

    /// `host:port` of the relay.
    pub fn host_port(&self) -> String {
        self.addr.to_string()
    }

    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }
}

/// Waits until bytes may move: true, or false when the connection is to be cut. `held`:
/// this connection carried a request that `HoldRequests` matched.
async fn wait_passing(fault: &mut watch::Receiver<Fault>, held: &AtomicBool) -> bool {
    let holds = |f: &Fault| match f {
        Fault::BlackHole => true,
        Fault::HoldRequests(_) => held.load(Ordering::SeqCst),
        Fault::None | Fault::Cut => false,
    };
    match fault.wait_for(|f| !holds(f)).await {
        Ok(f) => *f != Fault::Cut,
        Err(_) => false,
    }
}

/// Copies one direction, holding what it read while the fault is a black hole, and ending
/// (closing both halves) on a cut.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut fault: watch::Receiver<Fault>,
    held: Arc<AtomicBool>,
    requests: bool,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if !wait_passing(&mut fault, &held).await {
            return;
        }
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown().await;
                    return;
                }
                Ok(n) => n,
            },
            // A change while reading: a black hole holds, a cut ends.
            _ = fault.changed() => continue,
        };
        if requests {
            if let Fault::HoldRequests(pattern) = *fault.borrow() {
                let p = pattern.as_bytes();
                if buf[..n].windows(p.len()).any(|w| w == p) {
                    held.store(true, Ordering::SeqCst);
                }
            }
        }
        if !wait_passing(&mut fault, &held).await || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
