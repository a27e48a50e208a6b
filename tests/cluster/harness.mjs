// Cluster test harness: starts, on 127.0.0.1 with free ports and a temp
// dir, a real redis-server, N `switchboard serve` nodes sharing it, and a
// real load balancer (Debian's haproxy) that proxies HTTP and WebSockets
// round-robin to the nodes with no stickiness. Tests use it to kill -9 a
// node, restart Redis empty, cut proxied connections and read each node's
// /metrics. Browser and server helpers come from tests/e2e/helpers.mjs.
//
// Every process started here is killed when the test process exits, so a
// failed test leaves nothing running.

import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { freePort, serverBinary, repoRoot } from '../e2e/helpers.mjs';

export {
  launchBrowser, newPage, screenshot, waitFor, roomName, randomFile, serverBinary, repoRoot,
} from '../e2e/helpers.mjs';

const verbose = !!process.env.E2E_VERBOSE;
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Drop terminal colour codes, which tracing writes even to a pipe. @param {string} s */
export const stripAnsi = (s) => s.replace(/\x1b\[[0-9;]*m/g, '');

/** @type {Set<import('node:child_process').ChildProcess>} */
const live = new Set();
process.on('exit', () => {
  for (const p of live) {
    try { p.kill('SIGKILL'); } catch { /* already gone */ }
  }
});

/**
 * A child process with its output collected and its exit awaited.
 * @param {string} name log label
 * @param {string} cmd
 * @param {string[]} args
 * @param {{cwd?: string, env?: Record<string, string>}} [opts]
 */
export function spawnProc(name, cmd, args, opts = {}) {
  const proc = spawn(cmd, args, {
    cwd: opts.cwd ?? repoRoot,
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, ...(opts.env ?? {}) },
  });
  live.add(proc);
  let output = '';
  const collect = (d) => {
    output += d.toString();
    if (verbose) process.stderr.write(`[${name}] ${d}`);
  };
  proc.stdout.on('data', collect);
  proc.stderr.on('data', collect);
  /** @type {{code: number | null, signal: string | null} | null} */
  let exited = null;
  const exit = new Promise((resolve) => {
    proc.on('error', (err) => { output += `spawn error: ${err.message}\n`; });
    proc.on('close', (code, signal) => {
      exited = { code, signal };
      live.delete(proc);
      resolve(exited);
    });
  });
  return {
    name,
    proc,
    exit,
    get pid() { return proc.pid; },
    get output() { return stripAnsi(output); },
    get exited() { return exited; },
    /** Send `signal`; resolve once the process is gone (SIGKILL after 5 s). */
    async kill(signal = 'SIGTERM') {
      if (exited) return exited;
      proc.kill(signal);
      const timer = setTimeout(() => proc.kill('SIGKILL'), 5_000);
      const r = await exit;
      clearTimeout(timer);
      return r;
    },
  };
}

/**
 * Absolute path of a Debian tool, also when /usr/sbin (haproxy's home) is
 * not on PATH; a clear error when it is not installed.
 * @param {string} name
 * @param {string} pkg Debian package that ships it
 */
export function tool(name, pkg) {
  const dirs = [...(process.env.PATH ?? '').split(':').filter(Boolean), '/usr/sbin', '/usr/bin', '/sbin'];
  for (const d of dirs) {
    const p = path.join(d, name);
    if (fs.existsSync(p)) return p;
  }
  throw new Error(`${name} not found: apt-get install ${pkg} (tests/run.sh does)`);
}

/** Wait until `probe()` resolves truthy; polls every `every` ms. */
export async function until(probe, what, timeout = 30_000, every = 100) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const v = await probe();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`no ${what} within ${timeout} ms${last ? `: ${last.message}` : ''}`);
    await sleep(every);
  }
}

// --- redis ----------------------------------------------------------------

/**
 * One Redis command over RESP; resolves with the first reply line
 * (`+PONG`, `:3`, `-ERR ...`).
 * @param {number} port
 * @param {...string} args
 */
