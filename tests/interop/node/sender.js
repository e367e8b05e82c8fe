'use strict';
// Echo check through the relay using Azure's hyco-ws SDK sender path
// (hyco-ws.relayedConnect: ws 1.1.5 client, SAS token in the
// "ServiceBusAuthorization" request header, URL .../$hc/PATH?sb-hc-action=connect).
//
//   node sender.js BASE_URL ENTITY_PATH RULE KEY [--count=N] [--size=BYTES] [--timeout=SECONDS] [--token-ttl=SECONDS]
//
// Sends N rounds (default 1) of one text message and one binary message of
// BYTES random bytes (default 102400), expects each echoed back identically
// (a listener.js must be listening), closes with 1000, prints "OK", exits 0.
// Otherwise prints "sender: FAIL: ..." to stderr and exits 1 (10 s default timeout).

const hyco = require('hyco-ws');
const { parseArgs, hcUrl, makeToken, errText } = require('./common');
const { createChecker, checkOptions } = require('./echo_check');

const args = parseArgs(process.argv.slice(2), 'sender.js',
  '[--count=N] [--size=BYTES] [--timeout=SECONDS] [--token-ttl=SECONDS]');
const { count, size, timeoutMs } = checkOptions(args.opts);
const ttl = parseInt(args.opts['token-ttl'] || '3600', 10);

const uri = hcUrl(args.base, args.path, 'connect');
const token = makeToken(uri, args.rule, args.key, ttl);

let ws;
const checker = createChecker('sender', {
  count, size, timeoutMs,
  io: {
    sendText: (s) => ws.send(s, { binary: false }, (e) => { if (e) checker.fail('send text: ' + errText(e)); }),
    sendBinary: (b) => ws.send(b, { binary: true }, (e) => { if (e) checker.fail('send binary: ' + errText(e)); }),
    close: () => ws.close(1000, 'done'),
  },
});

process.on('uncaughtException', (e) => checker.fail('uncaught exception: ' + errText(e, true)));

checker.log('connect URL ' + uri);
ws = hyco.relayedConnect(uri, token, () => checker.opened());
ws.on('message', (data, flags) => {
  const isBinary = !!(flags && flags.binary);
  checker.deliver(isBinary, Buffer.isBuffer(data) ? data : Buffer.from(String(data), 'utf8'));
});
ws.on('error', (e) => checker.fail('websocket error: ' + errText(e)));
ws.on('close', (code, reason) => checker.closed(code, reason));
