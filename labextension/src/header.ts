/**
 * The `%%block KIND NAME [options]` header parser, in the browser.
 *
 * A port of mage_nb/engine/spec.py (`parse_header`, `split_block_cell`): shlex-style words,
 * then argparse's rules for the options (exact option names, `--opt=value`, `nargs='?'` and
 * `nargs='+'`, last one wins), then the same checks in the same order. Both parsers run the
 * shared vectors in tests/spec_cases.json, so a badge never disagrees with the kernel.
 * Nothing here touches the DOM or JupyterLab: it is unit-tested under plain node.
 */

export const KINDS = ['loader', 'transformer', 'exporter', 'custom', 'sql'];
/** Cell magics and the kind they stand for (`%%block` takes the kind as its first word). */
export const MAGIC_KINDS: Record<string, string> = {
  loader: 'loader',
  transformer: 'transformer',
  exporter: 'exporter'
};
export const BLOCK_MAGICS = ['block', ...Object.keys(MAGIC_KINDS)];
export const BUILTIN_REDUCERS = ['list', 'concat', 'sum', 'count', 'merge'];
export const EXECUTORS = ['threads', 'processes', 'dask'];
const RESERVED_NAMES = new Set([
  'context',
  'loader',
  'transformer',
  'exporter',
  'custom',
  'data_loader',
  'data_exporter',
  'test'
]);
const PY_KEYWORDS = new Set(
  (
    'False None True and as assert async await break class continue def del elif else ' +
    'except finally for from global if import in is lambda nonlocal not or pass raise ' +
    'return try while with yield'
  ).split(' ')
);

/** What a header says (the fields of the Python `BlockSpec` that a header sets). */
export interface BlockSpec {
  kind: string;
  name: string;
  dynamic: boolean;
  reduce: string | null;
  reducePolicy: string;
  upstream: string[] | null;
  retries: number;
  retryDelay: number;
  timeout: number | null;
  maxConcurrency: number | null;
  connection: string | null;
  maxChildren: number | null;
  onOverflow: string;
  window: number | null;
  executor: string | null;
  noRun: boolean;
}

export class HeaderError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'HeaderError';
  }
}

/** Python's `repr` of a str (enough for messages: quotes and backslashes). */
export function pyRepr(text: string): string {
  const quote = text.includes("'") && !text.includes('"') ? '"' : "'";
  let out = '';
  for (const ch of text) {
    if (ch === '\\') {
      out += '\\\\';
    } else if (ch === quote) {
      out += '\\' + ch;
    } else if (ch === '\n') {
      out += '\\n';
    } else if (ch === '\t') {
      out += '\\t';
    } else if (ch === '\r') {
      out += '\\r';
    } else {
      out += ch;
    }
  }
  return quote + out + quote;
}

/** `str.isidentifier()` and not a keyword (Unicode letters, digits after the first). */
export function isIdentifier(text: string): boolean {
  return (
    /^[\p{L}\p{Nl}_][\p{L}\p{Nl}\p{Mn}\p{Mc}\p{Nd}\p{Pc}]*$/u.test(text) &&
    !PY_KEYWORDS.has(text)
  );
}

/** `shlex.split` (POSIX mode, no comments). Throws Error with shlex's message. */
export function shlexSplit(text: string): string[] {
  const words: string[] = [];
  let word: string | null = null;
  let i = 0;
  const whitespace = ' \t\r\n';
  while (i < text.length) {
    const ch = text[i];
    if (whitespace.includes(ch)) {
      if (word !== null) {
        words.push(word);
        word = null;
      }
      i++;
    } else if (ch === '\\') {
      if (i + 1 >= text.length) {
        throw new Error('No escaped character');
      }
      word = (word ?? '') + text[i + 1];
      i += 2;
    } else if (ch === "'") {
      const end = text.indexOf("'", i + 1);
      if (end < 0) {
        throw new Error('No closing quotation');
      }
      word = (word ?? '') + text.slice(i + 1, end);
      i = end + 1;
    } else if (ch === '"') {
      let j = i + 1;
      let part = '';
      for (;;) {
        if (j >= text.length) {
          throw new Error('No closing quotation');
        }
        const c = text[j];
        if (c === '"') {
          break;
        }
        if (c === '\\' && j + 1 < text.length && (text[j + 1] === '"' || text[j + 1] === '\\')) {
          part += text[j + 1];
          j += 2;
        } else {
          part += c;
          j++;
        }
      }
      word = (word ?? '') + part;
      i = j + 1;
    } else {
      word = (word ?? '') + ch;
      i++;
    }
  }
  if (word !== null) {
    words.push(word);
  }
  return words;
}

