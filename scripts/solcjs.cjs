#!/usr/bin/env node
// Presents the npm `solc` package (solc-js) with the two native-solc command lines that
// py-solc-x uses: `--version` and `--standard-json` (input on stdin). Output goes to the file
// named by FEDCHAIN_SOLC_OUT because large piped output from node can be cut short.
'use strict';
const fs = require('fs');
const path = require('path');

function loadSolc() {
  const roots = [process.env.FEDCHAIN_NODE_MODULES, path.join(__dirname, '..', 'node_modules')];
  for (const root of roots) {
    if (!root) continue;
    try { return require(path.join(root, 'solc')); } catch (e) { /* next */ }
  }
  process.stderr.write('solc-js not found: run `npm ci` in the repository\n');
  process.exit(2);
}

function emit(text) {
  const out = process.env.FEDCHAIN_SOLC_OUT;
  if (out) fs.writeFileSync(out, text);
  else fs.writeSync(1, text);
}

const args = process.argv.slice(2);
const solc = loadSolc();
if (args.includes('--version')) {
  emit('solc, the solidity compiler commandline interface\nVersion: ' + solc.version() + '\n');
} else if (args.includes('--standard-json')) {
  const input = fs.readFileSync(0, 'utf8');
  const base = process.cwd();
  const findImports = (p) => {
    const full = path.resolve(base, p);
    if (!full.startsWith(base + path.sep)) return { error: 'import outside the project: ' + p };
    try { return { contents: fs.readFileSync(full, 'utf8') }; } catch (e) { return { error: 'not found: ' + p }; }
  };
  emit(solc.compile(input, { import: findImports }));
} else {
  process.stderr.write('solcjs wrapper: only --version and --standard-json are supported\n');
  process.exit(2);
}
