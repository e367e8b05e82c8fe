'use strict';
// One WebSocket stream to a `peer.js sink` (directly or through relayd):
//
//   node stream.js URL [--token=T] [--bytes=N] [--message=M] [--window=W] [--timeout=S]
//
// Sends a text message "N", then N bytes as binary messages of M bytes (default 1 GiB in
// 256 KiB), keeping at most W bytes (default 4 MiB) written to ws but not yet to the socket,
// and waits for the sink's "done" (every byte arrived).  Prints one JSON line:
// {"bytes", "seconds", "mb_per_s"} (seconds from the first byte sent to "done"), or
// {"error"}.

const crypto = require('crypto');
const { nativeHelpers, parseArgs, intOpt, connect, fail, deadline } = require('./common');

const { opts, positional } = parseArgs(process.argv.slice(2));
const url = positional[0] || fail('usage: node stream.js URL [--token=T] [--bytes=N] [--message=M]');
const total = intOpt(opts, 'bytes', 1 << 30);
const size = intOpt(opts, 'message', 256 << 10);
const windowBytes = intOpt(opts, 'window', 4 << 20);
deadline(intOpt(opts, 'timeout', 300), 'the stream');
nativeHelpers();

const chunk = crypto.randomBytes(size);
const ws = connect(url, opts.token);
let left = total;
let queued = 0;
let start = null;

function pump() {
  while (left > 0 && queued < windowBytes) {
    const n = Math.min(left, size);
    left -= n;
    queued += n;
    ws.send(n === size ? chunk : chunk.subarray(0, n), { binary: true }, (err) => {
      if (err) return fail('send: ' + err.message);
      queued -= n;
      pump();
    });
  }
}

ws.on('open', () => {
  ws.send(String(total));
  start = process.hrtime.bigint();
  pump();
});
ws.on('message', (data) => {
  if (data.toString() !== 'done') return;
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  process.stdout.write(JSON.stringify({ bytes: total, seconds, mb_per_s: total / seconds / 1e6 }) + '\n');
  ws.close(1000);
  ws.on('close', () => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
});
ws.on('error', (e) => fail('websocket: ' + e.message));
ws.on('close', (code, reason) => { if (left > 0 || start === null) fail('closed early: ' + code + ' ' + reason); });