// -- numbers as Python's int() and float() read them ------------------------------------------
function pyInt(text: string): number | null {
  const t = text.trim();
  if (!/^[+-]?\d+(_\d+)*$/.test(t)) {
    return null;
  }
  return parseInt(t.replace(/_/g, ''), 10);
}

function pyFloat(text: string): number | null {
  const t = text.trim().replace(/(\d)_(?=\d)/g, '$1');
  if (/^[+-]?(inf|infinity)$/i.test(t)) {
    return t.startsWith('-') ? -Infinity : Infinity;
  }
  if (/^[+-]?nan$/i.test(t)) {
    return NaN;
  }
  if (!/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(t)) {
    return null;
  }
  return Number(t);
}

type Converter = { name: string; convert: (text: string) => number | null };

/** A number read by `parse` (pyInt or pyFloat), taken if > 0 (`positive`) or else if >= 0. */
function numberConverter(
  name: string,
  parse: (text: string) => number | null,
  positive: boolean
): Converter {
  return {
    name,
    convert: t => {
      const v = parse(t);
      return v !== null && (positive ? v > 0 : v >= 0) ? v : null;
    }
  };
}
const positiveInt = numberConverter('positive integer', pyInt, true);
const nonNegativeInt = numberConverter('non-negative integer', pyInt, false);
const nonNegativeFloat = numberConverter('non-negative number', pyFloat, false);
const positiveFloat = numberConverter('positive number', pyFloat, true);

interface OptionDef {
  dest: string;
  nargs: 0 | 1 | '?' | '+';
  type?: Converter;
  choices?: string[];
  const?: string;
}

const OPTIONS: Record<string, OptionDef> = {
  '--dynamic': { dest: 'dynamic', nargs: 0 },
  '--reduce': { dest: 'reduce', nargs: '?', const: 'list' },
  '--reduce-policy': { dest: 'reduce_policy', nargs: 1, choices: ['all', 'partial'] },
  '--upstream': { dest: 'upstream', nargs: '+' },
  '--retries': { dest: 'retries', nargs: 1, type: nonNegativeInt },
  '--retry-delay': { dest: 'retry_delay', nargs: 1, type: nonNegativeFloat },
  '--timeout': { dest: 'timeout', nargs: 1, type: positiveFloat },
  '--max-concurrency': { dest: 'max_concurrency', nargs: 1, type: positiveInt },
  '--connection': { dest: 'connection', nargs: 1 },
  '--max-children': { dest: 'max_children', nargs: 1, type: positiveInt },
  '--on-overflow': { dest: 'on_overflow', nargs: 1, choices: ['fail', 'truncate'] },
  '--window': { dest: 'window', nargs: 1, type: positiveInt },
  '--executor': { dest: 'executor', nargs: 1, choices: EXECUTORS },
  '--no-run': { dest: 'no_run', nargs: 0 }
};

/** argparse's 'O' (an option string) vs 'A' (an argument): '-5' and '-.5' are arguments. */
function looksLikeOption(arg: string): boolean {
  if (!arg.startsWith('-') || arg === '-') {
    return false;
  }
  return !/^-\d+$|^-\d*\.\d+$/.test(arg);
}

function convert(option: string, def: OptionDef, value: string): unknown {
  if (def.type) {
    const v = def.type.convert(value);
    if (v === null) {
      throw new HeaderError(
        `argument ${option}: invalid ${def.type.name} value: ${pyRepr(value)}`
      );
    }
    return v;
  }
  if (def.choices && !def.choices.includes(value)) {
    const choices = def.choices.map(c => pyRepr(c)).join(', ');
    throw new HeaderError(
      `argument ${option}: invalid choice: ${pyRepr(value)} (choose from ${choices})`
    );
  }
  return value;
}

