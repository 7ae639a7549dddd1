"""SQL blocks: dependencies from the SQL itself, Jinja templates whose values are bind
parameters, and where the query runs (DuckDB in-process by default, or any SQLAlchemy URL).

Invariants:

* a value a template inserts is never spliced into the SQL text: ``{{ x }}`` becomes a
  placeholder of the driver and ``x`` a bind parameter; only ``{{ name | ident }}`` puts text
  in the SQL, quoted as an identifier;
* ``{{ }}`` inside a SQL string literal is left as it is (write ``'%' || {{ x }} || '%'``);
* one DuckDB cursor per instance (cursors are cheap; the default database is the one
  ``duckdb.sql()`` uses, so tables plain cells create are visible); one SQLAlchemy engine
  (a pool) per database per run, disposed when the run ends;
* a database error fails the instance with the block, the instance, the rendered SQL and the
  database's message.
"""

from __future__ import annotations

import os
import re
import threading
from collections import ChainMap
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jinja2
import jinja2.meta

from .errors import PipelineError

#: Dialects sqlglot reads a connection's SQL in, by URL scheme.
_DIALECTS = {
    "postgresql": "postgres",
    "postgres": "postgres",
    "sqlite": "sqlite",
    "duckdb": "duckdb",
    "mysql": "mysql",
}
_TEMPLATE_TAG = re.compile(r"{{.*?}}|{%.*?%}", re.S)
_ENV_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class SqlError(Exception):
    """A query that the database refused (or could not be sent)."""


class Identifier(str):
    """Text the ``ident`` filter marked to be put in the SQL as a quoted identifier."""


def _ident(value: Any) -> Identifier:
    text = str(value)
    if not text:
        raise ValueError("ident: an identifier cannot be empty")
    return Identifier(".".join('"' + part.replace('"', '""') + '"' for part in text.split(".")))


