'use strict';
// The same echo check as sender.js, but with the plain `ws` package (v8), the
// way a browser connects: no custom headers, the SAS token (built by hyco-ws's
// createRelayToken for the connect URL) URL-encoded in the sb-hc-token query
// parameter. ws 8 offers permessage-deflate like browsers do (--no-deflate to
// turn the offer off).
//
//   node plain_sender.js BASE_URL ENTITY_PATH RULE KEY [--count=N] [--size=BYTES] [--timeout=SECONDS] [--token-ttl=SECONDS] [--no-deflate]
//
// Prints "OK" and exits 0, or "plain_sender: FAIL: ..." on stderr and exits 1.

const WebSocket = require('ws'); // the direct dependency (ws 8.x), not hyco-ws's ws 1.1.5
const { parseArgs, hcUrl, makeToken, errText } = require('./common');
const { createChecker, checkOptions } = require('./echo_check');

const args = parseArgs(process.argv.slice(2), 'plain_sender.js',
  '[--count=N] [--size=BYTES] [--timeout=SECONDS] [--token-ttl=SECONDS] [--no-deflate]');
const { count, size, timeoutMs } = checkOptions(args.opts);
const ttl = parseInt(args.opts['token-ttl'] || '3600', 10);

const uri = hcUrl(args.base, args.path, 'connect');
const token = makeToken(uri, args.rule, args.key, ttl);
const url = uri + '&sb-hc-token=' + encodeURIComponent(token);

let ws;
const checker = createChecker('plain_sender', {
  count, size, timeoutMs,
  io: {
    sendText: (s) => ws.send(s, { binary: false }, (e) => { if (e) checker.fail('send text: ' + errText(e)); }),
    sendBinary: (b) => ws.send(b, { binary: true }, (e) => { if (e) checker.fail('send binary: ' + errText(e)); }),
    close: () => ws.close(1000, 'done'),
  },
});

process.on('uncaughtException', (e) => checker.fail('uncaught exception: ' + errText(e, true)));

checker.log('connect URL ' + uri + '&sb-hc-token=...');
ws = new WebSocket(url, { perMessageDeflate: !args.opts['no-deflate'] });
ws.on('open', () => checker.opened());
ws.on('message', (data, isBinary) => {
  const buf = Buffer.isBuffer(data) ? data
    : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data);
  checker.deliver(!!isBinary, buf);
});
ws.on('unexpected-response', (req, res) => {
  checker.fail('handshake rejected: HTTP ' + res.statusCode + ' ' + (res.statusMessage || ''));
});
ws.on('error', (e) => checker.fail('websocket error: ' + errText(e)));
ws.on('close', (code, reason) => checker.closed(code, reason && reason.toString()));
