/**
 * units/: byte offsets and block numbers are branded, so mixing them is a compile error. This compiles
 * test/fixtures/units-mixing.ts with the TypeScript compiler (as `tsc -p .` would, strict): the legal
 * conversions must compile and every `@ts-expect-error` line (a unit mix-up) must really be an error.
 * Then it compiles the same fixture against units/ with the brands stripped (plain `number` aliases,
 * what units were before): every directive must become unused, so each expected error is about units
 * and nothing else, and the test fails if the brands are ever removed.
 */
import t from 'tap';
import * as fs from 'node:fs';
import * as path from 'node:path';
import ts from 'typescript';
import { REPO_ROOT } from '../helpers/server';

const FIXTURE = path.join(REPO_ROOT, 'test', 'fixtures', 'units-mixing.ts');
const UNITS = path.join(REPO_ROOT, 'units', 'index.ts');

function options(): ts.CompilerOptions {
  const cfg = ts.readConfigFile(path.join(REPO_ROOT, 'tsconfig.json'), (f) => ts.sys.readFile(f));
  const parsed = ts.parseJsonConfigFileContent(cfg.config, ts.sys, REPO_ROOT);
  return { ...parsed.options, noEmit: true, incremental: false };
}

/** Diagnostics of the fixture; `unitsText` replaces units/index.ts when given. */
function compile(unitsText?: string): ts.Diagnostic[] {
  const opts = options();
  const host = ts.createCompilerHost(opts);
  if (unitsText !== undefined) {
    const getSourceFile = host.getSourceFile.bind(host);
    host.getSourceFile = (file, lang, onError, create) =>
      path.resolve(file) === UNITS ? ts.createSourceFile(file, unitsText, lang) : getSourceFile(file, lang, onError, create);
  }
  const program = ts.createProgram([FIXTURE], opts, host);
  return [...ts.getPreEmitDiagnostics(program)];
}

function show(d: readonly ts.Diagnostic[]): string {
  return ts.formatDiagnostics(d, { getCanonicalFileName: (f) => f, getCurrentDirectory: () => REPO_ROOT, getNewLine: () => '\n' });
}

const UNUSED_DIRECTIVE = 2578; // "Unused '@ts-expect-error' directive."
const expected = fs
  .readFileSync(FIXTURE, 'utf8')
  .split('\n')
  .filter((l) => l.trim().startsWith('// @ts-expect-error')).length;

t.test('mixing units does not compile; the conversions do', async (tt) => {
  tt.ok(expected >= 10, `the fixture has ${expected} mix-ups`);
  const diags = compile();
  tt.equal(diags.length, 0, 'the fixture compiles with every mix-up an error', { diagnostics: show(diags) });
});

t.test('without the brands every mix-up would compile (so each expected error is about units)', async (tt) => {
  const branded = fs.readFileSync(UNITS, 'utf8');
  const plain = branded.replace(/= number & \{ readonly \[unit\]: '\w+' \};/g, '= number;');
  tt.not(plain, branded, 'the brands were found and stripped');
  const diags = compile(plain);
  const unused = diags.filter((d) => d.code === UNUSED_DIRECTIVE);
  const rest = diags.filter((d) => d.code !== UNUSED_DIRECTIVE);
  tt.equal(unused.length, expected, 'every @ts-expect-error is unused without the brands', { diagnostics: show(diags) });
  tt.equal(rest.length, 0, 'and nothing else fails', { diagnostics: show(rest) });
});
