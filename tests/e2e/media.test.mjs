// Media between Chromium's /call and the native `switchboard play` /
// `switchboard record` (docs/cli.md), through `switchboard serve` on
// loopback: a file's video and audio in the page (also relay-only through
// serve's TURN) with /call's live health chart read back, and the page's
// fake camera and microphone recorded to files that ffprobe reads, after
// the page hangs up and after a SIGINT mid-call. Fixtures come from ffmpeg
// at test time (Debian's ffmpeg, which tests/run.sh installs).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  startServer, launchBrowser, newPage, screenshot, waitFor, roomName, runCli, withCliOutput,
} from './helpers.mjs';

let server;
/** serve with loopback peers allowed on its TURN relay, for the relay-only test. */
let relayServer;
let browser;
let dir;
/** The play fixtures: 480x270 VP8 at 30 fps and an Opus tone, 4 s each. */
let clip;
let tone;

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'switchboard-media-'));
  clip = path.join(dir, 'clip.ivf');
  tone = path.join(dir, 'tone.ogg');
  const ff = (args) => execFileSync('ffmpeg', ['-loglevel', 'error', '-y', ...args]);
  ff(['-f', 'lavfi', '-i', 'testsrc=size=480x270:rate=30:duration=4', '-c:v', 'libvpx', '-g', '30', '-b:v', '500k', clip]);
  ff(['-f', 'lavfi', '-i', 'sine=frequency=440:duration=4', '-c:a', 'libopus', '-b:a', '48k', tone]);
  server = await startServer();
  relayServer = await startServer(['--allow-peer', '127.0.0.0/8']);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
  await relayServer?.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

const cliArgs = (srv, room, extra = []) => ['--server', srv.origin, '--room', room, '--json', '--loopback', ...extra];

/**
 * ffprobe's streams of a file: codec, size, frames decoded, and the
 * container's duration in seconds.
 * @param {string} file
 */
function probe(file) {
  const out = execFileSync('ffprobe', ['-v', 'error', '-count_frames', '-show_entries',
    'stream=codec_type,codec_name,width,height,nb_read_frames:format=duration', '-of', 'json', file]);
  const j = JSON.parse(out.toString());
  return { streams: j.streams, duration: Number(j.format.duration) };
}

