// Small DOM helpers shared by the demo pages. No framework, no build step.

import { defaultSignalingUrl } from '/sdk/switchboard.js';

/**
 * Create an element: el('div', {class: 'x', dataset: {a: '1'}}, 'text', child)
 * @param {string} tag
 * @param {Record<string, any>} [attrs]
 * @param {...(Node|string|number|null|undefined|false)} children
 * @returns {HTMLElement}
 */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'dataset') Object.assign(node.dataset, v);
    else if (k === 'class') node.className = v;
    else if (k.startsWith('on') && typeof v === 'function') node.addEventListener(k.slice(2), v);
    else if (k in node && typeof v !== 'string') /** @type {any} */ (node)[k] = v;
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    node.append(typeof c === 'string' || typeof c === 'number' ? String(c) : c);
  }
  return node;
}

/** @param {string} sel @param {ParentNode} [root] */
export const $ = (sel, root = document) => /** @type {HTMLElement} */ (root.querySelector(sel));

/** Query parameters of the page. */
export const params = new URLSearchParams(location.search);

/** Signaling URL: `?signal=` override, or ws(s)://<this host>/v1/ws. */
export function signalingUrl() {
  return defaultSignalingUrl(location);
}

/** A short random room or peer name. */
export function randomName(prefix = '') {
  const a = new Uint8Array(4);
  crypto.getRandomValues(a);
  return prefix + [...a].map((b) => b.toString(36).padStart(2, '0')).join('').slice(0, 6);
}

/**
 * Show a message in a status banner.
 * @param {HTMLElement} box
 * @param {'error'|'warn'|'ok'|'info'} kind
 * @param {string} title
 * @param {string} [text]
 * @param {string} [code] machine-readable code, set as data-code
 */
export function setStatus(box, kind, title, text = '', code = '') {
  box.replaceChildren();
  box.dataset.kind = kind;
  if (code) box.dataset.code = code;
  else delete box.dataset.code;
  box.append(el('strong', {}, title), text);
}

/** @param {HTMLElement} box */
export function clearStatus(box) {
  box.replaceChildren();
  delete box.dataset.kind;
  delete box.dataset.code;
}

/**
 * Append an extra notice (camera fallback, etc.) to a container.
 * @param {HTMLElement} container
 * @param {'error'|'warn'|'ok'|'info'} kind
 * @param {string} title
 * @param {string} text
 * @param {string} code
 */
export function addNotice(container, kind, title, text, code) {
  const box = el('div', { class: 'status', role: 'status', dataset: { kind, code } });
  box.append(el('strong', {}, title), text);
  container.append(box);
  return box;
}

/**
 * Human explanation of a join / signaling error.
 * @param {any} err
 * @param {{room?: string, url?: string}} [ctx]
 * @returns {{title: string, text: string, code: string}}
 */
export function explainError(err, ctx = {}) {
  const code = (err && err.code) || 'error';
  const room = ctx.room ? `"${ctx.room}"` : 'this room';
  switch (code) {
    case 'room-full':
      return { code, title: 'Room is full.', text: `The room ${room} already holds the maximum number of peers allowed by the server. Try again later or pick another room name.` };
    case 'signaling-unreachable':
      return { code, title: 'Signaling server unreachable.', text: `Could not connect to ${ctx.url ?? 'the signaling server'}. Check that "switchboard serve" is running and reachable from this browser.` };
    case 'join-timeout':
      return { code, title: 'Signaling server did not answer.', text: `Connected to ${ctx.url ?? 'the server'} but no welcome came back in time.` };
    case 'signaling-closed':
      return { code, title: 'Signaling connection lost.', text: `${err.message ?? ''} New peers cannot reach you until you reload.` };
    case 'reconnect-failed':
      return { code, title: 'Signaling connection lost.', text: `${err.message ?? ''}. New peers cannot reach you until you reload.` };
    // The rule for names lives in the server; its message states it.
    case 'invalid-room':
      return { code, title: 'Invalid room name.', text: `The server refused ${room}: ${serverSays(err)}` };
    case 'invalid-peer':
      return { code, title: 'Invalid peer id.', text: `The server refused it: ${serverSays(err)}` };
    case 'peer-id-taken':
      return { code, title: 'Peer id already in use.', text: 'Another peer in this room already uses that id.' };
    case 'unauthorized':
      return { code, title: 'Access token needed.', text: `Open this page with a valid ?token= for ${room} (from the app that gave you the link). The server said: ${serverSays(err)}` };
    case 'token-expired':
      return { code, title: 'Access token expired.', text: 'Get a fresh token from the app that gave you this link, then reload.' };
    case 'peer-not-allowed':
      return { code, title: 'Peer id not allowed.', text: `The access token is for another peer id: ${serverSays(err)}` };
    case 'rate-limited':
      return { code, title: 'Slow down.', text: 'The server dropped a message because this page sent too many too fast.' };
    default:
      return { code, title: 'Error:', text: `${err && err.message ? err.message : String(err)}${code !== 'error' ? ` (${code})` : ''}` };
  }
}

