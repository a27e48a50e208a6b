// web/sdk/session.js on its own (no browser, no server): the seq/ack
// bookkeeping and the reconnect backoff that SignalingChannel drives.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SessionTracker, backoffDelay, DEFAULT_RECONNECT } from '../../web/sdk/session.js';

const welcome = { type: 'welcome', room: 'r', peer: 'me', peers: [], iceServers: [], session: 'tok-1', resumeWindow: 20 };

test('server seqs: duplicates and replays at or below the highest seen are dropped', () => {
  const s = new SessionTracker();
  s.welcome(welcome);
  assert.equal(s.enabled, true);
  assert.deepEqual([1, 2, 3].map((n) => s.accept(n)), [true, true, true]);
  // A replay after resume overlapping what already arrived.
  assert.deepEqual([2, 3, 4, 5].map((n) => s.accept(n)), [false, false, true, true]);
  assert.equal(s.lastSeen, 5);
  // Messages without seq (v1 servers, welcome/pong/error) are always delivered.
  assert.equal(s.accept(undefined), true);
  assert.equal(s.accept('7'), true);
  assert.equal(s.lastSeen, 5);
  assert.deepEqual(s.resumeMessage('r'), { type: 'resume', session: 'tok-1', seq: 5, room: 'r' });
});

test('acks: at 64 unacked at once, and on the timer whenever any is unacked', () => {
  const s = new SessionTracker();
  s.welcome(welcome);
  assert.equal(s.ackDue(true), null, 'nothing to ack yet');
  for (let n = 1; n <= 63; n++) {
    s.accept(n);
    assert.equal(s.ackDue(false), null, `no early ack at ${n}`);
  }
  s.accept(64);
  assert.equal(s.ackDue(false), 64);
  assert.equal(s.ackDue(true), null, 'already acked');
  s.accept(65);
  assert.equal(s.ackDue(false), null);
  assert.equal(s.ackDue(true), 65, 'the once-a-second timer acks one message');
  // Without a session there is nothing to ack.
  const v1 = new SessionTracker();
  v1.welcome({ type: 'welcome' });
  v1.accept(1);
  assert.equal(v1.ackDue(true), null);
});

test('client seqs: numbered from 1, kept until acked, re-sent after resumed above its ack', () => {
  const s = new SessionTracker();
  s.welcome(welcome);
  const sent = [1, 2, 3, 4].map((i) => s.number({ type: 'signal', to: 'p', data: { i } }));
  assert.deepEqual(sent.map((m) => m.seq), [1, 2, 3, 4]);
  s.acked(2);
  assert.deepEqual(s.outbox.map((m) => m.seq), [3, 4]);
  s.acked(1); // an old ack changes nothing
  assert.deepEqual(s.outbox.map((m) => m.seq), [3, 4]);
  s.number({ type: 'signal', to: 'p', data: { i: 5 } });
  const resend = s.resumed({ type: 'resumed', session: 'tok-2', resumeWindow: 30, ack: 3 });
  assert.deepEqual(resend.map((m) => [m.seq, m.data.i]), [[4, 4], [5, 5]]);
  assert.equal(s.token, 'tok-2', 'resumed may renew the token');
  assert.equal(s.resumeWindow, 30);
  // The next signal continues the same numbering.
  assert.equal(s.number({ type: 'signal', to: 'p', data: {} }).seq, 6);
  // A new welcome (rejoin) is a new session: numbering and outbox start over.
  s.welcome({ ...welcome, session: 'tok-3' });
  assert.deepEqual(s.outbox, []);
  assert.equal(s.number({ type: 'signal', to: 'p', data: {} }).seq, 1);
  assert.equal(s.lastSeen, 0);
});

test('without a session (v1 server) signals carry no seq and nothing is kept', () => {
  const s = new SessionTracker();
  s.welcome({ type: 'welcome', room: 'r', peer: 'me' });
  assert.equal(s.enabled, false);
  const m = s.number({ type: 'signal', to: 'p', data: {} });
  assert.equal('seq' in m, false);
  assert.deepEqual(s.outbox, []);
  assert.equal(s.windowPassed(1e9), false, 'no window known: never assume it passed');
});

test('resume window: passed only after resumeWindow seconds', () => {
  const s = new SessionTracker();
  s.welcome(welcome);
  assert.equal(s.windowPassed(19_999), false);
  assert.equal(s.windowPassed(20_001), true);
  s.end();
  assert.equal(s.enabled, false);
});

test('backoff: first retry within 1 s, doubling with jitter, capped at 10 s', () => {
  const lo = () => 0;
  const hi = () => 0.999999;
  assert.deepEqual(DEFAULT_RECONNECT, { initialDelay: 1000, maxDelay: 10_000, maxAttempts: 10 });
  assert.deepEqual([0, 1, 2, 3, 4, 5, 20].map((a) => backoffDelay(a, {}, lo)), [500, 1000, 2000, 4000, 5000, 5000, 5000]);
  assert.deepEqual([0, 1, 2, 3, 4, 5, 20].map((a) => backoffDelay(a, {}, hi)), [1000, 2000, 4000, 8000, 10_000, 10_000, 10_000]);
  // Real randomness stays inside the bounds and does vary.
  const seen = new Set();
  for (let i = 0; i < 200; i++) {
    const d = backoffDelay(0);
    assert.ok(d >= 500 && d <= 1000, `first delay ${d}`);
    seen.add(d);
  }
  assert.ok(seen.size > 20, 'jittered');
  assert.equal(backoffDelay(3, { initialDelay: 100, maxDelay: 300 }, hi), 300);
});