for (const relay of [false, true]) {
  test(`/call plays a file from \`switchboard play\`: size, frames, audio and the health chart${relay ? ' (relay only through serve\'s TURN)' : ''}`, { timeout: 120_000 }, async () => {
    const srv = relay ? relayServer : server;
    const room = roomName('m-play');
    const page = await newPage(browser, `media-play${relay ? '-relay' : ''}`);
    let play = null;
    try {
      await page.goto(`${srv.origin}/call?room=${room}&name=browser${relay ? '&relay=1' : ''}`);
      await waitFor(page, () => document.body.dataset.joined === 'true');
      play = runCli('play', ['play', '--loop', ...cliArgs(srv, room, relay ? ['--relay-only'] : []), '--name', 'native-play', clip, tone]);
      const c = await play.waitEvent((e) => e.event === 'connected', 'connected', 30_000);
      if (relay) assert.equal(c.pair.local.type, 'relay', `play's local candidate is a relay: ${JSON.stringify(c.pair)}`);

      // The file's picture, at the file's size.
      await waitFor(page, () => [...document.querySelectorAll('.tile.peer video')].some((v) => v.videoWidth > 0), undefined, 30_000);
      const size = await page.evaluate(() => {
        const v = /** @type {HTMLVideoElement} */ (document.querySelector('.tile.peer video'));
        return { w: v.videoWidth, h: v.videoHeight, frames: v.getVideoPlaybackQuality().totalVideoFrames };
      });
      assert.deepEqual([size.w, size.h], [480, 270]);
      // Frames keep coming (and through a loop of the 4 s file).
      await waitFor(page, (f0) => document.querySelector('.tile.peer video').getVideoPlaybackQuality().totalVideoFrames > f0 + 60, size.frames, 30_000);
      // The tone arrives and decodes, in the same stream as the picture.
      await waitFor(page, async () => {
        const peer = [...window.switchboardRoom.peers.values()][0];
        let samples = 0;
        (await peer.pc.getStats()).forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'audio') samples += s.totalSamplesReceived ?? 0; });
        return samples > 48_000;
      }, undefined, 20_000);
      const tracks = await page.evaluate(() => document.querySelector('.tile.peer video').srcObject.getTracks().map((t) => t.kind).sort());
      assert.deepEqual(tracks, ['audio', 'video'], 'one stream holds the file\'s audio and video');

      // /call's chart has a few seconds of data, drawn and labelled.
      await waitFor(page, () => Number(document.querySelector('.tile.peer .health')?.dataset.samples ?? 0) >= 3, undefined, 20_000);
      const health = await page.evaluate(() => {
        const tile = document.querySelector('.tile.peer');
        const val = (k) => tile.querySelector(`.health-values [data-stat="${k}"]`).dataset.value;
        return {
          recv: Number(val('recv_kbps')),
          send: val('send_kbps'),
          rtt: val('rtt_ms'),
          text: tile.querySelector('.health-values').textContent.replace(/\s+/g, ' ').trim(),
          points: tile.querySelector('.health-chart .recv').getAttribute('points').split(' ').length,
        };
      });
      assert.ok(health.recv > 50, `the page shows the file's bitrate arriving: ${JSON.stringify(health)}`);
      assert.match(health.text, /recv \d+ kbit\/s/);
      assert.ok(health.rtt !== '' && Number(health.rtt) >= 0, `rtt shown: ${JSON.stringify(health)}`);
      assert.ok(health.points >= 3, `the receive line has points: ${JSON.stringify(health)}`);

      // And the CLI's own stats say it sends.
      const st = await play.waitEvent((e) => e.event === 'stats' && e.send_kbps > 50, 'stats with traffic', 15_000);
      assert.equal(typeof st.peer, 'string');
      await screenshot(page, `media-play${relay ? '-relay' : ''}`);
      assert.deepEqual(page.errors, []);
      assert.deepEqual(play.badLines, [], 'every stdout line is a JSON event');
    } catch (err) {
      throw play ? withCliOutput(err, play) : err;
    } finally {
      await play?.kill();
      await page.context().close();
    }
  });
}

/** An init script: the page answers with VP8 as its only video codec. */
const vp8Only = () => {
  const orig = RTCPeerConnection.prototype.setRemoteDescription;
  RTCPeerConnection.prototype.setRemoteDescription = async function (desc) {
    const r = await orig.call(this, desc);
    const vp8 = RTCRtpReceiver.getCapabilities('video').codecs.filter((c) => /vp8|rtx/i.test(c.mimeType));
    for (const t of this.getTransceivers()) {
      if (t.receiver.track.kind === 'video') t.setCodecPreferences(vp8);
    }
    return r;
  };
};

test('`switchboard play` refuses a VP9 file toward a page that negotiated only VP8, naming both', { timeout: 60_000 }, async () => {
  const vp9 = path.join(dir, 'clip9.ivf');
  execFileSync('ffmpeg', ['-loglevel', 'error', '-y', '-f', 'lavfi', '-i', 'testsrc=size=320x240:rate=30:duration=1',
    '-c:v', 'libvpx-vp9', '-deadline', 'realtime', '-cpu-used', '8', vp9]);
  const room = roomName('m-codec');
  const page = await newPage(browser, 'media-codec', { initScript: vp8Only });
  let play = null;
  try {
    await page.goto(`${server.origin}/call?room=${room}&name=browser`);
    await waitFor(page, () => document.body.dataset.joined === 'true');
    play = runCli('play', ['play', ...cliArgs(server, room), vp9]);
    const e = await play.waitEvent((ev) => ev.event === 'error', 'error', 30_000);
    assert.equal(e.code, 'codec-not-negotiated');
    assert.match(e.message, /VP9 cannot be sent: the peer negotiated only VP8 for video/);
    assert.equal((await play.waitExit(10_000)).code, 4);
  } catch (err) {
    throw play ? withCliOutput(err, play) : err;
  } finally {
    await play?.kill();
    await page.context().close();
  }
});