export function redisCommand(port, ...args) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    let buf = '';
    const timer = setTimeout(() => { sock.destroy(); reject(new Error('redis: no answer in 2 s')); }, 2_000);
    sock.on('error', (e) => { clearTimeout(timer); reject(e); });
    sock.on('data', (d) => {
      buf += d.toString();
      const nl = buf.indexOf('\r\n');
      if (nl >= 0) {
        clearTimeout(timer);
        sock.destroy();
        resolve(buf.slice(0, nl));
      }
    });
    sock.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`);
  });
}

/**
 * Start `redis-server` on a free port, without persistence, so that a
 * restart comes back empty (like a Redis that lost its data).
 * @param {string} dir working directory for redis-server
 */
export async function startRedis(dir) {
  const port = await freePort();
  /** @type {ReturnType<typeof spawnProc>} */
  let proc;
  const start = async () => {
    proc = spawnProc('redis', tool('redis-server', 'redis-server'), [
      '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
      '--dir', dir, '--daemonize', 'no', '--loglevel', 'warning',
    ]);
    await until(async () => {
      if (proc.exited) throw new Error(`redis-server exited: ${proc.output}`);
      return (await redisCommand(port, 'PING')) === '+PONG';
    }, 'redis-server PING', 10_000, 50);
  };
  await start();
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    get output() { return proc.output; },
    /** Keys in database 0 (`DBSIZE`). */
    async dbsize() { return Number((await redisCommand(port, 'DBSIZE')).slice(1)); },
    /** kill -9 and start again on the same port: it comes back empty. */
    async restart() {
      await proc.kill('SIGKILL');
      await start();
    },
    async stop() { await proc.kill('SIGTERM'); },
  };
}

// --- switchboard nodes ------------------------------------------------------

/**
 * Parse Prometheus text into `name{labels}` -> value.
 * @param {string} text
 */
export function parseMetrics(text) {
  /** @type {Map<string, number>} */
  const m = new Map();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const sp = line.lastIndexOf(' ');
    m.set(line.slice(0, sp), Number(line.slice(sp + 1)));
  }
  return m;
}

/**
 * Start one `switchboard serve` node on its own free HTTP and TURN ports.
 * The TURN relay may reach loopback peers (`--allow-peer 127.0.0.0/8`): in
 * these tests every peer is on this machine.
 * @param {string} name
 * @param {string[]} args extra `serve` arguments
 */
export async function startNode(name, args = []) {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    let turnPort;
    do turnPort = await freePort(); while (turnPort === port);
    try {
      return await startNodeOn(name, port, turnPort, args);
    } catch (err) {
      // Another process took a port between freePort() and the bind.
      if (attempt < 4 && /in use/i.test(String(err && err.message))) continue;
      throw err;
    }
  }
}

/**
 * @param {string} name
 * @param {number} port
 * @param {number} turnPort
 * @param {string[]} extra
 */
async function startNodeOn(name, port, turnPort, extra) {
  const bin = serverBinary();
  if (!fs.existsSync(bin)) throw new Error(`switchboard binary not found at ${bin}: set SWITCHBOARD_BIN`);
  const args = [
    'serve', '--listen', `127.0.0.1:${port}`, '--turn-listen', `127.0.0.1:${turnPort}`,
    '--allow-peer', '127.0.0.0/8',
    // Behind haproxy every connection comes from its address (docs/deploy.md).
    '--max-connections-per-ip', '0', ...extra,
  ];
  const origin = `http://127.0.0.1:${port}`;
  /** @type {ReturnType<typeof spawnProc>} */
  let proc;
  const start = async () => {
    proc = spawnProc(name, bin, args);
    const failed = (why) => new Error(`${name}: switchboard ${args.join(' ')} ${why}:\n${proc.output}`);
    try {
      await until(async () => {
        if (proc.exited) throw failed(`exited early (${JSON.stringify(proc.exited)})`);
        return (await fetch(`${origin}/healthz`)).ok;
      }, `${name} /healthz`, 30_000);
    } catch (err) {
      await proc.kill('SIGKILL');
      throw proc.exited && !String(err.message).includes(proc.output) ? failed(`did not start: ${err.message}`) : err;
    }
    // The answer must come from this process, not from another server on
    // the port: this one would have exited on the failed bind.
    await sleep(200);
    if (proc.exited) throw failed(`exited right after start (${JSON.stringify(proc.exited)})`);
  };
  await start();

  const node = {
    name,
    port,
    turnPort,
    origin,
    wsUrl: `ws://127.0.0.1:${port}/v1/ws`,
    args,
    get pid() { return proc.pid; },
    get output() { return proc.output; },
    get alive() { return !proc.exited; },
    /** This node's /metrics as a Map of `name{labels}` -> value. */
    async metrics() {
      const res = await fetch(`${origin}/metrics`);
      if (!res.ok) throw new Error(`${name} /metrics: HTTP ${res.status}`);
      return parseMetrics(await res.text());
    },
    /** One sample (`name` or `name{labels}` exactly as printed), or 0 when absent. */
    async metric(key) { return (await node.metrics()).get(key) ?? 0; },
    /** Sum of every sample of a metric family, whatever its labels. */
    async metricSum(family) {
      let sum = 0;
      for (const [k, v] of await node.metrics()) if (k === family || k.startsWith(`${family}{`)) sum += v;
      return sum;
    },
    /** Open WebSocket connections on this node. */
    connections() { return node.metric('switchboard_connections'); },
    async healthStatus() {
      try { return (await fetch(`${origin}/healthz`)).status; } catch { return 0; }
    },
    /** kill -9: no shutdown, no close frames, sockets reset by the kernel. */
    async kill9() { return proc.kill('SIGKILL'); },
    async stop() { return proc.kill('SIGTERM'); },
    /** Start it again on the same ports (after kill9 or stop). */
    async restart() {
      if (!proc.exited) await proc.kill('SIGKILL');
      await start();
    },
  };
  return node;
}

