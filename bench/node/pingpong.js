'use strict';
// Ping-pong with a `peer.js echo` (directly or through relayd): one message at a time.
//
//   node pingpong.js URL [--token=T] [--size=64] [--count=20000] [--warmup=2000] [--timeout=S]
//
// After WARMUP round trips, COUNT more are timed one by one (send a SIZE-byte binary message,
// wait for it to come back, compare the bytes).  Prints one JSON line: {"count", "size",
// "p50_us", "p90_us", "p99_us", "mean_us", "max_us", "seconds"}, or {"error"}.

const crypto = require('crypto');
const { nativeHelpers, parseArgs, intOpt, connect, fail, deadline, percentile } = require('./common');

const { opts, positional } = parseArgs(process.argv.slice(2));
const url = positional[0] || fail('usage: node pingpong.js URL [--token=T] [--size=64] [--count=N]');
const size = intOpt(opts, 'size', 64);
const count = intOpt(opts, 'count', 20000);
const warmup = intOpt(opts, 'warmup', 2000);
deadline(intOpt(opts, 'timeout', 120), 'the ping-pong');
nativeHelpers();

const payload = crypto.randomBytes(size);
const rtts = new Float64Array(count);
const ws = connect(url, opts.token);
let i = 0;
let sent = 0n;
let started = 0n;

function ping() {
  sent = process.hrtime.bigint();
  ws.send(payload, { binary: true });
}

ws.on('open', () => { started = process.hrtime.bigint(); ping(); });
ws.on('message', (data, isBinary) => {
  const now = process.hrtime.bigint();
  if (!isBinary || !payload.equals(data)) return fail('the echo differs from what was sent');
  if (i >= warmup) rtts[i - warmup] = Number(now - sent) / 1e3;
  i += 1;
  if (i < warmup + count) return ping();
  const sorted = Array.from(rtts).sort((a, b) => a - b);
  const mean = sorted.reduce((a, b) => a + b, 0) / sorted.length;
  process.stdout.write(JSON.stringify({
    count, size, p50_us: percentile(sorted, 50), p90_us: percentile(sorted, 90),
    p99_us: percentile(sorted, 99), mean_us: mean, max_us: sorted[sorted.length - 1],
    seconds: Number(now - started) / 1e9,
  }) + '\n');
  ws.close(1000);
  ws.on('close', () => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
});
ws.on('error', (e) => fail('websocket: ' + e.message));
ws.on('close', (code, reason) => { if (i < warmup + count) fail('closed early: ' + code + ' ' + reason); });
