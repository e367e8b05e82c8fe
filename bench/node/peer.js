'use strict';
// The far end of every Node benchmark: one process that is both a plain WebSocket server
// (the direct anchor) and, with --listen, a Hybrid Connections listener behind relayd, and
// treats the connections of both the same way (so direct and relayed runs use the same
// clients).
//
//   node peer.js ROLE [--listen=URL --token=TOKEN] [--port=0]
//
// ROLE:
//   sink   count binary bytes; a text message "N" announces N bytes, and once N have
//          arrived the peer answers "done" (the stream scenario);
//   echo   send every message back as it came (the ping-pong scenario);
//   hold   do nothing with an accepted connection but keep it open (the rendezvous scenario).
//
// --listen: the HC listener's control channel, ws://HOST:PORT/$hc/ENTITY?sb-hc-action=listen,
// opened with TOKEN in the ServiceBusAuthorization header.  For every {"accept": {"address"}}
// message the relay sends, the peer opens a WebSocket to that address and serves it in ROLE.
//
// Prints "READY PORT" (the direct server's port) once the server listens and the control
// channel is open; then one line per problem on stderr.  Exits on SIGTERM, or with status 2
// when the control channel closes.

const { WebSocket, WS_OPTIONS, nativeHelpers, parseArgs, intOpt, connect } = require('./common');

const { opts, positional } = parseArgs(process.argv.slice(2));
const role = positional[0];
const ROLES = { sink, echo, hold };
if (!ROLES[role]) {
  process.stderr.write('usage: node peer.js sink|echo|hold [--listen=URL --token=TOKEN] [--port=0]\n');
  process.exit(64);
}
nativeHelpers();
const serve = ROLES[role];
let accepted = 0;
let acceptErrors = 0;

function sink(ws) {
  let expected = null;
  let received = 0;
  ws.on('message', (data, isBinary) => {
    if (!isBinary) {
      expected = parseInt(data.toString(), 10);
      received = 0;
    } else {
      received += data.length;
    }
    if (expected !== null && received >= expected) {
      expected = null;
      ws.send('done');
    }
  });
}

function echo(ws) {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
}

function hold(ws) {
  ws.on('message', () => {});
}

function attach(ws) {
  ws.on('error', (e) => process.stderr.write('peer: connection error: ' + e.message + '\n'));
  serve(ws);
}

const server = new WebSocket.Server(Object.assign({ host: '127.0.0.1', port: intOpt(opts, 'port', 0), backlog: 4096 }, WS_OPTIONS));
server.on('connection', attach);
server.on('error', (e) => { process.stderr.write('peer: server error: ' + e.message + '\n'); process.exit(1); });

function ready() {
  process.stdout.write('READY ' + server.address().port + '\n');
}

server.on('listening', () => {
  if (!opts.listen) return ready();
  const control = connect(opts.listen, opts.token);
  control.on('open', ready);
  control.on('message', (data) => {
    let msg;
    try { msg = JSON.parse(data.toString()); } catch (e) { return; }
    if (!msg.accept) return;  // renewToken answers, request messages: not for this peer
    accepted += 1;
    const leg = new WebSocket(msg.accept.address, WS_OPTIONS);
    leg.on('error', (e) => {
      acceptErrors += 1;
      process.stderr.write('peer: accept leg error: ' + e.message + '\n');
    });
    serve(leg);
  });
  control.on('error', (e) => process.stderr.write('peer: control channel error: ' + e.message + '\n'));
  control.on('close', (code, reason) => {
    process.stderr.write('peer: control channel closed ' + code + ' ' + reason + ' (accepted ' + accepted +
      ', ' + acceptErrors + ' accept errors)\n');
    process.exit(2);
  });
});

process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
