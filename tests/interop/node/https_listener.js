'use strict';
// HTTP listener built on Azure's hyco-https SDK (createRelayedServer).
//
//   node https_listener.js BASE_URL ENTITY_PATH RULE KEY [--max-errors=N] [--token-ttl=SECONDS]
//
// Routes (requestTarget must start with /<ENTITY_PATH>, matched case-insensitively,
// raw or URL-encoded; the query string is parsed from the requestTarget):
//   GET|HEAD /<entity>/hello?x=X  200 text/plain "hello X", Set-Cookie a=1 and b=2
//                                 (hyco-https 1.4.5 puts only the FIRST array value,
//                                 "a=1", on the wire), X-Seen-Via: <Via request
//                                 header> (left out when the request has no Via)
//   GET|HEAD /<entity>/big?n=N[&chunk=K]
//                                 200 application/octet-stream, N bytes, byte i = i % 251.
//                                 With chunk=K the body is written in K-byte res.write()
//                                 calls then res.end() (the SDK sends them as fragments
//                                 of one binary message); without it, one res.end(buf).
//                                 Bodies over 65536 bytes go over a rendezvous socket.
//   POST /<entity>/echo           200 application/octet-stream, the request body,
//                                 X-Body-Sha256: hex sha256 of the request body
//   GET|HEAD /<entity>/slow?ms=M  waits M ms, then 200 text/plain "slow"
//   anything else                 404 text/plain "no route"
// HEAD gets the same status and headers with res.end() and no body (the SDK then
// sends "body":false followed by an empty binary frame).
//
// stdout: "LISTENING" each time the control channel opens (SDK 'listening' event;
//         again after an SDK reconnect).
// stderr: diagnostics ("https_listener: ..."), one line per request and errors.
//
// Exit codes: 0 on SIGTERM/SIGINT; 2 after --max-errors control-channel errors
// (default 1; 0 = never give up, the SDK then retries after 0,1,2,5,10,30,30.. s);
// 3 on an uncaught exception (hyco-https crashes on, e.g., an {"accept"} message
// or a control-channel message that is not JSON); 64 bad usage.

const crypto = require('crypto');
const https = require('hyco-https');
const { parseArgs, hcUrl, encodePath, errText, onExit } = require('./common');

const SCRIPT = 'https_listener.js';
const args = parseArgs(process.argv.slice(2), SCRIPT,
  '[--max-errors=N] [--token-ttl=SECONDS]');
const maxErrors = parseInt(args.opts['max-errors'] || process.env.HC_MAX_ERRORS || '1', 10);
const ttl = parseInt(args.opts['token-ttl'] || '3600', 10);
const MAX_BIG = 100 * 1024 * 1024;   // ws 6 default maxPayload on the relay's side of things
const MAX_SLOW_MS = 10 * 60 * 1000;

function log(msg) { process.stderr.write('https_listener: ' + msg + '\n'); }

const listenUri = hcUrl(args.base, args.path, 'listen');
log('listen URL ' + listenUri);

// Path prefixes that identify this entity in a requestTarget.
const entityRaw = '/' + String(args.path).replace(/^\/+|\/+$/g, '');
const entityEnc = '/' + encodePath(args.path);
const prefixes = [entityRaw.toLowerCase(), entityEnc.toLowerCase()];

function stripEntity(pathname) {
  const low = pathname.toLowerCase();
  for (const p of prefixes) {
    if (low === p) return '/';
    if (low.startsWith(p + '/')) return pathname.slice(p.length);
  }
  return null;
}

function pattern(n) {
  const buf = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) buf[i] = i % 251;
  return buf;
}

function intParam(q, name, dflt, max) {
  const s = q.get(name);
  if (s === null || s === '') return dflt;
  if (!/^\d+$/.test(s)) return NaN;
  const v = parseInt(s, 10);
  return v > max ? NaN : v;
}

function headerText(v) {
  if (v === undefined || v === null) return null;
  return Array.isArray(v) ? v.join(', ') : String(v);
}

// Sends the response. Never call res.end(<empty Buffer>): hyco-https then sends
// nothing at all (write_ returns early on a zero-length chunk before the preamble).
function finish(res, head, status, type, body) {
  res.statusCode = status;
  res.setHeader('Content-Type', type);
  if (head || body === null || body.length === 0) {
    res.end();
  } else {
    res.end(body);
  }
}

let server = null;
let errors = 0;
let requests = 0;
let stopping = false;