/** argparse `parse_known_args` over the option words: the values set, and the extras. */
function parseOptions(words: string[]): { ns: Record<string, unknown>; extra: string[] } {
  const ns: Record<string, unknown> = {};
  const extra: string[] = [];
  let i = 0;
  while (i < words.length) {
    const arg = words[i];
    if (arg === '--') {
      extra.push(...words.slice(i + 1));
      break;
    }
    if (!looksLikeOption(arg)) {
      extra.push(arg);
      i++;
      continue;
    }
    const eq = arg.startsWith('--') ? arg.indexOf('=') : -1;
    const option = eq >= 0 ? arg.slice(0, eq) : arg;
    const explicit = eq >= 0 ? arg.slice(eq + 1) : null;
    const def = Object.prototype.hasOwnProperty.call(OPTIONS, option) ? OPTIONS[option] : null;
    i++;
    if (def === null) {
      extra.push(arg);
      continue;
    }
    // the 'A' words that follow the option
    let j = i;
    while (j < words.length && words[j] !== '--' && !looksLikeOption(words[j])) {
      j++;
    }
    const following = words.slice(i, j);
    if (def.nargs === 0) {
      if (explicit !== null) {
        throw new HeaderError(`argument ${option}: ignored explicit argument ${pyRepr(explicit)}`);
      }
      ns[def.dest] = true;
    } else if (def.nargs === 1 || def.nargs === '?') {
      // one value: `--opt=value`, else the next 'A' word, else `const` ('?') or an error (1)
      if (explicit !== null) {
        ns[def.dest] = convert(option, def, explicit);
      } else if (following.length >= 1) {
        ns[def.dest] = convert(option, def, following[0]);
        i++;
      } else if (def.nargs === '?') {
        ns[def.dest] = def.const;
      } else {
        throw new HeaderError(`argument ${option}: expected one argument`);
      }
    } else {
      if (explicit !== null) {
        ns[def.dest] = [convert(option, def, explicit)];
      } else if (following.length >= 1) {
        ns[def.dest] = following.map(v => convert(option, def, v));
        i = j;
      } else {
        throw new HeaderError(`argument ${option}: expected at least one argument`);
      }
    }
  }
  return { ns, extra };
}

function checkName(name: string, what: string): void {
  if (!isIdentifier(name)) {
    throw new HeaderError(`${what} ${pyRepr(name)} is not a valid Python identifier`);
  }
}

/**
 * Parse a magic line such as `%%block loader users --dynamic` (or `%%loader users`, or the
 * same text without `%%`). Throws HeaderError with the Python parser's message.
 */
export function parseHeader(line: string): BlockSpec {
  const text = line.trim();
  let words: string[];
  try {
    words = shlexSplit(text);
  } catch (exc) {
    throw new HeaderError(`cannot read the header ${pyRepr(text)}: ${(exc as Error).message}`);
  }
  if (words.length === 0) {
    throw new HeaderError("empty block header: expected '%%block KIND NAME [options]'");
  }
  const magic = words[0].startsWith('%%') ? words[0].slice(2) : words[0];
  let kind: string;
  let rest: string[];
  if (magic === 'block') {
    if (words.length < 2) {
      throw new HeaderError(
        `missing KIND: expected '%%block KIND NAME', KIND one of ${KINDS.join(', ')}`
      );
    }
    kind = words[1];
    rest = words.slice(2);
    if (!KINDS.includes(kind)) {
      throw new HeaderError(
        `unknown block kind ${pyRepr(kind)}: expected one of ${KINDS.join(', ')}`
      );
    }
  } else if (Object.prototype.hasOwnProperty.call(MAGIC_KINDS, magic)) {
    kind = MAGIC_KINDS[magic];
    rest = words.slice(1);
  } else {
    throw new HeaderError(
      `not a block header: ${pyRepr(words[0])} (expected %%block, %%loader, %%transformer or %%exporter)`
    );
  }
  if (rest.length === 0 || rest[0].startsWith('--')) {
    throw new HeaderError(
      `missing NAME: expected '%%${magic} ${magic !== 'block' ? '' : kind + ' '}NAME [options]'`
    );
  }
  const name = rest[0];
  checkName(name, 'block NAME');
  if (RESERVED_NAMES.has(name)) {
    throw new HeaderError(
      `block NAME ${pyRepr(name)} is reserved (it is bound in every block body)`
    );
  }
  return specFromOptions(kind, name, rest.slice(1));
}

