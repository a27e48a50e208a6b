//! The data channel table, sans-IO: every channel of the connection by our
//! own id (and by str0m's `ChannelId` once it has one), its state watch and
//! message queue towards the application, the write queue of messages
//! str0m's SCTP buffer had no room for yet, and the flush waiters.
//!
//! It never touches the `Rtc` itself: the driver pops one queued write
//! ([`Channels::pop_write`]), makes it (one str0m mutation, drained before
//! the next) and hands back what did not fit ([`Channels::unpop_write`]).

use crate::{ChannelShared, ChannelState, DataChannel, Error, Message};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use str0m::channel::{ChannelConfig, ChannelId};
use tokio::sync::{mpsc, oneshot, watch, Mutex};

pub(crate) type Reply = oneshot::Sender<Result<(), Error>>;

/// One message waiting for room in str0m's SCTP buffer.
pub(crate) struct Write {
    pub binary: bool,
    pub data: Vec<u8>,
    pub reply: Reply,
}

pub(crate) struct Chan {
    pub label: String,
    pub config: ChannelConfig,
    pub cid: Option<ChannelId>,
    /// Added to the session (not merely part of a pending offer).
    pub confirmed: bool,
    state: watch::Sender<ChannelState>,
    msgs: mpsc::UnboundedSender<Message>,
    /// The application's receiver, until its handle is made.
    rx: Option<mpsc::UnboundedReceiver<Message>>,
    pending: VecDeque<Write>,
    flush: Vec<Reply>,
}

pub(crate) struct Channels {
    chans: HashMap<u64, Chan>,
    by_cid: HashMap<ChannelId, u64>,
    next_id: u64,
    max_message: usize,
}

impl Channels {
    /// `max_message`: the largest message a send accepts (str0m's SCTP
    /// buffer size).
    pub fn new(max_message: usize) -> Channels {
        Channels {
            chans: HashMap::new(),
            by_cid: HashMap::new(),
            next_id: 1,
            max_message,
        }
    }