// --- load balancer ----------------------------------------------------------

/**
 * Start haproxy in front of `nodes`: round-robin per request, WebSocket
 * upgrades passed through, health checks on /healthz, failed connects
 * retried on another node. No stickiness of any kind.
 * @param {string} dir
 * @param {Array<{name: string, port: number}>} nodes
 */
export async function startBalancer(dir, nodes) {
  const port = await freePort();
  const sock = path.join(dir, 'haproxy.sock');
  const cfg = path.join(dir, 'haproxy.cfg');
  fs.writeFileSync(cfg, haproxyConfig({ port, sock, nodes }));
  const haproxy = tool('haproxy', 'haproxy');
  const check = spawnProc('haproxy-check', haproxy, ['-c', '-f', cfg]);
  const checked = await check.exit;
  if (checked.code !== 0) throw new Error(`haproxy -c: ${check.output}`);
  const proc = spawnProc('haproxy', haproxy, ['-db', '-f', cfg]);
  const origin = `http://127.0.0.1:${port}`;

  /** One runtime API command over the admin socket; resolves with its output. */
  const api = (cmd) => new Promise((resolve, reject) => {
    const c = net.connect(sock);
    let out = '';
    c.on('error', reject);
    c.on('data', (d) => { out += d; });
    c.on('end', () => resolve(out));
    c.write(`${cmd}\n`);
  });
  /** name -> status column of `show stat` (UP, DOWN, DRAIN, MAINT, ...). */
  const states = async () => {
    const csv = /** @type {string} */ (await api('show stat'));
    const lines = csv.split('\n').filter(Boolean);
    const head = lines[0].replace(/^# /, '').split(',');
    const [px, sv, st] = ['pxname', 'svname', 'status'].map((k) => head.indexOf(k));
    /** @type {Record<string, string>} */
    const r = {};
    for (const l of lines.slice(1)) {
      const f = l.split(',');
      if (f[px] === 'nodes' && f[sv] !== 'BACKEND') r[f[sv]] = f[st];
    }
    return r;
  };
  const lb = {
    port,
    origin,
    wsUrl: `ws://127.0.0.1:${port}/v1/ws`,
    config: cfg,
    get output() { return proc.output; },
    api,
    states,
    /** Wait until haproxy's health check sees `name` as `state` (UP, DOWN). */
    async waitState(name, state, timeout = 10_000) {
      return until(async () => (await states())[name]?.startsWith(state), `haproxy: ${name} ${state}`, timeout);
    },
    /** Cut every proxied connection to node `name` (both sides see the TCP connection end, no WebSocket close). */
    async cut(name) {
      const out = await api(`shutdown sessions server nodes/${name}`);
      if (String(out).trim()) throw new Error(`haproxy: ${out}`);
    },
    /** Cut every proxied connection, to every node. */
    async cutAll() {
      for (const n of nodes) await lb.cut(n.name);
    },
    /** Send no new connections to `name` (existing ones stay). */
    async drain(name) { await api(`set server nodes/${name} state drain`); },
    async ready(name) { await api(`set server nodes/${name} state ready`); },
    async stop() { await proc.kill('SIGTERM'); },
  };
  await until(async () => {
    if (proc.exited) throw new Error(`haproxy exited: ${proc.output}`);
    const s = await states();
    return nodes.every((n) => s[n.name]?.startsWith('UP'));
  }, 'haproxy with every node UP', 15_000);
  return lb;
}

/**
 * The haproxy configuration the tests run (docs/deploy.md shows the same).
 * @param {{port: number, sock: string, nodes: Array<{name: string, port: number}>}} o
 */
export function haproxyConfig({ port, sock, nodes }) {
  return `global
    stats socket ${sock} mode 600 level admin
    maxconn 4096

defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    # After the WebSocket upgrade only this one applies; keep it above
    # serve's --idle-timeout (30 s; the server pings every 10 s).
    timeout tunnel 120s
    timeout http-request 10s
    # A connect that fails (a dead node) is retried on another node.
    retries 3
    option redispatch 1

frontend switchboard
    bind 127.0.0.1:${port}
    default_backend nodes

backend nodes
    balance roundrobin
    option httpchk GET /healthz
    default-server inter 300ms fall 2 rise 2
${nodes.map((n) => `    server ${n.name} 127.0.0.1:${n.port} check`).join('\n')}
`;
}

// --- the whole cluster --------------------------------------------------------

/**
 * redis-server, `count` nodes with `--redis` and a shared --turn-secret,
 * haproxy in front. `redis: false` starts plain nodes (no Redis, no
 * balancer unless `balancer: true`).
 * @param {{count?: number, redis?: boolean, balancer?: boolean, turnSecret?: string, args?: string[]}} [o]
 */
export async function startCluster(o = {}) {
  const count = o.count ?? 2;
  const useRedis = o.redis ?? true;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'switchboard-cluster-'));
  const turnSecret = o.turnSecret ?? `turn-${Math.random().toString(36).slice(2)}`;
  /** @type {Awaited<ReturnType<typeof startRedis>> | null} */
  let redis = null;
  /** @type {Array<Awaited<ReturnType<typeof startNode>>>} */
  const nodes = [];
  /** @type {Awaited<ReturnType<typeof startBalancer>> | null} */
  let lb = null;
  const stop = async () => {
    await lb?.stop();
    for (const n of nodes) await n.stop();
    await redis?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    if (useRedis) redis = await startRedis(dir);
    for (let i = 1; i <= count; i++) {
      const args = ['--turn-secret', turnSecret, ...(redis ? ['--redis', redis.url] : []), ...(o.args ?? [])];
      nodes.push(await startNode(`n${i}`, args));
    }
    if (o.balancer ?? useRedis) lb = await startBalancer(dir, nodes);
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    dir,
    redis,
    nodes,
    lb,
    turnSecret,
    stop,
    /** Everything each process wrote, for failure messages. */
    logs() {
      return [
        ...(redis ? [`--- redis ---\n${redis.output}`] : []),
        ...nodes.map((n) => `--- ${n.name} (${n.origin}) ---\n${n.output.slice(-6000)}`),
        ...(lb ? [`--- haproxy ---\n${lb.output.slice(-3000)}`] : []),
      ].join('\n');
    },
    /** Open WebSocket connections per node, as an array in node order. */
    async connections() { return Promise.all(nodes.map((n) => (n.alive ? n.connections() : 0))); },
    /**
     * Wait until the nodes hold exactly `want` connections (array in node
     * order) and return the array.
     * @param {number[]} want
     */
    async waitConnections(want, timeout = 15_000) {
      let last = [];
      try {
        return await until(async () => {
          last = await Promise.all(nodes.map((n) => (n.alive ? n.connections() : 0)));
          return last.every((v, i) => v === want[i]) && last;
        }, `connections ${JSON.stringify(want)}`, timeout);
      } catch (err) {
        throw new Error(`${err.message}; last seen ${JSON.stringify(last)}`);
      }
    },
    /**
     * Wait until exactly one node has one more connection than in `before`
     * and return that node's index.
     * @param {number[]} before
     */
    async newConnectionOn(before, timeout = 15_000) {
      let last = [];
      return until(async () => {
        last = await Promise.all(nodes.map((n) => (n.alive ? n.connections() : 0)));
        const grown = last.map((v, i) => v - before[i]);
        const i = grown.indexOf(1);
        return i >= 0 && grown.filter((g) => g !== 0).length === 1 ? { index: i } : null;
      }, `one new connection (before ${JSON.stringify(before)}, last ${JSON.stringify(last)})`, timeout).then((r) => r.index);
    },
  };
}