function specFromOptions(kind: string, name: string, options: string[]): BlockSpec {
  const { ns, extra } = parseOptions(options);
  const block = `block ${pyRepr(name)}`;
  if (extra.length) {
    throw new HeaderError(`${block}: unexpected argument(s) ${pyRepr(extra.join(' '))}`);
  }
  const get = <T>(key: string, fallback: T): T =>
    key in ns ? (ns[key] as T) : fallback;
  const reduce = get<string | null>('reduce', null);
  if (reduce !== null && !isIdentifierLike(reduce)) {
    throw new HeaderError(
      `${block}: reduce strategy ${pyRepr(reduce)} is neither one of ` +
        `${BUILTIN_REDUCERS.join(', ')} nor the name of a callable`
    );
  }
  const reducePolicy = get<string | null>('reduce_policy', null);
  if (reducePolicy !== null && reduce === null) {
    throw new HeaderError(`${block}: --reduce-policy needs --reduce`);
  }
  const connection = get<string | null>('connection', null);
  if (connection !== null && kind !== 'sql') {
    throw new HeaderError(
      `${block}: --connection is only for sql blocks (this one is a ${kind})`
    );
  }
  const dynamic = get<boolean>('dynamic', false);
  const maxChildren = get<number | null>('max_children', null);
  const onOverflow = get<string | null>('on_overflow', null);
  for (const [flag, value] of [
    ['--max-children', maxChildren],
    ['--on-overflow', onOverflow]
  ] as const) {
    if (value !== null && !dynamic) {
      throw new HeaderError(`${block}: ${flag} is only for --dynamic blocks`);
    }
  }
  const window = get<number | null>('window', null);
  if (window !== null && !dynamic) {
    throw new HeaderError(`${block}: --window is only for --dynamic blocks`);
  }
  let upstream = get<string[] | null>('upstream', null);
  if (upstream !== null) {
    for (const up of upstream) {
      checkName(up, `${block}: --upstream`);
    }
    const repeated = [...new Set(upstream.filter(u => upstream!.indexOf(u) !== upstream!.lastIndexOf(u)))].sort();
    if (repeated.length) {
      throw new HeaderError(
        `${block}: --upstream names ${repeated.map(r => pyRepr(r)).join(', ')} twice`
      );
    }
    upstream = [...upstream];
  }
  return {
    kind,
    name,
    dynamic,
    reduce,
    reducePolicy: reducePolicy ?? 'all',
    upstream,
    retries: get<number>('retries', 0),
    retryDelay: get<number>('retry_delay', 0),
    timeout: get<number | null>('timeout', null),
    maxConcurrency: get<number | null>('max_concurrency', null),
    connection,
    maxChildren,
    onOverflow: onOverflow ?? 'fail',
    window,
    executor: get<string | null>('executor', null),
    noRun: get<boolean>('no_run', false)
  };
}

/** `str.isidentifier()` alone (keywords pass: `--reduce sum` and `--reduce list` do). */
function isIdentifierLike(text: string): boolean {
  return /^[\p{L}\p{Nl}_][\p{L}\p{Nl}\p{Mn}\p{Mc}\p{Nd}\p{Pc}]*$/u.test(text);
}

/** Split a cell into [header line, body] if its first line is a block magic, else null. */
export function splitBlockCell(source: string): [string, string] | null {
  const nl = source.indexOf('\n');
  const first = nl < 0 ? source : source.slice(0, nl);
  const body = nl < 0 ? '' : source.slice(nl + 1);
  const stripped = first.trim();
  const word = stripped ? stripped.split(/\s+/)[0] : '';
  if (word.startsWith('%%') && BLOCK_MAGICS.includes(word.slice(2))) {
    return [first, body];
  }
  return null;
}