/** The server's explanation of an error, or its code. @param {any} err */
const serverSays = (err) => String((err && err.message) || (err && err.code) || err);

/**
 * Show why joining a room failed in the page's status banner and set
 * `data-join-error` on <body> to the error code. A refused room name brings
 * back the page's room picker (`#pick-room`, `#room-input`) to fix it; any
 * other failure gets a retry button.
 * @param {HTMLElement} box
 * @param {any} err
 * @param {{room?: string, url?: string}} [ctx]
 */
export function showJoinError(box, err, ctx = {}) {
  const e = explainError(err, ctx);
  setStatus(box, 'error', e.title, ` ${e.text} `, e.code);
  const picker = document.querySelector('#pick-room');
  const input = /** @type {HTMLInputElement | null} */ (document.querySelector('#room-input'));
  if (e.code === 'invalid-room' && picker && input) {
    input.value = ctx.room ?? '';
    picker.classList.remove('hidden');
  } else {
    box.append(el('button', { type: 'button', onclick: () => location.reload() }, 'Try again'));
  }
  document.body.dataset.joinError = e.code;
  return e;
}

/**
 * Ask for camera and microphone. Never throws: on failure returns
 * `{stream: null, error}` (or an audio-only stream if only the camera failed).
 * @param {MediaStreamConstraints} [constraints]
 * @returns {Promise<{stream: MediaStream | null, error: any, partial: boolean}>}
 */
export async function getLocalMedia(constraints = { audio: true, video: true }) {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    const error = new DOMException('getUserMedia is not available (page not in a secure context?)', 'NotSupportedError');
    return { stream: null, error, partial: false };
  }
  try {
    return { stream: await navigator.mediaDevices.getUserMedia(constraints), error: null, partial: false };
  } catch (error) {
    const name = /** @type {any} */ (error).name;
    if (constraints.video && constraints.audio && name !== 'NotAllowedError' && name !== 'SecurityError') {
      // Maybe just the camera is missing or busy: try the microphone alone.
      try {
        const stream = await navigator.mediaDevices.getUserMedia({ audio: constraints.audio });
        return { stream, error, partial: true };
      } catch { /* fall through */ }
    }
    return { stream: null, error, partial: false };
  }
}

/**
 * Describe a getUserMedia failure for users.
 * @param {any} error
 */
export function explainMediaError(error) {
  const name = error && error.name;
  if (name === 'NotAllowedError' || name === 'SecurityError') return 'Camera/microphone access was denied';
  if (name === 'NotFoundError' || name === 'OverconstrainedError') return 'No camera/microphone found';
  if (name === 'NotReadableError') return 'The camera/microphone is in use by another application';
  return `Camera/microphone unavailable (${name || error})`;
}

/** @param {number} ms */
export function fmtMs(ms) {
  return `${ms.toFixed(3)} ms`;
}

/** @param {number} n */
export function fmtBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 * 1024 * 1024) return `${(n / 1024 / 1024).toFixed(2)} MiB`;
  return `${(n / 1024 / 1024 / 1024).toFixed(2)} GiB`;
}

/** @param {number} bytesPerSecond */
export function fmtRate(bytesPerSecond) {
  if (!Number.isFinite(bytesPerSecond) || bytesPerSecond <= 0) return '—';
  return `${fmtBytes(bytesPerSecond)}/s`;
}

/**
 * Fill a <tbody> with candidate rows.
 * @param {HTMLElement} tbody
 * @param {Array<{side?: string, type: string, protocol: string, address: string, port: number, relatedAddress?: string, relatedPort?: number}>} rows
 */
export function renderCandidates(tbody, rows) {
  tbody.replaceChildren(...rows.map((c) => el('tr', { dataset: { type: c.type, protocol: c.protocol } },
    c.side !== undefined ? el('td', {}, c.side) : null,
    el('td', {}, c.type),
    el('td', {}, c.protocol),
    el('td', { class: 'mono' }, c.address),
    el('td', { class: 'num' }, c.port),
    el('td', { class: 'mono muted' }, c.relatedAddress ? `${c.relatedAddress}:${c.relatedPort}` : ''),
  )));
}

