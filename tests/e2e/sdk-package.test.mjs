// The SDK as an npm package: `npm pack` web/sdk, install the tarball into a
// scratch project, import every entry point through the package's
// `exports`, and type-check a TypeScript file against its `types` (Debian's
// tsc, node16 module resolution, so the `types` conditions are what it reads).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { repoRoot } from './helpers.mjs';

const run = (cmd, args, cwd) => execFileSync(cmd, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

test('npm pack of web/sdk installs and imports from a scratch project, types included', { timeout: 120_000 }, () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'switchboard-sdk-pack-'));
  try {
    const sdk = path.join(repoRoot, 'web', 'sdk');
    const manifest = JSON.parse(fs.readFileSync(path.join(sdk, 'package.json'), 'utf8'));
    const packed = JSON.parse(run('npm', ['pack', '--json', '--pack-destination', dir], sdk));
    const tarball = path.join(dir, packed[0].filename);
    // Only the SDK's modules and their declarations (and the manifest) ship.
    const files = packed[0].files.map((f) => f.path).sort();
    assert.deepEqual(files, [...manifest.files, 'package.json'].sort());

    const app = path.join(dir, 'app');
    fs.mkdirSync(app);
    fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'scratch', private: true, type: 'module' }));
    // The tarball has no dependencies, so nothing is fetched.
    run('npm', ['install', '--offline', '--no-audit', '--no-fund', tarball], app);

    fs.writeFileSync(path.join(app, 'main.mjs'), `
      import { joinRoom, SignalingChannel, parseCandidate, PROTOCOL_VERSION, SessionTracker } from 'switchboard-sdk';
      import { backoffDelay } from 'switchboard-sdk/session';
      import { parse, textFrame, LABEL } from 'switchboard-sdk/transfer';
      const c = parseCandidate('candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host');
      console.log(JSON.stringify({
        joinRoom: typeof joinRoom, SignalingChannel: typeof SignalingChannel, SessionTracker: typeof SessionTracker,
        protocol: PROTOCOL_VERSION, type: c && c.type, port: c && c.port,
        backoff: typeof backoffDelay(1), text: parse(textFrame('hi')), label: LABEL,
      }));
    `);
    const out = JSON.parse(run('node', ['main.mjs'], app));
    assert.deepEqual(out, {
      joinRoom: 'function', SignalingChannel: 'function', SessionTracker: 'function',
      protocol: 1, type: 'host', port: 54321,
      backoff: 'number', text: { type: 'text', text: 'hi' }, label: 'chat',
    });
    // Not part of the package's public surface.
    assert.throws(() => run('node', ['-e', "import('switchboard-sdk/switchboard.js').then(() => process.exit(0), (e) => { console.error(e.code); process.exit(1); })"], app));

    // The declarations, found through `exports` and checked strictly: a
    // wrong use must fail, a right one pass.
    fs.writeFileSync(path.join(app, 'tsconfig.json'), JSON.stringify({
      compilerOptions: { module: 'node16', moduleResolution: 'node16', strict: true, noEmit: true, lib: ['es2022', 'dom'], types: [] },
      files: ['use.mts'],
    }));
    fs.writeFileSync(path.join(app, 'use.mts'), `
      import { joinRoom, type Room } from 'switchboard-sdk';
      import { SessionTracker } from 'switchboard-sdk/session';
      import { textFrame } from 'switchboard-sdk/transfer';
      export async function start(): Promise<Room> { return joinRoom('ws://localhost:8080/v1/ws', 'demo', { token: 't' }); }
      export const frame: string = textFrame('hi');
      export const tracker = new SessionTracker();
    `);
    run('tsc', ['-p', '.'], app);
    fs.writeFileSync(path.join(app, 'use.mts'), `
      import { joinRoom } from 'switchboard-sdk';
      export const bad: number = joinRoom;
    `);
    assert.throws(() => run('tsc', ['-p', '.'], app), (err) => /TS2322/.test(String(err.stdout)));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
