//! TURN over TCP and over TLS (`turns:`), the I/O side: one task per
//! stream relay connects to the server (and runs the TLS handshake) and
//! shuttles whole frames between the stream and the driver.
//!
//! [`TcpTurns`] keeps every task by its relay's stable id, with the sender
//! for outgoing frames once connected. A relay that is replaced or dropped
//! has its task aborted (and its writer ends once its queue is closed), so
//! no connection outlives its relay; dropping the table aborts them all.

use crate::driver::Cmd;
use crate::gather::RelayId;
use crate::tls::{Stream, TlsClient};
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
    /// `tls`: the server name to verify, and what to trust (`None`: the
    /// system's roots).
    pub fn connect(
        &mut self,
        relay: RelayId,
        server: SocketAddr,
        tls: Option<(String, Option<TlsClient>)>,
        cmd: mpsc::UnboundedSender<Cmd>,
    ) {
        let reader = tokio::spawn(tcp_turn(relay, server, tls, cmd));
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

/// Connects to a TURN server over TCP (and TLS) and shuttles frames both
/// ways.
async fn tcp_turn(
    relay: RelayId,
    addr: SocketAddr,
    tls: Option<(String, Option<TlsClient>)>,
    cmd: mpsc::UnboundedSender<Cmd>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let closed = |why: String| {
        let _ = cmd.send(Cmd::TcpClosed { turn: relay, why });
    };
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
    let stream: Box<dyn Stream> = match tls {
        None => Box::new(stream),
        Some((name, client)) => {
            let client = match client.map(Ok).unwrap_or_else(TlsClient::system) {
                Ok(c) => c,
                Err(e) => return closed(e.to_string()),
            };
            match tokio::time::timeout(Duration::from_secs(5), client.connect(&name, stream)).await
            {
                Ok(Ok(s)) => Box::new(s),
                Ok(Err(why)) => return closed(why),
                Err(_) => return closed("TLS handshake timed out".into()),
            }
        }
    };
    let (mut rd, mut wr) = tokio::io::split(stream);
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
    let mut framer = stun::Framer::new();
    let why = loop {
        match rd.read(framer.read_buf()).await {
            Ok(0) => break "closed by server".to_string(),
            Ok(n) => framer.advance(n),
            Err(e) => break e.to_string(),
        }
        let lost = loop {
            match framer.pop() {
                Ok(Some(f)) => {
                    // The driver owns what crosses the channel: one copy per frame.
                    let data = f.as_bytes().to_vec();
                    if cmd.send(Cmd::TcpFrame { turn: relay, data }).is_err() {
                        writer.abort();
                        return;
                    }
                }
                Ok(None) => break None,
                Err(e) => break Some(e),
            }
        };
        if let Some(e) = lost {
            break format!("lost TURN framing: {e}");
        }
    };
    writer.abort();
    let _ = cmd.send(Cmd::TcpClosed { turn: relay, why });
}
