// The shared header vectors (tests/spec_cases.json) through the TypeScript parser; the
// Python parser runs the same file (tests/engine/test_spec_cases.py).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { HeaderError, parseHeader, shlexSplit, splitBlockCell } from '../src/header';

interface Case {
  header: string;
  spec?: Record<string, unknown>;
  error?: string;
  error_prefix?: string;
}

// build-test/test/ -> the repository's tests/
const CASES: Case[] = JSON.parse(
  readFileSync(join(__dirname, '..', '..', '..', 'tests', 'spec_cases.json'), 'utf-8')
);

function pythonFields(spec: ReturnType<typeof parseHeader>): Record<string, unknown> {
  return {
    kind: spec.kind,
    name: spec.name,
    dynamic: spec.dynamic,
    reduce: spec.reduce,
    reduce_policy: spec.reducePolicy,
    upstream: spec.upstream,
    retries: spec.retries,
    retry_delay: spec.retryDelay,
    timeout: spec.timeout,
    max_concurrency: spec.maxConcurrency,
    connection: spec.connection,
    max_children: spec.maxChildren,
    on_overflow: spec.onOverflow,
    window: spec.window,
    executor: spec.executor,
    no_run: spec.noRun
  };
}

test('the shared vectors cover both outcomes', () => {
  assert.ok(CASES.filter(c => c.spec).length >= 20);
  assert.ok(CASES.filter(c => !c.spec).length >= 30);
});

for (const c of CASES) {
  test(`header ${JSON.stringify(c.header)}`, () => {
    if (c.spec) {
      assert.deepEqual(pythonFields(parseHeader(c.header)), c.spec);
      return;
    }
    assert.throws(
      () => parseHeader(c.header),
      (err: unknown) => {
        assert.ok(err instanceof HeaderError, `not a HeaderError: ${err}`);
        if (c.error !== undefined) {
          assert.equal(err.message, c.error);
        } else {
          assert.ok(err.message.startsWith(c.error_prefix!), err.message);
        }
        return true;
      }
    );
  });
}

test('shlexSplit reads quotes and escapes as shlex.split does', () => {
  assert.deepEqual(shlexSplit(`a 'b c' "d \\" e" f\\ g ''`), ['a', 'b c', 'd " e', 'f g', '']);
  assert.deepEqual(shlexSplit(`x"y"'z'`), ['xyz']);
  assert.deepEqual(shlexSplit(`"a\\b"`), ['a\\b']);
});

test('splitBlockCell finds block magics on the first line only', () => {
  assert.deepEqual(splitBlockCell('%%loader users\n[1, 2]'), ['%%loader users', '[1, 2]']);
  assert.deepEqual(splitBlockCell('  %%block sql q'), ['  %%block sql q', '']);
  assert.equal(splitBlockCell('%%sql\nselect 1'), null);
  assert.equal(splitBlockCell('x = 1\n%%loader users'), null);
  assert.equal(splitBlockCell('%%loaders users'), null);
  assert.equal(splitBlockCell(''), null);
});
