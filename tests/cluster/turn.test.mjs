// TURN across nodes: every node runs its own TURN server, and with one
// shared --turn-secret the time-limited credentials that any node hands out
// (GET /v1/ice-servers, the same as welcome.iceServers) work on every
// node's TURN. An independent client, coturn's turnutils_uclient, relays
// through node 2 with node 1's credentials; a node with another secret
// refuses them. Needs no Redis: TURN credentials are stateless.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { startCluster, startNode, spawnProc, withLogs, sleep } from './harness.mjs';

const UCLIENT = '/usr/bin/turnutils_uclient';

let cluster;
/** A node with a secret of its own. */
let stranger;

before(async () => {
  cluster = await startCluster({ count: 2, redis: false, balancer: false });
  stranger = await startNode('stranger', ['--turn-secret', 'not-the-shared-one']);
});

after(async () => {
  await stranger?.stop();
  await cluster?.stop();
});

/** The TURN entry (the one with credentials) of a node's /v1/ice-servers. */
async function turnCredentials(node) {
  const res = await fetch(`${node.origin}/v1/ice-servers`);
  assert.equal(res.status, 200);
  const { iceServers } = await res.json();
  const turn = iceServers.find((s) => typeof s.username === 'string');
  assert.ok(turn, `${node.name} hands out TURN credentials: ${JSON.stringify(iceServers)}`);
  const urls = [].concat(turn.urls);
  assert.ok(urls.some((u) => u.includes(`:${node.turnPort}`)), `${node.name}'s TURN URLs name its own port ${node.turnPort}: ${urls}`);
  return { username: turn.username, credential: turn.credential };
}

/**
 * Run uclient in client-to-client mode (`-y`: two allocations that send to
 * each other through the relay) against `node`'s TURN port. `-s` uses Send
 * and Data indications (coturn picks channel numbers outside RFC 8656's
 * range). Returns whether it exited 0 and the message counts it printed.
 * @param {{turnPort: number}} node
 * @param {{username: string, credential: string}} cred
 * @param {boolean} tcp
 */
async function uclient(node, cred, tcp) {
  const args = ['-p', String(node.turnPort), '-n', '40', '-m', '2', '-l', '400', '-z', '5', '-s', '-y',
    ...(tcp ? ['-t'] : []), '-u', cred.username, '-w', cred.credential, '127.0.0.1'];
  const p = spawnProc('uclient', UCLIENT, args);
  const timer = setTimeout(() => p.kill('SIGKILL'), 30_000);
  const { code } = await p.exit;
  clearTimeout(timer);
  const out = p.output;
  // The summary line ("start_mclient: tot_send_msgs=N, tot_recv_msgs=M")
  // comes last; the progress lines before it carry "msz=".
  const m = [...out.matchAll(/start_mclient: tot_send_msgs=(\d+), tot_recv_msgs=(\d+)/g)].pop();
  const lost = out.match(/Total lost packets (\d+)/);
  return {
    ok: code === 0,
    sent: m ? Number(m[1]) : 0,
    received: m ? Number(m[2]) : 0,
    lost: lost ? Number(lost[1]) : null,
    out: `turnutils_uclient ${args.join(' ')}\nexit ${code}\n${out.slice(-3000)}`,
  };
}

test('credentials from one node relay through the other node\'s TURN (UDP and TCP)', { timeout: 60_000 }, async () => {
  assert.ok(fs.existsSync(UCLIENT), `${UCLIENT} is missing: install Debian's coturn (tests/run.sh does)`);
  const [n1, n2] = cluster.nodes;
  try {
    const fromN1 = await turnCredentials(n1);
    const fromN2 = await turnCredentials(n2);
    const failuresBefore = await n2.metric('switchboard_turn_auth_failures_total');
    const runs = [];
    for (const [label, cred, target] of [['n1 creds on n2', fromN1, n2], ['n2 creds on n1', fromN2, n1]]) {
      for (const tcp of [false, true]) runs.push({ label: `${label} (${tcp ? 'tcp' : 'udp'})`, cred, target, tcp });
    }
    // All four at once: separate allocations, and uclient spends most of
    // its time waiting.
    const results = await Promise.all(runs.map((r) => uclient(r.target, r.cred, r.tcp)));
    results.forEach((r, i) => {
      const { label } = runs[i];
      assert.ok(r.ok, `${label} must relay:\n${r.out}`);
      assert.ok(r.sent >= 160, `${label}: sent ${r.sent}:\n${r.out}`);
      assert.equal(r.received, r.sent, `${label}: every message came back through the relay:\n${r.out}`);
      assert.equal(r.lost, 0, `${label}: no loss:\n${r.out}`);
    });
    // The relaying really happened on node 2's TURN, and it refused nothing.
    await sleep(1200); // TURN metrics are copied from the workers once a second
    assert.ok(await n2.metric('switchboard_turn_relayed_packets_total{direction="to_peer"}') >= 320, 'n2 relayed the packets');
    assert.equal(await n2.metric('switchboard_turn_auth_failures_total'), failuresBefore, 'n2 refused no request');
  } catch (err) {
    throw withLogs(err, cluster);
  }
});

test('a node with another --turn-secret refuses those credentials, and tampered ones fail everywhere', { timeout: 60_000 }, async () => {
  const [n1, n2] = cluster.nodes;
  try {
    const cred = await turnCredentials(n1);
    const r = await uclient(stranger, cred, false);
    assert.ok(!r.ok && r.received === 0, `another secret must refuse n1's credentials:\n${r.out}`);

    // Same username, credential of another length and value: refused on n2 too.
    const forged = { username: cred.username, credential: Buffer.from('forged-credential').toString('base64') };
    const f = await uclient(n2, forged, false);
    assert.ok(!f.ok && f.received === 0, `a forged credential must fail on n2:\n${f.out}`);

    // The username with its expiry moved into the past (the REST scheme's
    // `EXPIRY:NAME`) and the original credential: the signature no longer
    // matches and it has expired.
    const expired = { username: `${Math.floor(Date.now() / 1000) - 60}:${cred.username.split(':').slice(1).join(':') || 'x'}`, credential: cred.credential };
    const e = await uclient(n2, expired, false);
    assert.ok(!e.ok && e.received === 0, `an altered username must fail on n2:\n${e.out}`);

    await sleep(1200);
    assert.ok(await stranger.metric('switchboard_turn_auth_failures_total') >= 1, 'the stranger counted the failure');
    assert.ok(await n2.metric('switchboard_turn_auth_failures_total') >= 2, 'n2 counted both failures');
  } catch (err) {
    throw withLogs(err, { logs: () => `${cluster.logs()}\n--- stranger ---\n${stranger.output}` });
  }
});