# -- reading the SQL -----------------------------------------------------------------------------
def _spans(sql: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(string literals, comments): where ``'...'`` literals (``''`` escapes a quote) and
    ``--`` / ``/* */`` comments are. Double-quoted identifiers are skipped over so that an
    apostrophe inside one starts nothing."""
    literals: list[tuple[int, int]] = []
    comments: list[tuple[int, int]] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch == "-" and sql.startswith("--", i):
            end = sql.find("\n", i)
            end = n if end < 0 else end
            comments.append((i, end))
            i = end
        elif ch == "/" and sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            end = n if end < 0 else end + 2
            comments.append((i, end))
            i = end
        elif ch == '"':
            end = sql.find('"', i + 1)
            i = n if end < 0 else end + 1
        elif ch == "'":
            start = i
            i += 1
            while i < n:
                if sql[i] == "'":
                    if i + 1 < n and sql[i + 1] == "'":
                        i += 2
                        continue
                    break
                i += 1
            literals.append((start, i + 1))
            i += 1
        else:
            i += 1
    return literals, comments


def protect_literals(sql: str) -> str:
    """Wrap string literals and comments that contain template syntax in ``{% raw %}``."""
    literals, comments = _spans(sql)
    out: list[str] = []
    last = 0
    for start, end in sorted(literals + comments):
        text = sql[start:end]
        if "{{" in text or "{%" in text:
            out.append(sql[last:start])
            out.append("{% raw %}" + text + "{% endraw %}")
            last = end
    out.append(sql[last:])
    return "".join(out)


def dialect_of(connection: str | None) -> str:
    if not connection or ("://" not in connection and ":" not in connection):
        return "duckdb"
    scheme = connection.split(":", 1)[0].split("+", 1)[0].lower()
    return _DIALECTS.get(scheme, "duckdb")


@dataclass(frozen=True)
class SqlInfo:
    """What a SQL body refers to."""

    tables: tuple[str, ...]  # table names the query reads (CTE names excluded), in text order
    variables: tuple[str, ...]  # template variables, in text order
    parsed: bool  # False when sqlglot could not read the SQL (the database will judge it)
    positions: Mapping[str, int] = field(default_factory=dict)  # first appearance of each name


def analyse_sql(source: str, *, dialect: str = "duckdb") -> SqlInfo:
    import sqlglot
    from sqlglot import exp

    env = _environment()
    try:
        template_ast = env.parse(protect_literals(source))
    except jinja2.TemplateSyntaxError as exc:
        raise PipelineError(f"template error on line {exc.lineno}: {exc.message}") from None
    names = jinja2.meta.find_undeclared_variables(template_ast)
    tags = [(m.start(), m.group()) for m in _TEMPLATE_TAG.finditer(source)]

    def first_in_tags(name: str) -> int:
        pattern = re.compile(rf"\b{re.escape(name)}\b")
        return min((pos for pos, tag in tags if pattern.search(tag)), default=len(source))

    variables = tuple(sorted(names, key=first_in_tags))
    # Values become a placeholder value; control tags vanish, so both branches of an
    # {% if %} are read (a table named in either is a dependency).
    plain = _TEMPLATE_TAG.sub(
        lambda m: " __mage_nb_value__ " if m.group().startswith("{{") else " ", source
    )
    try:
        statements = sqlglot.parse(plain, read=dialect)
    except Exception:  # sqlglot raises several error kinds; the database will judge
        return SqlInfo((), variables, False, {v: first_in_tags(v) for v in variables})
    ctes: set[str] = set()
    tables: set[str] = set()
    for statement in statements:
        if statement is None:
            continue
        for cte in statement.find_all(exp.CTE):
            ctes.add(cte.alias_or_name)
        for table in statement.find_all(exp.Table):
            if not table.args.get("db") and table.name:
                tables.add(table.name)
    tables -= ctes
    tables.discard("__mage_nb_value__")
    masked = _mask_literals(source)

    def first_in_text(name: str) -> int:
        match = re.search(rf"\b{re.escape(name)}\b", masked, re.I)
        return match.start() if match else len(masked)

    positions = {t: first_in_text(t) for t in tables}
    for v in variables:
        positions[v] = min(positions.get(v, len(source)), first_in_tags(v))
    return SqlInfo(tuple(sorted(tables, key=positions.__getitem__)), variables, True, positions)


def _mask_literals(sql: str) -> str:
    chars = list(sql)
    literals, comments = _spans(sql)
    for start, end in literals + comments:
        chars[start:end] = " " * (end - start)
    return "".join(chars)


def sql_references(info: SqlInfo, block_names: Iterable[str]) -> list[str]:
    """Blocks a SQL body refers to (tables, then template variables), in text order."""
    known = set(block_names)
    names = {n for n in (*info.tables, *info.variables) if n in known}
    return sorted(names, key=lambda n: info.positions.get(n, 1 << 30))


# -- templates -----------------------------------------------------------------------------------
_local = threading.local()


def _finalize(value: Any) -> str:
    """Every ``{{ }}`` goes through here: an identifier is quoted into the text, anything
    else becomes a placeholder and a bind parameter."""
    if isinstance(value, Identifier):
        return str(value)
    if isinstance(value, jinja2.Undefined):
        str(value)  # a StrictUndefined raises, naming what was undefined
    binds: list[Any] = _local.binds
    binds.append(value)
    return _local.placeholder(len(binds) - 1)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        finalize=_finalize,
        keep_trailing_newline=True,
    )
    env.filters["ident"] = _ident
    return env


def render(
    template: jinja2.Template, variables: Mapping[str, Any], placeholder: Callable[[int], str]
) -> tuple[str, list[Any]]:
    """Render a SQL template: (SQL text with placeholders, bind values in order)."""
    _local.binds = []
    _local.placeholder = placeholder
    try:
        context = template.new_context(variables, shared=True)  # type: ignore[arg-type]
        sql = template.environment.concat(template.root_render_func(context))
        return str(sql), _local.binds
    finally:
        _local.binds = None


# -- connections -----------------------------------------------------------------------------------
def expand_env(value: str, where: str) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise PipelineError(f"{where}: environment variable {name} is not set")
        return os.environ[name]

    return _ENV_VAR.sub(replace, value)


@dataclass
class SqlResources:
    """Database handles shared by a run's SQL instances; closed when the run ends."""

    connections: Mapping[str, str] = field(default_factory=dict)  # configured names -> URLs
    _engines: dict[str, Any] = field(default_factory=dict)
    _duckdb_files: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def resolve(self, connection: str | None, block: str) -> str | None:
        """A URL for a block's ``--connection`` (a URL or a configured name); None = DuckDB."""
        if connection is None:
            return None
        if connection in self.connections:
            url = expand_env(self.connections[connection], f"connection {connection!r}")
        elif "://" in connection or connection.startswith("duckdb:"):
            url = expand_env(connection, f"block {block!r}")
        else:
            known = ", ".join(sorted(self.connections)) or "none are configured"
            raise PipelineError(
                f"block {block!r}: unknown connection {connection!r} (not a URL, and not a "
                f"configured connection name: {known}; configure names under "
                "[tool.mage_nb.connections] in pyproject.toml or [connections] in mage_nb.toml)"
            )
        if not url.startswith("duckdb:"):
            from sqlalchemy.engine import make_url
            from sqlalchemy.exc import ArgumentError

            try:
                make_url(url)
            except ArgumentError as exc:
                raise PipelineError(f"block {block!r}: bad connection URL {url!r}: {exc}") from None
        return url

    def duckdb_cursor(self, url: str | None) -> Any:
        import duckdb

        if url is None:
            return duckdb.default_connection().cursor()
        path = url.split(":", 1)[1].lstrip("/") or ":memory:"
        if url.startswith("duckdb:///"):
            path = url[len("duckdb:///") :] or ":memory:"
        with self._lock:
            con = self._duckdb_files.get(path)
            if con is None:
                con = self._duckdb_files[path] = duckdb.connect(path)
        return con.cursor()

    def engine(self, url: str) -> Any:
        with self._lock:
            engine = self._engines.get(url)
            if engine is None:
                from sqlalchemy import create_engine

                engine = self._engines[url] = create_engine(url, pool_pre_ping=True)
            return engine

    def check(self, url: str | None, block: str) -> None:
        """Fail before anything runs if the driver for a URL is missing."""
        if url is None or url.startswith("duckdb:"):
            return
        from sqlalchemy.exc import NoSuchModuleError

        try:
            self.engine(url)
        except NoSuchModuleError as exc:
            raise PipelineError(
                f"block {block!r}: no SQLAlchemy driver for {url.split(':', 1)[0]!r}: {exc}"
            ) from None
        except ImportError as exc:
            raise PipelineError(
                f"block {block!r}: the database driver is not installed: {exc}"
            ) from None

    def close(self) -> None:
        with self._lock:
            for engine in self._engines.values():
                engine.dispose()
            self._engines.clear()
            for con in self._duckdb_files.values():
                con.close()
            self._duckdb_files.clear()


# -- the body ------------------------------------------------------------------------------------
def _as_table(name: str, value: Any) -> Any:
    """An upstream output in a form DuckDB can scan, or a clear error."""
    module = type(value).__module__.split(".")[0]
    if module in ("pandas", "pyarrow", "polars"):
        return value
    import pandas as pd

    if isinstance(value, Mapping):
        return pd.DataFrame([dict(value)])
    if isinstance(value, (list, tuple)) and all(isinstance(row, Mapping) for row in value):
        return pd.DataFrame(list(value))
    raise SqlError(
        f"block {name!r} output is a {type(value).__name__}, which cannot be queried as a table "
        f"(tables are DataFrames, Arrow tables, lists of dicts or a dict); insert it as a value "
        f"with {{{{ {name} }}}} instead"
    )


class SqlBody:
    """A SQL block compiled once: its template, the upstreams it reads as tables, its database."""

    function_style = False

    def __init__(
        self,
        name: str,
        source: str,
        upstream: tuple[str, ...],
        namespace: Mapping[str, Any],
        resources: SqlResources,
        connection: str | None,
        info: SqlInfo,
    ):
        self.name = name
        self.upstream = upstream
        self.namespace = namespace
        self.resources = resources
        self.url = resources.resolve(connection, name)
        resources.check(self.url, name)
        self.native = self.url is None or self.url.startswith("duckdb:")
        self.tables = tuple(u for u in upstream if u in info.tables)
        if self.tables and not self.native:
            raise PipelineError(
                f"block {name!r} reads {', '.join(map(repr, self.tables))} as tables, but upstream "
                f"outputs can only be queried as tables on DuckDB; insert values with {{{{ name }}}} "
                "or load the data into the database first"
            )
        try:
            self.template = _environment().from_string(protect_literals(source))
        except jinja2.TemplateSyntaxError as exc:
            raise PipelineError(
                f"block {name!r}: template error on line {exc.lineno + 1}: {exc.message}"
            ) from None

    def run(
        self, context: Any, inputs: tuple[Any, ...], kwargs: Callable[[], dict[str, Any]]
    ) -> Any:
        local = dict(zip(self.upstream, inputs))
        local["context"] = context
        variables = ChainMap(local, self.namespace)  # type: ignore[arg-type]
        try:
            if self.native:
                sql, binds = render(self.template, variables, _qmark)
                return self._run_duckdb(sql, binds, local, context)
            sql, binds = render(self.template, variables, _sentinel)
            return self._run_sqlalchemy(sql, binds, context)
        except jinja2.TemplateError as exc:
            raise SqlError(
                f"SQL block {self.name!r}, instance {context.uuid!r}: template: {exc}"
            ) from None

    def _fail(self, context: Any, sql: str, exc: BaseException) -> SqlError:
        # SQLAlchemy wraps the driver's error (and repeats the SQL); show the database's own.
        exc = getattr(exc, "orig", None) or exc
        message = str(exc).strip() or type(exc).__name__
        return SqlError(
            f"SQL block {self.name!r}, instance {context.uuid!r}: {type(exc).__name__}: {message}\n"
            f"SQL:\n{sql.strip()}"
        )

    def _run_duckdb(
        self, sql: str, binds: list[Any], local: Mapping[str, Any], context: Any
    ) -> Any:
        cursor = self.resources.duckdb_cursor(self.url)
        try:
            for name in self.tables:
                cursor.register(name, _as_table(name, local[name]))
            try:
                result = cursor.execute(sql, binds) if binds else cursor.execute(sql)
                return result.df()
            except Exception as exc:
                raise self._fail(context, sql, exc) from None
        finally:
            cursor.close()

    def _run_sqlalchemy(self, sql: str, binds: list[Any], context: Any) -> Any:
        import pandas as pd

        engine = self.resources.engine(self.url)  # type: ignore[arg-type]
        statement, params = driver_sql(sql, binds, engine.dialect.paramstyle)
        try:
            with engine.connect() as conn:
                if params:
                    result = conn.exec_driver_sql(statement, params)
                else:
                    result = conn.exec_driver_sql(statement)
                if not result.returns_rows:
                    conn.commit()
                    return pd.DataFrame()
                frame = pd.DataFrame(result.fetchall(), columns=list(result.keys()))
                conn.commit()
                return frame
        except Exception as exc:
            raise self._fail(context, statement, exc) from None


_SENTINEL = re.compile("\x00(\\d+)\x00")


def driver_sql(sql: str, binds: list[Any], paramstyle: str) -> tuple[str, Any]:
    """Turn placeholder sentinels into the driver's own parameter style.

    The SQL goes to the driver as it is (SQLAlchemy's ``text()`` would read ``:word`` inside
    string literals as parameters); ``%`` is doubled for the format styles when parameters
    are sent, as those drivers expect.
    """
    if not binds:
        return _SENTINEL.sub("", sql), None
    if paramstyle in ("format", "pyformat"):
        sql = sql.replace("%", "%%")
    if paramstyle == "qmark":
        return _SENTINEL.sub("?", sql), tuple(binds)
    if paramstyle == "numeric":
        return _SENTINEL.sub(lambda m: f":{int(m.group(1)) + 1}", sql), tuple(binds)
    if paramstyle == "format":
        return _SENTINEL.sub("%s", sql), tuple(binds)
    names = {f"mage_nb_{i}": value for i, value in enumerate(binds)}
    if paramstyle == "pyformat":
        return _SENTINEL.sub(lambda m: f"%(mage_nb_{m.group(1)})s", sql), names
    return _SENTINEL.sub(lambda m: f":mage_nb_{m.group(1)}", sql), names


def _qmark(index: int) -> str:
    return "?"


def _sentinel(index: int) -> str:
    return f"\x00{index}\x00"
