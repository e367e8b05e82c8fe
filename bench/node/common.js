'use strict';
// Shared by the benchmark's Node programs (peer.js, stream.js, pingpong.js, rendezvous.js).
//
// Tokens are made by the Python side (relayd.wire.sas.make_token) and passed in, so these
// programs carry no key.  Every socket is on 127.0.0.1.

const WebSocket = require('ws');

// Fail loudly when the native helpers are missing: without them ws masks and validates in
// JavaScript and the client, not the relay, would be what is measured.
function nativeHelpers() {
  const bufferutil = require('bufferutil');
  const utf8 = require('utf-8-validate');
  const isNative = (fn) => /\[native code\]/.test(Function.prototype.toString.call(fn));
  if (!isNative(bufferutil.mask) || !isNative(utf8)) {
    throw new Error('bufferutil / utf-8-validate are not the native builds: run `npm ci` in bench/node');
  }
  return { bufferutil: require('bufferutil/package.json').version, 'utf-8-validate': require('utf-8-validate/package.json').version, ws: require('ws/package.json').version };
}

// The ws options every benchmark socket uses: no compression, no message size limit beyond
// the benchmark's own (64 MiB), native masking.
const WS_OPTIONS = { perMessageDeflate: false, maxPayload: 64 << 20 };

// --name=value / --flag options and positional arguments.
function parseArgs(argv) {
  const opts = {};
  const positional = [];
  for (const a of argv) {
    const m = /^--([^=]+)(?:=(.*))?$/.exec(a);
    if (m) opts[m[1]] = m[2] === undefined ? true : m[2];
    else positional.push(a);
  }
  return { opts, positional };
}

function intOpt(opts, name, dflt) {
  if (opts[name] === undefined) return dflt;
  const n = parseInt(opts[name], 10);
  if (!Number.isFinite(n) || n < 0) fail('--' + name + ' must be a non-negative integer, got ' + opts[name]);
  return n;
}

function connect(url, token) {
  const headers = token ? { ServiceBusAuthorization: token } : {};
  return new WebSocket(url, Object.assign({ headers }, WS_OPTIONS));
}

function fail(msg) {
  process.stdout.write(JSON.stringify({ error: String(msg) }) + '\n');
  process.exit(1);
}

// A deadline for the whole program: every run is bounded in time.
function deadline(seconds, what) {
  const t = setTimeout(() => fail(what + ' did not finish within ' + seconds + ' s'), seconds * 1000);
  t.unref();
  return t;
}

function percentile(sorted, p) {
  if (!sorted.length) return null;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

module.exports = { WebSocket, WS_OPTIONS, nativeHelpers, parseArgs, intOpt, connect, fail, deadline, percentile };
