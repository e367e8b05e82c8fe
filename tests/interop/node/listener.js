'use strict';
// Echo listener built on Azure's hyco-ws SDK (createRelayedServer).
//
//   node listener.js BASE_URL ENTITY_PATH RULE KEY [--max-errors=N] [--token-ttl=SECONDS]
//
// stdout: the line "LISTENING" every time the SDK reports its control channel
//         open ('listening' event; again after an SDK-internal reconnect).
// stderr: diagnostics ("listener: ..."), one line per accepted rendezvous, errors.
// Every message received on an accepted connection is echoed back unchanged
// (text as text, binary as binary).
//
// Exit codes: 0 on SIGTERM/SIGINT; 2 after --max-errors control-channel errors
// (default 1); 3 on an uncaught exception inside the SDK; 64 bad usage.
//
// Why --max-errors: on any control-channel failure (refused, 401, 404, ...)
// hyco-ws 1.0.5 reconnects immediately from BOTH its onerror and its onclose
// handler, so every failed attempt starts two new ones (no back-off) - a
// listener with a bad key would flood the relay. By default the first error
// ends the process. A clean close by the relay (no error) makes the SDK
// reconnect exactly once, and LISTENING is printed again when that succeeds.

const hyco = require('hyco-ws');
const { parseArgs, hcUrl, makeToken, errText, onExit } = require('./common');

const args = parseArgs(process.argv.slice(2), 'listener.js',
  '[--max-errors=N] [--token-ttl=SECONDS]');
const maxErrors = parseInt(args.opts['max-errors'] || process.env.HC_MAX_ERRORS || '1', 10);
const ttl = parseInt(args.opts['token-ttl'] || '3600', 10);

function log(msg) { process.stderr.write('listener: ' + msg + '\n'); }

const listenUri = hcUrl(args.base, args.path, 'listen');
log('listen URL ' + listenUri);

let server = null;
let errors = 0;
let accepted = 0;
let stopping = false;

function stop(code) {
  if (stopping) return;
  stopping = true;
  try { if (server) server.close(); } catch (e) { /* closing a dead channel */ }
  process.exit(code);
}

onExit(stop, log);

server = hyco.createRelayedServer({
  server: listenUri,
  // A function (not a string) so the SDK re-creates the token on every
  // (re)connect and sends {"renewToken":{"token":...}} hourly.
  token: () => makeToken(listenUri, args.rule, args.key, ttl),
}, (ws) => {
  // Called right after the SDK starts the rendezvous; ws is NOT open yet.
  const n = ++accepted;
  log('accept #' + n + ' -> ' + ws.url);
  ws.on('open', () => log('rendezvous #' + n + ' open'));
  ws.on('message', (data, flags) => {
    const binary = !!(flags && flags.binary);
    ws.send(data, { binary: binary }, (err) => {
      if (err) log('echo #' + n + ' send failed: ' + errText(err));
    });
  });
  ws.on('error', (e) => log('rendezvous #' + n + ' error: ' + errText(e)));
  ws.on('close', (code, reason) => log('rendezvous #' + n + ' closed ' + code + ' ' + (reason || '')));
});

server.on('listening', () => {
  process.stdout.write('LISTENING\n');
});

server.on('error', (e) => {
  errors += 1;
  log('control channel error (' + errors + '/' + maxErrors + '): ' + errText(e));
  if (errors >= maxErrors) {
    log('giving up');
    stop(2);
  }
});
