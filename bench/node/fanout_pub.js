'use strict';
// One WebSocket publisher on a multicast entity (`sb-hc-action=connect`: each message one
// event):
//
//   node fanout_pub.js CONNECT_URL --token=T [--events=E] [--size=B] [--window=W] [--rate=R]
//                      [--timeout=S]
//
// Sends E binary events of B bytes (default 1000 of 1024), each starting with
// process.hrtime.bigint() at the send as a little-endian uint64, keeping at most W bytes
// (default 64 KiB) handed to ws but not yet written to the socket (backpressure).  With
// --rate=R (events per second; default 0: as fast as backpressure allows) event i is sent
// no earlier than i/R seconds after the first.  Prints one JSON line {"events", "seconds",
// "events_per_s"} once all are written, or {"error"}.

const crypto = require('crypto');
const { nativeHelpers, parseArgs, intOpt, connect, fail, deadline } = require('./common');

const { opts, positional } = parseArgs(process.argv.slice(2));
const url = positional[0] || fail('usage: node fanout_pub.js CONNECT_URL --token=T [--events=E] [--size=B]');
const events = intOpt(opts, 'events', 1000);
const size = Math.max(8, intOpt(opts, 'size', 1024));
const windowBytes = intOpt(opts, 'window', 64 << 10);
const rate = intOpt(opts, 'rate', 0);
deadline(intOpt(opts, 'timeout', 300), 'the publisher');
nativeHelpers();

const payload = crypto.randomBytes(size);
const ws = connect(url, opts.token);
let sent = 0;
let written = 0;
let queued = 0;
let start = null;
let timer = null;

// Whether event number `sent` is due (paced runs); if not, pump() again when it is.
function due() {
  if (rate === 0) return true;
  const at = start + BigInt(Math.floor((sent * 1e9) / rate));
  const wait = at - process.hrtime.bigint();
  if (wait <= 0n) return true;
  if (timer === null) {
    timer = setTimeout(() => { timer = null; pump(); }, Math.max(0, Number(wait / 1000000n)));
  }
  return false;
}

function pump() {
  while (sent < events && queued < windowBytes && due()) {
    const event = Buffer.from(payload);
    event.writeBigUInt64LE(process.hrtime.bigint(), 0);
    sent += 1;
    queued += size;
    ws.send(event, { binary: true }, (err) => {
      if (err) return fail('send: ' + err.message);
      queued -= size;
      written += 1;
      if (written === events) {
        const seconds = Number(process.hrtime.bigint() - start) / 1e9;
        process.stdout.write(JSON.stringify({ events, seconds, events_per_s: events / seconds }) + '\n');
        ws.close(1000);
        setTimeout(() => process.exit(0), 2000).unref();
        ws.on('close', () => process.exit(0));
        return;
      }
      pump();
    });
  }
}

ws.on('open', () => { start = process.hrtime.bigint(); pump(); });
ws.on('error', (e) => fail('websocket: ' + e.message));
ws.on('close', (code, reason) => { if (written < events) fail('closed early: ' + code + ' ' + reason); });
