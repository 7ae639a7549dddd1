import { test } from 'node:test';
import assert from 'node:assert/strict';

import { describeCell, describeCells, pythonNames, sqlNames } from '../src/badge';
import { blockStatus, countsLabel, toDot } from '../src/dag';

test('a plain cell has no badge', () => {
  assert.equal(describeCell('import pandas as pd'), null);
  assert.equal(describeCell('%%time\nx = 1'), null);
});

test('kind, name and flags of a dynamic loader', () => {
  const badge = describeCell('%%block loader users --dynamic\n[1, 2]');
  assert.ok(badge && badge.ok);
  assert.equal(badge.kind, 'loader');
  assert.equal(badge.name, 'users');
  assert.deepEqual(badge.flags.map(f => f.label), ['dynamic', '↑0']);
  assert.equal(badge.text, 'loader users dynamic ↑0');
});

test('reduce strategies and policies', () => {
  const labels = (h: string) => {
    const b = describeCell(h);
    assert.ok(b && b.ok);
    return b.flags.map(f => f.label);
  };
  assert.deepEqual(labels('%%transformer s --reduce'), ['reduce', '↑0']);
  assert.deepEqual(labels('%%transformer s --reduce concat'), ['reduce:concat', '↑0']);
  assert.deepEqual(labels('%%transformer s --reduce sum --reduce-policy partial'), ['reduce:sum·partial', '↑0']);
  assert.deepEqual(labels('%%block sql q --connection wh'), ['SQL', '↑0']);
  assert.deepEqual(labels('%%loader l --no-run --executor dask'), ['↑0', 'no-run', 'dask']);
});

test('explicit upstreams are counted as given', () => {
  const b = describeCell('%%transformer j --upstream a b\nx', ['a', 'b', 'c']);
  assert.ok(b && b.ok);
  assert.deepEqual(b.upstream, ['a', 'b']);
  assert.equal(b.inferred, false);
  assert.equal(b.flags.at(-1)!.label, '↑2');
});

test('upstreams are inferred from the names a body reads', () => {
  const cells = [
    '%%loader users --dynamic\n[1]',
    '%%transformer anon\n{**users, "x": "users in a string"}  # users again',
    '%%transformer score --reduce\nanon["n"] * 2',
    '%%exporter report\nf"{score} {users!r}"\n# report nothing from anon',
    'plain = 1'
  ];
  const badges = describeCells(cells);
  const ups = badges.map(b => (b && b.ok ? b.upstream : null));
  assert.deepEqual(ups, [[], ['users'], ['anon'], ['users', 'score'], null]);
});

test('an attribute or a string is not a read of a block', () => {
  assert.ok(!pythonNames('obj.users + "users"').has('users'));
  assert.ok(pythonNames('users.x').has('users'));
  assert.ok(pythonNames("'''\nusers\n''' + users").has('users'));
});

test('SQL bodies read tables and template variables', () => {
  const names = sqlNames('select * from users u join orders o on 1=1 -- from comments\nwhere id = {{ item.id }}');
  assert.deepEqual([...names].sort(), ['item', 'orders', 'users']);
  const b = describeCell('%%block sql top\nselect * from users', ['users']);
  assert.ok(b && b.ok);
  assert.deepEqual(b.upstream, ['users']);
});

test('a malformed header gives a warning badge with the parser message', () => {
  const b = describeCell('%%loader users --retries x');
  assert.ok(b && !b.ok);
  assert.equal(b.message, "argument --retries: invalid non-negative integer value: 'x'");
  assert.match(b.text, /^⚠ /);
  const unknown = describeCell('%%block widget w');
  assert.ok(unknown && !unknown.ok);
  assert.match(unknown.message, /unknown block kind 'widget'/);
});

test('block status from counts', () => {
  assert.equal(blockStatus(undefined), 'not_run');
  assert.equal(blockStatus({ completed: 3 }), 'completed');
  assert.equal(blockStatus({ completed: 2, failed: 1 }), 'failed');
  assert.equal(blockStatus({ completed: 2, upstream_failed: 1 }), 'upstream_failed');
  assert.equal(blockStatus({}), 'empty');
  assert.equal(countsLabel({ completed: 2, failed: 1 }), '2 ✓ · 1 ✗');
  assert.equal(countsLabel(undefined), 'not run');
});

test('DOT: nodes with status classes, edges only between known blocks', () => {
  const dot = toDot(
    [
      { name: 'users', kind: 'loader', dynamic: true, reduce: null, upstream: [] },
      { name: 'anon', kind: 'transformer', dynamic: false, reduce: null, upstream: ['users', 'ghost'] }
    ],
    { users: { completed: 1 }, anon: { completed: 2, failed: 1 } }
  );
  assert.match(dot, /"users" \[id="mnb-node-users", class="mnb-node mnb-status-completed mnb-dynamic"/);
  assert.match(dot, /class="mnb-node mnb-status-failed"/);
  assert.match(dot, /label="anon\\ntransformer\\n2 ✓ · 1 ✗"/);
  assert.match(dot, /"users" -> "anon";/);
  assert.doesNotMatch(dot, /ghost/);
});