for (const how of ['hangup', 'sigint']) {
  test(`\`switchboard record\` keeps /call's fake camera and microphone (${how === 'hangup' ? 'the page hangs up' : 'SIGINT mid-call'})`, { timeout: 120_000 }, async () => {
    const room = roomName('m-rec');
    const out = path.join(dir, `rec-${how}`);
    const page = await newPage(browser, `media-record-${how}`);
    const rec = runCli('record', ['record', '--out', out, ...cliArgs(server, room)]);
    try {
      await rec.waitEvent((e) => e.event === 'joined', 'joined', 20_000);
      await page.goto(`${server.origin}/call?room=${room}&name=browser`);
      await waitFor(page, () => document.body.dataset.joined === 'true');
      await waitFor(page, () => document.querySelector('#local-video').videoWidth > 0);
      const cam = await page.evaluate(() => {
        const v = /** @type {HTMLVideoElement} */ (document.querySelector('#local-video'));
        return { w: v.videoWidth, h: v.videoHeight };
      });
      const secs = how === 'hangup' ? 10 : 6;
      const first = await rec.waitEvent((e) => e.event === 'recording' && e.kind === 'video', 'video recording', 30_000);
      const started = Date.now() - first.duration_ms;
      await rec.waitEvent((e) => e.event === 'recording' && e.kind === 'video' && e.duration_ms >= secs * 1000, `${secs} s of video`, 30_000);
      await rec.waitEvent((e) => e.event === 'recording' && e.kind === 'audio', 'audio recording', 10_000);
      let wall;
      if (how === 'hangup') {
        await page.click('#hangup');
        wall = (Date.now() - started) / 1000;
      } else {
        wall = (Date.now() - started) / 1000;
        rec.proc.kill('SIGINT');
      }
      const v = await rec.waitEvent((e) => e.event === 'recording' && e.kind === 'video' && e.done, 'video finished', 15_000);
      const a = await rec.waitEvent((e) => e.event === 'recording' && e.kind === 'audio' && e.done, 'audio finished', 15_000);
      if (how === 'sigint') assert.equal((await rec.waitExit(10_000)).code, 0);

      const pv = probe(v.path);
      assert.equal(pv.streams.length, 1);
      assert.equal(pv.streams[0].codec_type, 'video');
      assert.deepEqual([pv.streams[0].width, pv.streams[0].height], [cam.w, cam.h], 'the fake camera\'s size');
      assert.ok(Number(pv.streams[0].nb_read_frames) > secs * 10, `frames decode: ${JSON.stringify(pv)}`);
      assert.ok(Math.abs(pv.duration - wall) < 1, `video lasts ${pv.duration} s, recorded for ${wall} s`);
      const pa = probe(a.path);
      assert.equal(pa.streams[0].codec_type, 'audio');
      assert.equal(pa.streams[0].codec_name, 'opus');
      assert.ok(Math.abs(pa.duration - wall) < 1, `audio lasts ${pa.duration} s, recorded for ${wall} s`);
      assert.deepEqual(fs.readdirSync(out).sort(), [path.basename(a.path), path.basename(v.path)].sort());
      const st = rec.events.find((e) => e.event === 'stats' && e.recv_kbps > 50);
      assert.ok(st, `record printed stats with traffic: ${JSON.stringify(rec.events.filter((e) => e.event === 'stats'))}`);
      assert.deepEqual(page.errors, []);
      assert.deepEqual(rec.badLines, [], 'every stdout line is a JSON event');
    } catch (err) {
      throw withCliOutput(err, rec);
    } finally {
      await rec.kill();
      await page.context().close();
    }
  });
}
