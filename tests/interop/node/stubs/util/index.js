'use strict';
// Stub for the npm dependency "util" declared by hyco-ws / hyco-https. On npm
// that name is only a placeholder/browser shim of a Node built-in; in Node
// require('util') always resolves to the built-in anyway. This package only
// exists so that `npm install` / `npm ci` resolve it to nothing third-party.
module.exports = require('node:util');
