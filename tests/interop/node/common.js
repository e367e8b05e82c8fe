'use strict';
// Shared helpers for the relayd Node.js interop scripts (listener.js,
// sender.js, plain_sender.js). Plain CommonJS, no dependencies beyond
// hyco-ws (for createRelayToken).
//
// Positional arguments (each falls back to an environment variable):
//   1. base URL    HC_BASE_URL   e.g. ws://127.0.0.1:9090 or wss://relay.test:8443
//                                (http:// and https:// are mapped to ws:// / wss://)
//   2. entity path HC_PATH       e.g. myhc   (may contain '/')
//   3. rule name   HC_RULE       SAS key name (skn)
//   4. key         HC_KEY        SAS key value (used as-is, UTF-8, like the SDK)
// Options are --name=value (or --flag); see each script.
//
// TLS: nothing here (or in the scripts) touches certificate verification.
// For a self-signed relay certificate set NODE_EXTRA_CA_CERTS=/path/ca.pem.

const hyco = require('hyco-ws');

function usage(script, extra) {
  return 'usage: node ' + script + ' BASE_URL ENTITY_PATH RULE KEY' +
    (extra ? ' ' + extra : '') +
    '\n  (or env HC_BASE_URL, HC_PATH, HC_RULE, HC_KEY)';
}

function parseArgs(argv, script, extraUsage) {
  const positional = [];
  const opts = {};
  for (const a of argv) {
    const m = /^--([^=]+)(?:=(.*))?$/.exec(a);
    if (m) {
      opts[m[1]] = m[2] === undefined ? true : m[2];
    } else {
      positional.push(a);
    }
  }
  const base = positional[0] || process.env.HC_BASE_URL;
  const path = positional[1] || process.env.HC_PATH;
  const rule = positional[2] || process.env.HC_RULE;
  const key = positional[3] !== undefined ? positional[3] : process.env.HC_KEY;
  if (!base || !path || !rule || key === undefined) {
    process.stderr.write(usage(script, extraUsage) + '\n');
    process.exit(64);
  }
  return { base, path, rule, key, opts, positional };
}

function normalizeBase(base) {
  let b = String(base).trim().replace(/\/+$/, '');
  if (/^http:\/\//i.test(b)) b = 'ws://' + b.slice(7);
  else if (/^https:\/\//i.test(b)) b = 'wss://' + b.slice(8);
  if (!/^wss?:\/\//i.test(b)) {
    throw new Error('base URL must start with ws://, wss://, http:// or https://: ' + base);
  }
  return b;
}

function encodePath(path) {
  return String(path).replace(/^\/+|\/+$/g, '')
    .split('/').map(encodeURIComponent).join('/');
}

// ws(s)://host:port/$hc/<path>?sb-hc-action=<action>
// (hyco-ws's createRelayListenUri/createRelaySendUri hard-code wss:// and :443,
// so the URL is built by hand.)
function hcUrl(base, path, action) {
  return normalizeBase(base) + '/$hc/' + encodePath(path) + '?sb-hc-action=' + action;
}

// The SDK's own token builder (see README.md for what it produces).
function makeToken(uri, rule, key, ttlSeconds) {
  return hyco.createRelayToken(uri, rule, key, ttlSeconds);
}

// One-line description of an error (message + code); withStack adds the stack.
function errText(e, withStack) {
  if (e === undefined || e === null) return String(e);
  if (typeof e === 'string') return e;
  if (e instanceof Error) {
    if (withStack && e.stack) return e.stack;
    return (e.name && e.name !== 'Error' ? e.name + ': ' : '') + e.message +
      (e.code && String(e.message).indexOf(e.code) === -1 ? ' (' + e.code + ')' : '');
  }
  if (e.message) return String(e.message);
  try { return JSON.stringify(e); } catch (_) { return String(e); }
}

// SIGTERM/SIGINT call stop(0); an uncaught exception (an SDK crash) is logged and exits 3.
function onExit(stop, log) {
  process.on('SIGTERM', () => stop(0));
  process.on('SIGINT', () => stop(0));
  process.on('uncaughtException', (e) => {
    log('uncaught exception (SDK crash?): ' + errText(e, true));
    process.exit(3);
  });
}

module.exports = { parseArgs, normalizeBase, encodePath, hcUrl, makeToken, errText, usage, onExit };
