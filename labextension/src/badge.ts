/**
 * What a block cell's badge says, computed from the cell's text alone (nothing runs).
 *
 * `describeCell(source, blockNames)` gives null for a cell that is not a block, a warning
 * badge (with the parser's message) for a malformed header, else the kind, NAME and flags:
 * dynamic, reduce strategy, SQL, and the upstream count (explicit `--upstream`, or inferred
 * from the body: the other blocks' NAMEs it mentions, outside comments and plain strings).
 */
import { BlockSpec, HeaderError, parseHeader, splitBlockCell } from './header';

export interface BadgeFlag {
  /** short text shown in the badge */
  label: string;
  /** what it means (tooltip and accessible name) */
  title: string;
  /** css modifier: dynamic, reduce, sql, upstream, other */
  kind: string;
}

export type Badge =
  | { ok: true; kind: string; name: string; spec: BlockSpec; flags: BadgeFlag[]; upstream: string[]; inferred: boolean; text: string }
  | { ok: false; message: string; text: string };

/** Python-ish identifiers of a body, with comments and non-f strings taken out. */
export function pythonNames(body: string): Set<string> {
  const names = new Set<string>();
  // strings (triple first), keeping f-strings' text (their {expressions} read names)
  const stringRe = /([rRbBuUfF]{0,2})("""[\s\S]*?"""|'''[\s\S]*?'''|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*')|#[^\n]*/g;
  const stripped = body.replace(stringRe, (match, prefix: string | undefined) => {
    if (match.startsWith('#')) {
      return ' ';
    }
    if (prefix && /f/i.test(prefix)) {
      // keep only the {...} parts of an f-string
      const parts = match.match(/\{[^{}]*\}/g);
      return ' ' + (parts ? parts.join(' ') : '') + ' ';
    }
    return ' ';
  });
  for (const m of stripped.matchAll(/(?<![.\w])([\p{L}_][\p{L}\p{N}_]*)/gu)) {
    names.add(m[1]);
  }
  return names;
}

/** Names a SQL body reads: table references and `{{ name }}` template variables. */
export function sqlNames(body: string): Set<string> {
  const names = new Set<string>();
  const text = body.replace(/--[^\n]*/g, ' ').replace(/\/\*[\s\S]*?\*\//g, ' ');
  for (const m of text.matchAll(/\b(?:from|join)\s+([A-Za-z_][\w]*)/gi)) {
    names.add(m[1]);
  }
  for (const m of text.matchAll(/\{\{\s*([A-Za-z_]\w*)/g)) {
    names.add(m[1]);
  }
  return names;
}

/** The upstream blocks a body reads, in order of the given block names. */
export function inferUpstream(spec: BlockSpec, body: string, blockNames: string[]): string[] {
  const read = spec.kind === 'sql' ? sqlNames(body) : pythonNames(body);
  return blockNames.filter(n => n !== spec.name && read.has(n));
}

export function flagsOf(spec: BlockSpec, upstream: string[], inferred: boolean): BadgeFlag[] {
  const flags: BadgeFlag[] = [];
  if (spec.kind === 'sql') {
    flags.push({
      label: 'SQL',
      title: spec.connection ? `SQL on connection ${spec.connection}` : 'SQL block',
      kind: 'sql'
    });
  }
  if (spec.dynamic) {
    flags.push({ label: 'dynamic', title: 'fans its output out (--dynamic)', kind: 'dynamic' });
  }
  if (spec.reduce !== null) {
    const partial = spec.reducePolicy === 'partial' ? ', partial' : '';
    flags.push({
      label: spec.reduce === 'list' ? `reduce${partial ? '·partial' : ''}` : `reduce:${spec.reduce}${partial ? '·partial' : ''}`,
      title: `closes the fan-out (--reduce ${spec.reduce}${partial})`,
      kind: 'reduce'
    });
  }
  const n = upstream.length;
  flags.push({
    label: `↑${n}`,
    title:
      n === 0
        ? 'no upstream block'
        : `${n} upstream block${n === 1 ? '' : 's'}${inferred ? ' (read in the body)' : ' (--upstream)'}: ${upstream.join(', ')}`,
    kind: 'upstream'
  });
  if (spec.noRun) {
    flags.push({ label: 'no-run', title: 'registered without running (--no-run)', kind: 'other' });
  }
  if (spec.executor) {
    flags.push({ label: spec.executor, title: `runs on ${spec.executor} (--executor)`, kind: 'other' });
  }
  return flags;
}

/** The badge of one cell, or null if the cell is not a block cell. */
export function describeCell(source: string, blockNames: string[] = []): Badge | null {
  const parts = splitBlockCell(source);
  if (parts === null) {
    return null;
  }
  const [header, body] = parts;
  let spec: BlockSpec;
  try {
    spec = parseHeader(header);
  } catch (exc) {
    if (exc instanceof HeaderError) {
      return { ok: false, message: exc.message, text: `⚠ ${exc.message}` };
    }
    throw exc;
  }
  const inferred = spec.upstream === null;
  const upstream = inferred ? inferUpstream(spec, body, blockNames) : spec.upstream!;
  const flags = flagsOf(spec, upstream, inferred);
  const text = [spec.kind, spec.name, ...flags.map(f => f.label)].join(' ');
  return { ok: true, kind: spec.kind, name: spec.name, spec, flags, upstream, inferred, text };
}

/** Every block cell of a notebook (sources in order): the NAMEs first, then each badge. */
export function describeCells(sources: string[]): (Badge | null)[] {
  const names: string[] = [];
  for (const source of sources) {
    const parts = splitBlockCell(source);
    if (parts) {
      try {
        names.push(parseHeader(parts[0]).name);
      } catch {
        // a malformed header names no block
      }
    }
  }
  return sources.map(source => describeCell(source, names));
}