// --- the native CLI ---------------------------------------------------------

/**
 * Run `switchboard <args>` (with `--json`) and parse its stdout, one JSON
 * event per line (docs/cli.md).
 * @param {string} name log label
 * @param {string[]} args
 */
export function runCli(name, args) {
  // $SWITCHBOARD_CLI_BIN runs the peer commands from another build than the
  // nodes (a client branch against this server); by default the same binary.
  const p = spawnProc(name, process.env.SWITCHBOARD_CLI_BIN || serverBinary(), args);
  /** @type {any[]} */
  const events = [];
  /** @type {string[]} */
  const badLines = [];
  let partial = '';
  /** @type {Set<() => void>} */
  const waiters = new Set();
  const wake = () => { for (const w of [...waiters]) w(); };
  p.proc.stdout.on('data', (d) => {
    partial += d;
    let nl;
    while ((nl = partial.indexOf('\n')) >= 0) {
      const line = partial.slice(0, nl).trim();
      partial = partial.slice(nl + 1);
      if (!line) continue;
      try {
        const ev = JSON.parse(line);
        // `_at`: when it arrived here (ms since the epoch), to order it
        // against events recorded elsewhere (a page's).
        if (ev && typeof ev.event === 'string') events.push(Object.assign(ev, { _at: Date.now() })); else badLines.push(line);
      } catch {
        badLines.push(line);
      }
    }
    wake();
  });
  p.exit.then(wake);
  const describe = () => `switchboard ${args.join(' ')}\nexit: ${JSON.stringify(p.exited)}\n${p.output.slice(-5000)}`;
  const cli = {
    events,
    badLines,
    describe,
    get exited() { return p.exited; },
    /**
     * The first event matching `pred`, already seen or still to come. Fails
     * when the process exits first or after `timeout` ms.
     * @param {(ev: any) => boolean} pred
     */
    waitEvent(pred, what, timeout = 30_000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => finish(() => reject(new Error(`${name}: no ${what} within ${timeout} ms:\n${describe()}`))), timeout);
        const finish = (fn) => { clearTimeout(timer); waiters.delete(check); fn(); };
        const check = () => {
          const ev = events.find(pred);
          if (ev) finish(() => resolve(ev));
          else if (p.exited) finish(() => reject(new Error(`${name} exited before ${what}:\n${describe()}`)));
        };
        waiters.add(check);
        check();
      });
    },
    async waitExit(timeout = 30_000) {
      let timer;
      const r = await Promise.race([
        p.exit,
        new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${name} did not exit within ${timeout} ms:\n${describe()}`)), timeout); }),
      ]);
      clearTimeout(timer);
      return /** @type {{code: number | null, signal: string | null}} */ (r);
    },
    kill: () => p.kill('SIGTERM'),
  };
  return cli;
}

/** SHA-256 of a file on disk. @param {string} file */
export const sha256File = (file) => createHash('sha256').update(fs.readFileSync(file)).digest('hex');

/**
 * Append the cluster's and (optionally) a CLI's output to an error, so a
 * failure shows what the servers said.
 * @param {unknown} err
 * @param {{logs: () => string}} cluster
 * @param {{describe: () => string} | null} [cli]
 */
export function withLogs(err, cluster, cli = null) {
  const extra = `\n${cli ? `--- CLI ---\n${cli.describe()}\n` : ''}${cluster.logs()}`;
  if (err instanceof Error) {
    err.message += extra;
    return err;
  }
  return new Error(`${err}${extra}`);
}
