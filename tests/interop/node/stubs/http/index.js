'use strict';
// Stub for the npm dependency "http" declared by hyco-ws. On npm that name
// has no published versions, so installing hyco-ws fails without this. In
// Node require('http') always resolves to the built-in anyway; this package
// only exists so that `npm install` / `npm ci` can resolve it.
module.exports = require('node:http');
