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

use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The fault the relay plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    Cut,
    BlackHole,
}

/// A relay on a local port to `upstream`.
#[derive(Debug)]
pub struct FaultProxy {
    pub addr: SocketAddr,
    fault: watch::Sender<Fault>,
}

impl FaultProxy {
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (fault, _) = watch::channel(Fault::None);
        let tx = fault.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let mut fault = tx.subscribe();
                if *fault.borrow_and_update() == Fault::Cut {
                    continue; // dropped: the client sees the connection close
                }
                tokio::spawn(async move {
                    // A black-holed connection is accepted and never answered, not even
                    // reached through to the upstream, until the fault ends.
                    if !wait_passing(&mut fault).await {
                        return;
                    }
                    let Ok(outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    tokio::select! {
                        _ = pipe(ri, wo, fault.clone()) => {}
                        _ = pipe(ro, wi, fault) => {}
                    }
                });
            }
        });
        Ok(Self { addr, fault })
    }

    /// `host:port` of the relay.
    pub fn host_port(&self) -> String {
        self.addr.to_string()
    }

    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }
}

/// Waits until bytes may move: true, or false when the connection is to be cut.
async fn wait_passing(fault: &mut watch::Receiver<Fault>) -> bool {
    match fault.wait_for(|f| *f != Fault::BlackHole).await {
        Ok(f) => *f == Fault::None,
        Err(_) => false,
    }
}

/// Copies one direction, holding what it read while the fault is a black hole, and ending
/// (closing both halves) on a cut.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut fault: watch::Receiver<Fault>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if !wait_passing(&mut fault).await {
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
        if !wait_passing(&mut fault).await || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
