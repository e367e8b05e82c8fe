'use strict';
// An event subscriber built on Azure's hyco-https SDK (createRelayedServer), unchanged: every
// event of a multicast / oneway entity arrives as a relayed POST request (issue 11).
//
//   node event_subscriber.js BASE_URL ENTITY_PATH RULE KEY
//
// stdout: "LISTENING" when the control channel opens, then one line per event:
//         "EVENT <method> <requestTarget> <content-type> <body as UTF-8>".
//         Each event is answered 204 (the relay drops the answer).
// stderr: diagnostics ("event_subscriber: ...").
// Exit codes: 0 on SIGTERM/SIGINT; 2 on a control-channel error; 64 bad usage.

const https = require('hyco-https');
const { parseArgs, hcUrl, errText, onExit } = require('./common');

const SCRIPT = 'event_subscriber.js';
const args = parseArgs(process.argv.slice(2), SCRIPT, '');

function log(msg) { process.stderr.write('event_subscriber: ' + msg + '\n'); }

const listenUri = hcUrl(args.base, args.path, 'listen');
let server = null;

function stop(code) {
  try { if (server) server.close(() => {}); } catch (_) { /* closing anyway */ }
  process.exit(code);
}

onExit(stop, log);

server = https.createRelayedServer({
  server: listenUri,
  token: () => https.createRelayToken(listenUri, args.rule, args.key, 3600),
}, (req, res) => {
  const parts = [];
  req.on('data', (d) => parts.push(d));
  req.on('end', () => {
    const body = Buffer.concat(parts).toString('utf8');
    process.stdout.write('EVENT ' + req.method + ' ' + req.url + ' ' +
      (req.headers['content-type'] || '-') + ' ' + body + '\n');
    res.statusCode = 204;
    res.end();
  });
});

server.on('listening', () => process.stdout.write('LISTENING\n'));
server.on('error', (e) => {
  log('control channel error: ' + errText(e && e.error ? e.error : e));
  stop(2);
});
server.listen();
