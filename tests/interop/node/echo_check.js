'use strict';
// Echo round-trip check shared by sender.js (hyco-ws / ws 1.1.5) and
// plain_sender.js (ws 8). The caller adapts its socket to:
//   sendText(string), sendBinary(Buffer), close(), and calls
//   checker.deliver(isBinary, Buffer) for each received message,
//   checker.opened() on open, checker.closed(code, reason) on close,
//   checker.fail(message) on errors.
// Per round it sends one text message and one binary message of `size`
// random bytes and expects both back, in order, identical in type and bytes.
// After the last round it closes (code 1000) and expects the close handshake
// to complete. Prints "OK" and exits 0, or prints "FAIL: ..." to stderr and
// exits 1. The whole run is bounded by `timeoutMs`.

const crypto = require('crypto');

function createChecker(name, { count, size, timeoutMs, io }) {
  const expected = [];
  let round = 0;
  let state = 'connecting';
  const started = Date.now();

  function log(msg) { process.stderr.write(name + ': ' + msg + '\n'); }

  function fail(msg) {
    if (state === 'done') return;
    state = 'done';
    process.stderr.write(name + ': FAIL: ' + msg + '\n');
    process.exit(1);
  }

  function succeed() {
    if (state === 'done') return;
    state = 'done';
    process.stdout.write('OK\n');
    process.exit(0);
  }

  const timer = setTimeout(() => {
    fail('timeout after ' + timeoutMs + ' ms in state ' + state +
      ' (round ' + round + '/' + count + ', ' + expected.length + ' echo(es) outstanding)');
  }, timeoutMs);
  timer.unref();

  function sendRound() {
    round += 1;
    const text = 'relayd interop ' + name + ' round ' + round + ' \u00e9\u2713\ud83d\ude80 ' +
      crypto.randomBytes(16).toString('hex');
    const bin = crypto.randomBytes(size);
    expected.push({ binary: false, data: Buffer.from(text, 'utf8') });
    expected.push({ binary: true, data: bin });
    io.sendText(text);
    io.sendBinary(bin);
  }

  function describe(binary, buf) {
    return (binary ? 'binary' : 'text') + '(' + buf.length + ' bytes)';
  }

  return {
    opened() {
      if (state !== 'connecting') return;
      state = 'echoing';
      log('connected after ' + (Date.now() - started) + ' ms');
      sendRound();
    },
    deliver(isBinary, buf) {
      if (state !== 'echoing') {
        fail('unexpected message in state ' + state + ': ' + describe(isBinary, buf));
        return;
      }
      const want = expected.shift();
      if (!want) {
        fail('unexpected extra message: ' + describe(isBinary, buf));
        return;
      }
      if (want.binary !== isBinary) {
        fail('type mismatch: sent ' + describe(want.binary, want.data) +
          ', got back ' + describe(isBinary, buf));
        return;
      }
      if (!want.data.equals(buf)) {
        let i = 0;
        while (i < Math.min(want.data.length, buf.length) && want.data[i] === buf[i]) i++;
        fail('payload mismatch on ' + describe(want.binary, want.data) + ': got ' +
          describe(isBinary, buf) + ', first difference at byte ' + i);
        return;
      }
      if (expected.length === 0) {
        if (round < count) {
          sendRound();
        } else {
          state = 'closing';
          log(count + ' round(s) echoed correctly; closing');
          io.close();
        }
      }
    },
    closed(code, reason) {
      if (state === 'closing') {
        if (code === 1000) {
          succeed();
        } else {
          fail('close handshake ended with code ' + code + ' ' + (reason || '') + ' (expected 1000)');
        }
        return;
      }
      fail('connection closed in state ' + state + ' with code ' + code + ' ' + (reason || ''));
    },
    fail,
    log,
  };
}

function checkOptions(opts) {
  const count = parseInt(opts.count || '1', 10);
  const size = parseInt(opts.size || String(100 * 1024), 10);
  const timeoutMs = Math.round(parseFloat(opts.timeout || '10') * 1000);
  if (!(count >= 1) || !(size >= 0) || !(timeoutMs > 0)) {
    process.stderr.write('bad --count/--size/--timeout\n');
    process.exit(64);
  }
  return { count, size, timeoutMs };
}

module.exports = { createChecker, checkOptions };