/** Header row matching renderCandidates (with a side column). */
export function candidateTable() {
  const tbody = el('tbody');
  const table = el('table', { class: 'candidates' },
    el('thead', {}, el('tr', {},
      el('th', {}, 'side'), el('th', {}, 'type'), el('th', {}, 'protocol'),
      el('th', {}, 'address'), el('th', { class: 'num' }, 'port'), el('th', {}, 'related'))),
    tbody);
  return { table, tbody };
}

const STATE_STEPS = new Set(['ice-gathering-state', 'ice-connection-state', 'connection-state', 'signaling-state']);

/**
 * Render timeline entries (`{t, step, detail}`) into a log element.
 * @param {HTMLElement} box
 * @param {Array<{t: number, step: string, detail?: string}>} entries
 */
export function renderTimeline(box, entries) {
  const atBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
  box.replaceChildren(...entries.map(timelineLine));
  if (atBottom) box.scrollTop = box.scrollHeight;
}

/** @param {{t: number, step: string, detail?: string}} e */
export function timelineLine(e) {
  const kind = e.step === 'error' ? 'error' : STATE_STEPS.has(e.step) ? 'state' : '';
  return el('div', { class: 'line', dataset: { step: e.step, kind } },
    el('span', { class: 't' }, `[${e.t.toFixed(3)}]`),
    e.step, e.detail ? ` ${e.detail}` : '');
}

/**
 * Coalesce frequent updates into one per animation frame.
 * @param {() => void} fn
 */
export function rafThrottle(fn) {
  let queued = false;
  return () => {
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => { queued = false; fn(); });
    // Background tabs do not get animation frames; make sure it still runs.
    setTimeout(() => { if (queued) { queued = false; fn(); } }, 250);
  };
}

/**
 * Start playing a media element; if autoplay with sound is blocked, play it
 * muted and show a button to unmute.
 * @param {HTMLMediaElement} media
 * @param {HTMLElement} [buttonHost]
 */
export async function playWithFallback(media, buttonHost) {
  try {
    await media.play();
  } catch (err) {
    if (/** @type {any} */ (err).name !== 'NotAllowedError') return;
    media.muted = true;
    try { await media.play(); } catch { return; }
    if (buttonHost) {
      const btn = el('button', { type: 'button', class: 'unmute' }, 'Enable sound');
      btn.addEventListener('click', () => { media.muted = false; media.play().catch(() => {}); btn.remove(); });
      buttonHost.append(btn);
    }
  }
}

/**
 * Keep a "reconnecting…" badge in step with the room's signaling: shown
 * from 'reconnecting' until 'resumed' or 'rejoined', "offline" once the SDK
 * gives up. `document.body.dataset.signaling` says the same for scripts:
 * `connected`, `reconnecting`, `resumed`, `rejoined` or `lost`.
 * @param {EventTarget} room a joined Room
 * @param {HTMLElement} badge
 */
export function trackSignaling(room, badge) {
  const show = (state, text) => {
    document.body.dataset.signaling = state;
    badge.dataset.state = state;
    badge.textContent = text;
    badge.classList.toggle('hidden', !text);
  };
  show('connected', '');
  room.addEventListener('reconnecting', (ev) => {
    const { attempt } = /** @type {any} */ (ev);
    show('reconnecting', 'reconnecting…');
    badge.title = `Signaling connection lost; attempt ${attempt}. Calls in progress go on.`;
  });
  room.addEventListener('resumed', () => show('resumed', ''));
  room.addEventListener('rejoined', () => show('rejoined', ''));
  room.addEventListener('signalingclose', () => {
    show('lost', 'offline');
    badge.title = 'Signaling connection lost for good; reload to reach new peers.';
  });
}

/** Page header with navigation. @param {string} current */
export function header(current) {
  const link = (href, text) => el('a', { href, 'aria-current': current === href ? 'page' : null }, text);
  return el('header', { class: 'top' },
    el('a', { class: 'brand', href: '/' }, 'switchboard'),
    el('nav', {}, link('/local', 'Local'), link('/call', 'Call'), link('/chat', 'Chat'), link('/drop', 'Drop')),
    el('span', { class: 'spacer' }),
    el('span', { class: 'who', id: 'who' }));
}
