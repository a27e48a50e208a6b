// deploy/: the systemd unit passes `systemd-analyze verify` (pointed at the
// binary under test) and keeps its sandboxing exposure low, and the example
// config file starts `serve` as it is (with loopback addresses given as
// flags, which win over the file).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { repoRoot, serverBinary, startServer } from './helpers.mjs';

test('deploy/switchboard.service verifies with systemd-analyze', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'switchboard-unit-'));
  try {
    const unit = fs.readFileSync(path.join(repoRoot, 'deploy', 'switchboard.service'), 'utf8');
    assert.match(unit, /^ExecStart=\/usr\/local\/bin\/switchboard serve --config \/etc\/switchboard\/switchboard\.toml$/m);
    const file = path.join(dir, 'switchboard.service');
    fs.writeFileSync(file, unit.replaceAll('/usr/local/bin/switchboard', serverBinary()));
    // Exits non-zero, with the reason on stderr, on an unknown directive or
    // a missing binary.
    execFileSync('systemd-analyze', ['verify', file], { stdio: ['ignore', 'pipe', 'pipe'] });
    const security = execFileSync('systemd-analyze', ['security', '--offline=yes', file], { encoding: 'utf8' });
    const level = Number(/Overall exposure level for switchboard\.service: ([\d.]+)/.exec(security)?.[1]);
    assert.ok(level <= 2.0, `exposure ${level} (0 is fully sandboxed, 10 not at all)`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('deploy/switchboard.toml starts serve', { timeout: 60_000 }, async () => {
  const config = path.join(repoRoot, 'deploy', 'switchboard.toml');
  const server = await startServer(['--config', config, '--relay-ports', '50000-50100']);
  try {
    const res = await fetch(`${server.origin}/healthz`);
    assert.equal(res.status, 200);
    // The file's log_format = "json" took effect: log lines are JSON.
    const line = server.output.split('\n').find((l) => l.startsWith('{'));
    assert.ok(line && JSON.parse(line).level, `JSON logs: ${server.output}`);
  } finally {
    await server.stop();
  }
});
