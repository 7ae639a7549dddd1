/**
 * The Pipeline panel's graph: blocks and edges (from the cells' headers, or from the kernel
 * once it has seen the blocks) and each block's last-run counts, as Graphviz DOT.
 *
 * Colours are not in the DOT: each node gets the class `mnb-status-STATUS` and the panel's
 * CSS fills it from JupyterLab's theme variables, so light and dark themes both read well.
 */

export const STATUSES = ['pending', 'running', 'completed', 'failed', 'upstream_failed', 'cancelled'];

export interface GraphBlock {
  name: string;
  kind: string;
  dynamic: boolean;
  reduce: string | null;
  upstream: string[];
  cellId?: string | null;
}

/** Instances per status of one block's last run. */
export type Counts = Record<string, number>;

/** A block's status from its instances' (as the run tree derives it). */
export function blockStatus(counts: Counts | undefined): string {
  if (!counts) {
    return 'not_run';
  }
  const n = (s: string) => counts[s] ?? 0;
  const total = Object.values(counts).reduce((a, b) => a + b, 0);
  if (n('running') || n('pending')) {
    return 'running';
  }
  if (n('failed')) {
    return 'failed';
  }
  if (n('upstream_failed')) {
    return 'upstream_failed';
  }
  if (n('cancelled')) {
    return 'cancelled';
  }
  return total === 0 ? 'empty' : 'completed';
}

/** "3 ✓ · 1 ✗" style summary of counts. */
export function countsLabel(counts: Counts | undefined): string {
  if (!counts) {
    return 'not run';
  }
  const marks: Record<string, string> = {
    completed: '✓',
    failed: '✗',
    upstream_failed: '⇡✗',
    cancelled: '⊘',
    running: '…',
    pending: '…'
  };
  const parts = STATUSES.filter(s => counts[s]).map(s => `${counts[s]} ${marks[s]}`);
  return parts.length ? parts.join(' · ') : '0 instances';
}

function quote(text: string): string {
  return '"' + text.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n') + '"';
}

/** DOT for the blocks (in notebook order), with the counts of their last run. */
export function toDot(blocks: GraphBlock[], counts: Record<string, Counts> = {}, stale: string[] = []): string {
  const lines = [
    'digraph pipeline {',
    '  graph [rankdir=TB, bgcolor="transparent", nodesep=0.25, ranksep=0.35, fontname="Helvetica"];',
    '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=11, margin="0.12,0.05"];',
    '  edge [arrowsize=0.6];'
  ];
  const known = new Set(blocks.map(b => b.name));
  for (const b of blocks) {
    const status = blockStatus(counts[b.name]);
    const marks = [b.kind, b.dynamic ? 'dynamic' : '', b.reduce !== null ? 'reduce' : '']
      .filter(Boolean)
      .join(' · ');
    const label = `${b.name}\n${marks}\n${countsLabel(counts[b.name])}${stale.includes(b.name) && counts[b.name] ? ' (stale)' : ''}`;
    const cls = `mnb-node mnb-status-${status}${b.dynamic ? ' mnb-dynamic' : ''}`;
    lines.push(
      `  ${quote(b.name)} [id=${quote('mnb-node-' + b.name)}, class=${quote(cls)}, label=${quote(label)}, tooltip=${quote(b.name + ': ' + status.replace('_', ' '))}${b.dynamic ? ', peripheries=2' : ''}];`
    );
  }
  for (const b of blocks) {
    for (const up of b.upstream) {
      if (known.has(up)) {
        lines.push(`  ${quote(up)} -> ${quote(b.name)};`);
      }
    }
  }
  lines.push('}');
  return lines.join('\n');
}