    pub fn add(
        &mut self,
        label: String,
        config: ChannelConfig,
        cid: Option<ChannelId>,
        confirmed: bool,
    ) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let (state, _) = watch::channel(ChannelState::Connecting);
        let (msgs, rx) = mpsc::unbounded_channel();
        self.chans.insert(
            id,
            Chan {
                label,
                config,
                cid,
                confirmed,
                state,
                msgs,
                rx: Some(rx),
                pending: VecDeque::new(),
                flush: Vec::new(),
            },
        );
        if let Some(cid) = cid {
            self.by_cid.insert(cid, id);
        }
        id
    }

    /// The application's handle for `id`; made once per channel.
    pub fn handle(
        &mut self,
        id: u64,
        cmd: mpsc::UnboundedSender<crate::driver::Cmd>,
    ) -> DataChannel {
        let c = self.chans.get_mut(&id).expect("channel exists");
        let rx = c.rx.take().expect("receiver taken once");
        DataChannel(Arc::new(ChannelShared {
            id,
            label: c.label.clone(),
            state: c.state.subscribe(),
            rx: Mutex::new(rx),
            cmd,
        }))
    }

    pub fn get(&self, id: u64) -> Option<&Chan> {
        self.chans.get(&id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, &Chan)> {
        self.chans.iter().map(|(i, c)| (*i, c))
    }

    /// Channels that still need a negotiation to exist.
    pub fn any_unconfirmed(&self) -> bool {
        self.chans.values().any(|c| !c.confirmed)
    }

    /// Ids of unconfirmed channels str0m has no id for yet.
    pub fn unbound(&self) -> Vec<u64> {
        self.chans
            .iter()
            .filter(|(_, c)| !c.confirmed && c.cid.is_none())
            .map(|(i, _)| *i)
            .collect()
    }

    /// Gives `id` str0m's channel id.
    pub fn bind(&mut self, id: u64, cid: ChannelId, confirmed: bool) {
        if let Some(c) = self.chans.get_mut(&id) {
            if let Some(old) = c.cid.replace(cid) {
                self.by_cid.remove(&old);
            }
            c.confirmed = confirmed;
            self.by_cid.insert(cid, id);
        }
    }

    /// The answer arrived: every channel with a str0m id exists now.
    pub fn confirm_bound(&mut self) {
        for c in self.chans.values_mut() {
            if c.cid.is_some() {
                c.confirmed = true;
            }
        }
    }

    /// A local offer is dropped: forget the str0m ids it gave.
    pub fn rollback(&mut self) {
        for c in self.chans.values_mut() {
            if !c.confirmed {
                if let Some(cid) = c.cid.take() {
                    self.by_cid.remove(&cid);
                }
            }
        }
    }

    /// str0m opened `cid`. Returns the id of a channel the peer created
    /// (the application is to be told), `None` for one of ours.
    pub fn handle_open(&mut self, cid: ChannelId, label: String) -> Option<u64> {
        if let Some(id) = self.by_cid.get(&cid).copied() {
            if let Some(c) = self.chans.get_mut(&id) {
                c.confirmed = true;
                let _ = c.state.send_replace(ChannelState::Open);
            }
            return None;
        }
        let config = ChannelConfig {
            label: label.clone(),
            ..Default::default()
        };
        let id = self.add(label, config, Some(cid), true);
        let _ = self.chans[&id].state.send_replace(ChannelState::Open);
        Some(id)
    }

    pub fn handle_data(&mut self, cid: ChannelId, binary: bool, data: Vec<u8>) {
        if let Some(c) = self.by_cid.get(&cid).and_then(|id| self.chans.get(id)) {
            let msg = if binary {
                Message::Binary(data)
            } else {
                Message::Text(String::from_utf8_lossy(&data).into_owned())
            };
            let _ = c.msgs.send(msg);
        }
    }

    pub fn handle_close(&mut self, cid: ChannelId) {
        if let Some(id) = self.by_cid.remove(&cid) {
            self.close(id);
        }
    }

    /// Closes `id`: its state says closed, every waiter gets an error.
    pub fn close(&mut self, id: u64) {
        if let Some(mut c) = self.chans.remove(&id) {
            let _ = c.state.send_replace(ChannelState::Closed);
            for w in c.pending.drain(..) {
                let _ = w.reply.send(Err(Error::ChannelState("closed")));
            }
            for r in c.flush.drain(..) {
                let _ = r.send(Err(Error::ChannelState("closed")));
            }
            if let Some(cid) = c.cid {
                self.by_cid.remove(&cid);
            }
        }
    }

    pub fn close_all(&mut self) {
        for id in self.chans.keys().copied().collect::<Vec<_>>() {
            self.close(id);
        }
    }

    /// Queues one message; it is answered once str0m took it.
    pub fn send(&mut self, id: u64, binary: bool, data: Vec<u8>, reply: Reply) {
        let Some(c) = self.chans.get_mut(&id) else {
            let _ = reply.send(Err(Error::ChannelState("closed")));
            return;
        };
        if *c.state.borrow() != ChannelState::Open {
            let _ = reply.send(Err(Error::ChannelState("not open yet")));
            return;
        }
        if data.len() > self.max_message {
            let _ = reply.send(Err(Error::MessageTooLarge(data.len(), self.max_message)));
            return;
        }
        c.pending.push_back(Write {
            binary,
            data,
            reply,
        });
    }

    /// Waits for every queued message of `id` to leave str0m's buffer.
    pub fn flush(&mut self, id: u64, reply: Reply) {
        match self.chans.get_mut(&id) {
            Some(c) => c.flush.push(reply),
            None => {
                let _ = reply.send(Err(Error::ChannelState("closed")));
            }
        }
    }

    /// Appends to `out` the channels that have queued writes or flush
    /// waiters (`out` is the caller's, reused, so this does not allocate).
    pub fn busy(&self, out: &mut Vec<u64>) {
        out.extend(
            self.chans
                .iter()
                .filter(|(_, c)| c.cid.is_some() && (!c.pending.is_empty() || !c.flush.is_empty()))
                .map(|(i, _)| *i),
        );
    }

    /// The next queued write of `id`, with str0m's channel id.
    pub fn pop_write(&mut self, id: u64) -> Option<(ChannelId, Write)> {
        let c = self.chans.get_mut(&id)?;
        let cid = c.cid?;
        Some((cid, c.pending.pop_front()?))
    }

    /// A write that did not fit goes back to the front of its queue.
    pub fn unpop_write(&mut self, id: u64, w: Write) {
        match self.chans.get_mut(&id) {
            Some(c) => c.pending.push_front(w),
            None => {
                let _ = w.reply.send(Err(Error::ChannelState("closed")));
            }
        }
    }

    /// Flush waiters of `id` are answered when nothing is queued and
    /// `buffered` (str0m's SCTP buffer for it) is empty.
    pub fn wants_flush(&self, id: u64) -> Option<ChannelId> {
        let c = self.chans.get(&id)?;
        (!c.flush.is_empty()).then_some(c.cid?)
    }

    pub fn handle_buffered(&mut self, id: u64, buffered: usize) {
        if let Some(c) = self.chans.get_mut(&id) {
            if buffered == 0 && c.pending.is_empty() {
                for r in c.flush.drain(..) {
                    let _ = r.send(Ok(()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cid(n: u16) -> ChannelId {
        // str0m's ids are opaque; the only way to make one is to open a
        // channel on an Rtc.
        let mut rtc = str0m::Rtc::new(std::time::Instant::now());
        let mut api = rtc.sdp_api();
        let mut last = None;
        for _ in 0..=n {
            last = Some(api.add_channel(String::new()));
        }
        last.unwrap()
    }

    fn open(ch: &mut Channels, n: u16) -> (u64, DataChannel) {
        let id = ch
            .handle_open(cid(n), format!("c{n}"))
            .expect("new remote channel");
        let dc = ch.handle(id, mpsc::unbounded_channel().0);
        (id, dc)
    }

    fn reply() -> (Reply, oneshot::Receiver<Result<(), Error>>) {
        oneshot::channel()
    }

    #[test]
    fn remote_channel_opens_and_delivers() {
        let mut ch = Channels::new(1000);
        let (id, dc) = open(&mut ch, 0);
        assert_eq!(*dc.0.state.borrow(), ChannelState::Open);
        assert_eq!(dc.label(), "c0");
        // A second open of the same str0m id is not a new channel.
        assert_eq!(ch.handle_open(cid(0), "c0".into()), None);
        ch.handle_data(cid(0), false, b"hi".to_vec());
        ch.handle_data(cid(0), true, vec![1, 2]);
        let mut rx = dc.0.rx.try_lock().unwrap();
        assert_eq!(rx.try_recv().unwrap(), Message::Text("hi".into()));
        assert_eq!(rx.try_recv().unwrap(), Message::Binary(vec![1, 2]));
        drop(rx);
        ch.handle_close(cid(0));
        assert!(ch.get(id).is_none());
        assert_eq!(*dc.0.state.borrow(), ChannelState::Closed);
    }

    #[test]
    fn writes_queue_in_order_and_refused_ones_go_back() {
        let mut ch = Channels::new(4);
        let (id, _dc) = open(&mut ch, 0);
        let (r1, mut w1) = reply();
        let (r2, _w2) = reply();
        let (big, mut wbig) = reply();
        ch.send(id, true, vec![1], r1);
        ch.send(id, false, vec![2], r2);
        ch.send(id, true, vec![0; 5], big);
        assert!(matches!(
            wbig.try_recv().unwrap(),
            Err(Error::MessageTooLarge(5, 4))
        ));
        let mut busy = Vec::new();
        ch.busy(&mut busy);
        assert_eq!(busy, [id]);
        let (c, w) = ch.pop_write(id).unwrap();
        assert_eq!(c, cid(0));
        assert_eq!(w.data, [1]);
        // No room: it goes back to the front.
        ch.unpop_write(id, w);
        let (_, w) = ch.pop_write(id).unwrap();
        assert_eq!(w.data, [1]);
        let _ = w.reply.send(Ok(()));
        assert!(w1.try_recv().unwrap().is_ok());
        let (_, w) = ch.pop_write(id).unwrap();
        assert!(!w.binary);
        assert_eq!(w.data, [2]);
        assert!(ch.pop_write(id).is_none());
    }

    #[test]
    fn flush_waits_for_queue_and_buffer() {
        let mut ch = Channels::new(100);
        let (id, _dc) = open(&mut ch, 0);
        let (r, _w) = reply();
        ch.send(id, true, vec![1], r);
        let (f, mut fw) = reply();
        ch.flush(id, f);
        assert_eq!(ch.wants_flush(id), Some(cid(0)));
        // Still queued: no answer even with an empty buffer.
        ch.handle_buffered(id, 0);
        assert!(fw.try_recv().is_err());
        let _ = ch.pop_write(id).unwrap();
        ch.handle_buffered(id, 10);
        assert!(fw.try_recv().is_err());
        ch.handle_buffered(id, 0);
        assert!(fw.try_recv().unwrap().is_ok());
        assert_eq!(ch.wants_flush(id), None);
    }

    #[test]
    fn closing_answers_every_waiter_with_an_error() {
        let mut ch = Channels::new(100);
        let (id, dc) = open(&mut ch, 0);
        let (r, mut w) = reply();
        ch.send(id, true, vec![1], r);
        let (f, mut fw) = reply();
        ch.flush(id, f);
        ch.close(id);
        assert!(matches!(w.try_recv().unwrap(), Err(Error::ChannelState(_))));
        assert!(matches!(
            fw.try_recv().unwrap(),
            Err(Error::ChannelState(_))
        ));
        assert_eq!(*dc.0.state.borrow(), ChannelState::Closed);
        // Sends to a closed channel fail at once.
        let (r, mut w) = reply();
        ch.send(id, true, vec![1], r);
        assert!(matches!(w.try_recv().unwrap(), Err(Error::ChannelState(_))));
    }

    #[test]
    fn local_channel_needs_negotiation_until_confirmed() {
        let mut ch = Channels::new(100);
        let id = ch.add("x".into(), ChannelConfig::default(), None, false);
        let (r, mut w) = reply();
        ch.send(id, true, vec![1], r);
        assert!(matches!(w.try_recv().unwrap(), Err(Error::ChannelState(_))));
        assert!(ch.any_unconfirmed());
        assert_eq!(ch.unbound(), [id]);
        ch.bind(id, cid(0), false);
        assert!(ch.unbound().is_empty());
        // A dropped offer forgets the id; the answer confirms it.
        ch.rollback();
        assert_eq!(ch.unbound(), [id]);
        ch.bind(id, cid(0), false);
        ch.confirm_bound();
        assert!(!ch.any_unconfirmed());
        // Our own channel opening is not news for the application.
        assert_eq!(ch.handle_open(cid(0), "x".into()), None);
        assert_eq!(*ch.get(id).unwrap().state.borrow(), ChannelState::Open);
    }
}
