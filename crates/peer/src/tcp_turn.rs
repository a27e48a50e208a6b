//! TURN over TCP, the I/O side: one task per TCP relay connects to the
//! server and shuttles whole frames between the stream and the driver.
//!
//! [`TcpTurns`] keeps every task by its relay's stable id, with the sender
//! for outgoing frames once connected. A relay that is replaced or dropped
//! has its task aborted (and its writer ends once its queue is closed), so
//! no connection outlives its relay; dropping the table aborts them all.

use crate::driver::Cmd;
use crate::gather::RelayId;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

struct Task {
    /// Frames to the writer; `None` until connected.
    tx: Option<mpsc::UnboundedSender<Vec<u8>>>,
    reader: JoinHandle<()>,
}

#[derive(Default)]
pub(crate) struct TcpTurns {
    tasks: HashMap<RelayId, Task>,
}

impl TcpTurns {
    /// Starts the connection task for `relay`. Its news comes back as
    /// [`Cmd::TcpConnected`], [`Cmd::TcpFrame`] and [`Cmd::TcpClosed`].
    pub fn connect(&mut self, relay: RelayId, server: SocketAddr, cmd: mpsc::UnboundedSender<Cmd>) {
        let reader = tokio::spawn(tcp_turn(relay, server, cmd));
        if let Some(old) = self.tasks.insert(relay, Task { tx: None, reader }) {
            old.reader.abort();
        }
    }

    /// The connection is up; false if the relay is gone meanwhile.
    pub fn connected(&mut self, relay: RelayId, tx: mpsc::UnboundedSender<Vec<u8>>) -> bool {
        match self.tasks.get_mut(&relay) {
            Some(t) => {
                t.tx = Some(tx);
                true
            }
            None => false,
        }
    }

    /// Queues one frame. The writer task owns its buffers: one copy per
    /// TCP frame.
    pub fn send(&self, relay: RelayId, data: &[u8]) {
        if let Some(tx) = self.tasks.get(&relay).and_then(|t| t.tx.as_ref()) {
            let _ = tx.send(data.to_vec());
        }
    }

    /// Ends `relay`'s connection (its task ended, or the relay is gone).
    pub fn remove(&mut self, relay: RelayId) {
        if let Some(t) = self.tasks.remove(&relay) {
            t.reader.abort();
        }
    }
}

impl Drop for TcpTurns {
    fn drop(&mut self) {
        for t in self.tasks.values() {
            t.reader.abort();
        }
    }
}

/// Connects to a TURN server over TCP and shuttles frames both ways.
async fn tcp_turn(relay: RelayId, addr: SocketAddr, cmd: mpsc::UnboundedSender<Cmd>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream =
        match tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
            .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                let _ = cmd.send(Cmd::TcpClosed {
                    turn: relay,
                    why: format!("connect: {e}"),
                });
                return;
            }
            Err(_) => {
                let _ = cmd.send(Cmd::TcpClosed {
                    turn: relay,
                    why: "connect timed out".into(),
                });
                return;
            }
        };
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    if cmd.send(Cmd::TcpConnected { turn: relay, tx }).is_err() {
        return;
    }
    // When the reader is aborted, the writer still writes what is queued
    // (e.g. the final Refresh) and ends once the driver drops the sender.
    let writer = tokio::spawn(async move {
        while let Some(buf) = rx.recv().await {
            if wr.write_all(&buf).await.is_err() {
                break;
            }
        }
    });
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let why = loop {
        match rd.read(&mut chunk).await {
            Ok(0) => break "closed by server".to_string(),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => break e.to_string(),
        }
        let mut off = 0;
        let bad = loop {
            match stun::frame_len(&buf[off..]) {
                Ok(Some(f)) if buf.len() - off >= f.len() => {
                    let data = buf[off..off + f.len()].to_vec();
                    off += f.len();
                    if cmd.send(Cmd::TcpFrame { turn: relay, data }).is_err() {
                        writer.abort();
                        return;
                    }
                }
                Ok(_) => break false,
                Err(_) => break true,
            }
        };
        buf.drain(..off);
        if bad {
            break "lost TURN framing".to_string();
        }
    };
    writer.abort();
    let _ = cmd.send(Cmd::TcpClosed { turn: relay, why });
}
