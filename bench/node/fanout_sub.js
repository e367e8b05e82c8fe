'use strict';
// N fan-out subscribers in one process: each an HC listener on a multicast entity.
//
//   node fanout_sub.js LISTEN_URL --token=T --subscribers=N --events=E [--timeout=S]
//
// Opens N control channels; prints "READY" once all are open.  Every event arrives on a
// control channel as a `request` JSON text message followed by its body as one binary
// message; the body starts with the publisher's process.hrtime.bigint() (CLOCK_MONOTONIC,
// shared by the processes of the machine) as a little-endian uint64.  Once every
// subscriber has E events, prints one JSON line: {"deliveries", "seconds" (first event
// published to last delivered), "deliveries_per_s", "p50_ms", "p99_ms", "max_ms"}, or
// {"error"} (a channel closed, or the deadline passed).

const { nativeHelpers, parseArgs, intOpt, connect, fail, deadline, percentile } = require('./common');

const { opts, positional } = parseArgs(process.argv.slice(2));
const url = positional[0] || fail('usage: node fanout_sub.js LISTEN_URL --token=T --subscribers=N --events=E');
const count = intOpt(opts, 'subscribers', 1);
const events = intOpt(opts, 'events', 1000);
deadline(intOpt(opts, 'timeout', 300), 'the fan-out');
nativeHelpers();

const latencies = new Float64Array(count * events);
let deliveries = 0;
let open = 0;
let done = 0;
let firstSent = null;
let lastReceived = null;

function finish() {
  const sorted = latencies.subarray(0, deliveries).sort();
  const seconds = Number(lastReceived - firstSent) / 1e9;
  process.stdout.write(JSON.stringify({
    subscribers: count, events, deliveries, seconds, deliveries_per_s: deliveries / seconds,
    p50_ms: percentile(sorted, 50), p99_ms: percentile(sorted, 99), max_ms: sorted[sorted.length - 1],
  }) + '\n');
  process.exit(0);
}

function subscribe() {
  const control = connect(url, opts.token);
  let got = 0;
  let expectBody = false;
  control.on('open', () => { open += 1; if (open === count) process.stdout.write('READY\n'); });
  control.on('message', (data, isBinary) => {
    if (!isBinary) {
      const msg = JSON.parse(data.toString());
      expectBody = Boolean(msg.request && msg.request.body);
      return;
    }
    if (!expectBody) return;
    expectBody = false;
    const now = process.hrtime.bigint();
    const sent = data.readBigUInt64LE(0);
    if (firstSent === null || sent < firstSent) firstSent = sent;
    lastReceived = now;
    latencies[deliveries++] = Number(now - sent) / 1e6;
    got += 1;
    if (got === events && ++done === count) finish();
  });
  control.on('error', (e) => fail('control channel: ' + e.message));
  control.on('close', (code, reason) => fail('control channel closed ' + code + ' ' + reason + ' after ' + got + ' events'));
}

for (let i = 0; i < count; i++) subscribe();
