#!/usr/bin/env node
// Prints the directories (relative to the repo root) of the production dependency closure of
// package.json, resolved the way Node resolves them (nearest node_modules upwards). Used by
// build-deb.sh so the package carries only what the program needs (no tap, typescript, eslint).
'use strict';
const fs = require('fs');
const path = require('path');
const root = path.resolve(__dirname, '..');
const seen = new Set();
function find(name, fromDir) {
  for (let dir = fromDir; ; dir = path.dirname(dir)) {
    const cand = path.join(dir, 'node_modules', name);
    if (fs.existsSync(path.join(cand, 'package.json'))) return cand;
    if (dir === root || dir === path.dirname(dir)) break;
  }
  throw new Error(`dependency ${name} (needed from ${fromDir}) not found: run npm ci`);
}
function walk(pkgDir) {
  const pkg = JSON.parse(fs.readFileSync(path.join(pkgDir, 'package.json'), 'utf8'));
  for (const name of Object.keys({ ...pkg.dependencies, ...pkg.optionalDependencies })) {
    let dir;
    try {
      dir = find(name, pkgDir);
    } catch (err) {
      if (pkg.optionalDependencies && name in pkg.optionalDependencies) continue;
      throw err;
    }
    if (seen.has(dir)) continue;
    seen.add(dir);
    walk(dir);
  }
}
walk(root);
for (const d of [...seen].sort()) console.log(path.relative(root, d));