function channelName(sock) {
  if (!sock) return 'none';
  if (server && sock === server.controlChannel) return 'control';
  return 'rendezvous ' + (sock.url || '?');
}

function handle(req, res) {
  const n = ++requests;
  const method = String(req.method || '').toUpperCase();
  const head = method === 'HEAD';
  const target = String(req.url === undefined ? '' : req.url);
  const via = headerText(req.headers.via);
  let u;
  try {
    u = new URL(target, 'http://relay.invalid');
  } catch (e) {
    u = null;
  }
  const route = u ? stripEntity(u.pathname) : null;
  const q = u ? u.searchParams : new URLSearchParams();
  log('request #' + n + ' ' + method + ' ' + target + ' via=' + (via === null ? '-' : via) +
    ' on ' + channelName(req.socket));
  res.on('socket', (s) => log('response #' + n + ' on ' + channelName(s)));

  const isGet = method === 'GET' || head;

  if (isGet && route === '/hello') {
    const x = q.get('x');
    res.setHeader('Set-Cookie', ['a=1', 'b=2']);
    if (via !== null) res.setHeader('X-Seen-Via', via);
    finish(res, head, 200, 'text/plain', 'hello ' + (x === null ? '' : x));
    return;
  }

  if (isGet && route === '/big') {
    const size = intParam(q, 'n', NaN, MAX_BIG);
    const chunk = intParam(q, 'chunk', 0, MAX_BIG);
    if (Number.isNaN(size) || Number.isNaN(chunk)) {
      finish(res, head, 400, 'text/plain', 'bad n or chunk');
      return;
    }
    const body = pattern(size);
    if (chunk > 0 && !head && size > 0) {
      res.statusCode = 200;
      res.setHeader('Content-Type', 'application/octet-stream');
      for (let off = 0; off < size; off += chunk) {
        res.write(body.subarray(off, Math.min(size, off + chunk)));
      }
      res.end();
      return;
    }
    finish(res, head, 200, 'application/octet-stream', body);
    return;
  }

  if (method === 'POST' && route === '/echo') {
    const parts = [];
    req.on('data', (d) => parts.push(Buffer.isBuffer(d) ? d : Buffer.from(d)));
    req.on('error', (e) => log('request #' + n + ' body error: ' + errText(e)));
    req.on('end', () => {
      const body = Buffer.concat(parts);
      const sha = crypto.createHash('sha256').update(body).digest('hex');
      log('request #' + n + ' body ' + body.length + ' bytes sha256 ' + sha);
      res.setHeader('X-Body-Sha256', sha);
      finish(res, false, 200, 'application/octet-stream', body);
    });
    return;
  }

  if (isGet && route === '/slow') {
    const ms = intParam(q, 'ms', 0, MAX_SLOW_MS);
    if (Number.isNaN(ms)) {
      finish(res, head, 400, 'text/plain', 'bad ms');
      return;
    }
    setTimeout(() => finish(res, head, 200, 'text/plain', 'slow'), ms);
    return;
  }

  finish(res, head, 404, 'text/plain', 'no route');
}

function stop(code) {
  if (stopping) return;
  stopping = true;
  try {
    if (server) server.close(() => {});
  } catch (e) { /* closing a dead channel */ }
  process.exit(code);
}

onExit(stop, log);

server = https.createRelayedServer({
  server: listenUri,
  // A function (not a string): the SDK calls it on every (re)connect and sends
  // {"renewToken":{"token":...}} every hour. Same token as hyco-ws produces.
  token: () => https.createRelayToken(listenUri, args.rule, args.key, ttl),
}, (req, res) => {
  try {
    handle(req, res);
  } catch (e) {
    // A throw here would surface inside the SDK's WebSocket message handler.
    log('handler error: ' + errText(e, true));
    try { finish(res, false, 500, 'text/plain', 'handler error'); } catch (_) { /* give up */ }
  }
});

server.on('listening', () => {
  const cc = server.controlChannel;
  if (cc && typeof cc.on === 'function') {
    cc.on('close', (code, reason) =>
      log('control channel closed ' + code + ' ' + (reason || '')));
  }
  process.stdout.write('LISTENING\n');
});

server.on('error', (e) => {
  errors += 1;
  log('control channel error (' + errors + '/' + (maxErrors > 0 ? maxErrors : 'inf') + '): ' +
    errText(e && e.error ? e.error : e));
  if (maxErrors > 0 && errors >= maxErrors) {
    log('giving up');
    stop(2);
  }
});

// createRelayedServer does not connect; listen() opens the control channel
// (its arguments are ignored, any callback is never called).
server.listen();
