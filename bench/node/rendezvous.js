'use strict';
// Many WebSocket connections to a `peer.js hold` (directly or through relayd), INFLIGHT
// handshakes at a time, all of them then held open.
//
//   node rendezvous.js URL [--token=T] [--count=2000] [--inflight=64] [--timeout=S]
//
// Opens COUNT connections keeping INFLIGHT handshakes in flight; when all are open prints
// one JSON line {"count", "inflight", "seconds", "per_s", "p50_ms", "p99_ms", "max_ms"}
// (handshake times: from the TCP connect to 'open') and then "HELD", and keeps every
// connection open until its standard input closes (or a line arrives); then closes them all
// and prints "CLOSED".  A failed handshake ends it with {"error"}.

const { nativeHelpers, parseArgs, intOpt, connect, fail, deadline, percentile } = require('./common');

const { opts, positional } = parseArgs(process.argv.slice(2));
const url = positional[0] || fail('usage: node rendezvous.js URL [--token=T] [--count=2000] [--inflight=64]');
const count = intOpt(opts, 'count', 2000);
const inflight = Math.max(1, intOpt(opts, 'inflight', 64));
const limit = deadline(intOpt(opts, 'timeout', 120), 'opening the connections');
nativeHelpers();

const open = [];
const times = [];
let started = 0;
let pending = 0;
let t0 = null;

function next() {
  while (started < count && pending < inflight) {
    started += 1;
    pending += 1;
    const t = process.hrtime.bigint();
    const ws = connect(url, opts.token);
    ws.on('open', () => {
      times.push(Number(process.hrtime.bigint() - t) / 1e6);
      pending -= 1;
      open.push(ws);
      if (open.length === count) return done();
      next();
    });
    ws.on('error', (e) => fail('connection ' + started + ': ' + e.message));
    ws.on('unexpected-response', (req, res) => fail('connection ' + started + ': HTTP ' + res.statusCode));
  }
}

function done() {
  clearTimeout(limit);
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  times.sort((a, b) => a - b);
  process.stdout.write(JSON.stringify({
    count, inflight, seconds, per_s: count / seconds, p50_ms: percentile(times, 50),
    p99_ms: percentile(times, 99), max_ms: times[times.length - 1],
  }) + '\nHELD\n');
  for (const ws of open) ws.on('close', () => {});
  const release = () => {
    for (const ws of open) ws.terminate();
    process.stdout.write('CLOSED\n');
    process.exit(0);
  };
  process.stdin.once('data', release);
  process.stdin.once('end', release);
  process.stdin.resume();
}

t0 = process.hrtime.bigint();
next();
