"""Reading an exported Python folder back as a ``Notebook`` (what ``mage-nb run OUT_DIR`` runs).

The folder gives the same ``Notebook`` a notebook file gives: block specs parsed from each
entry's ``header`` by the notebook's own parser with the block file as body, and the prelude
from ``prelude.py``. So a folder runs exactly as its notebook ran: same blocks, options,
edges, uuids and outputs.

Everything wrong with the folder is a ``PipelineError`` naming ``pipeline.toml`` and the
block (nothing runs): a missing file, a header that does not parse, a key that is unknown or
disagrees with the header or the body (see ``layout``), a newer format.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from ..engine.dag import Pipeline
from ..engine.errors import HeaderError, PipelineError
from ..engine.spec import BlockSpec, parse_header
from ..notebook import Notebook, PreludeCell
from .layout import (
    BLOCK_KEYS,
    FORMAT,
    OPTION_FLAGS,
    PIPELINE_FILE,
    TOP_KEYS,
    comment_prefix,
    options_of,
)
from .toml import format_value


def is_pipeline_path(path: Path) -> bool:
    """A folder (an exported one, or not: the reader says what is missing) or its pipeline.toml."""
    return path.is_dir() or path.name == PIPELINE_FILE


def _body(text: str, file: str) -> str:
    """A block file's body: its first line stands for the header line when it is a comment.

    Dropping a comment never changes what a body does; it keeps line numbers (the engine
    counts the header as line 1) equal to the file's own.
    """
    first, newline, rest = text.partition("\n")
    if newline and first.lstrip().startswith(comment_prefix(file)):
        return rest
    return text


def _same(value: Any, expected: Any) -> bool:
    if isinstance(expected, bool) or isinstance(value, bool):
        return value is expected
    if isinstance(expected, (int, float)) and isinstance(value, (int, float)):
        return bool(value == expected)
    return bool(type(value) is type(expected) and value == expected)


class _Reader:
    def __init__(self, path: Path):
        self.folder = path.parent if path.name == PIPELINE_FILE and not path.is_dir() else path
        self.file = self.folder / PIPELINE_FILE

    def error(self, message: str) -> PipelineError:
        return PipelineError(f"{self.file}: {message}")

    def read(self) -> dict[str, Any]:
        if not self.file.is_file():
            raise PipelineError(
                f"{self.folder} has no {PIPELINE_FILE}: it is not an exported pipeline folder "
                f"(make one with `mage-nb export NOTEBOOK --to python {self.folder}`)"
            )
        try:
            with self.file.open("rb") as fh:
                data = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise self.error(f"not valid TOML: {exc}") from None
        except OSError as exc:
            raise self.error(f"cannot read it: {exc.strerror or exc}") from None
        unknown = [k for k in data if k not in TOP_KEYS]
        if unknown:
            raise self.error(f"unknown key(s) {', '.join(unknown)}; expected {', '.join(TOP_KEYS)}")
        version = data.get("format", FORMAT)
        if not isinstance(version, int) or isinstance(version, bool):
            raise self.error(f"`format` must be an integer, got {format_value(version)}")
        if version > FORMAT:
            raise self.error(
                f"format {version} was written by a newer mage_nb; this one reads format {FORMAT}"
            )
        for key in ("name", "source", "prelude"):
            if key in data and not isinstance(data[key], str):
                raise self.error(f"`{key}` must be a string")
        return data

    def text_of(self, file: str, what: str) -> str:
        path = self.folder / file
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise self.error(f"{what}: its file {file} does not exist in {self.folder}") from None
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise self.error(f"{what}: cannot read its file {file}: {reason}") from None

    def spec(self, number: int, entry: Any) -> BlockSpec:
        what = f"block #{number}"
        if not isinstance(entry, dict):
            raise self.error(f"{what}: expected a [[blocks]] table")
        if isinstance(entry.get("name"), str):
            what = f"block {entry['name']!r}"
        unknown = [k for k in entry if k not in BLOCK_KEYS]
        if unknown:
            raise self.error(
                f"{what}: unknown key(s) {', '.join(unknown)}; a block takes {', '.join(BLOCK_KEYS)}"
            )
        for key in ("header", "file"):
            if not isinstance(entry.get(key), str) or not entry[key].strip():
                raise self.error(f"{what}: `{key}` is missing (a string is required)")
        for key in ("name", "kind", "origin"):
            if key in entry and not isinstance(entry[key], str):
                raise self.error(f"{what}: `{key}` must be a string")
        file, header = entry["file"], entry["header"]
        body = _body(self.text_of(file, what), file)
        try:
            spec = parse_header(header, source=body, origin=file)
        except HeaderError as exc:
            raise HeaderError(f"{self.file}: {what}: header {header!r}: {exc}") from None
        said = {"name": spec.name, "kind": spec.kind, **options_of(spec)}
        for key, expected in said.items():
            if key in entry and not _same(entry[key], expected):
                gives = "leaves it unset" if expected is None else f"gives {format_value(expected)}"
                raise self.error(
                    f"{what}: `{key} = {format_value(entry[key])}` disagrees with its header "
                    f"{header!r}, which {gives}. The header is what runs: change the option "
                    f"there ({OPTION_FLAGS.get(key, 'the block NAME and KIND')}), and make "
                    f"`{key}` agree or remove it"
                )
        return spec

    def check_upstream(self, entries: list[Any], specs: list[BlockSpec]) -> None:
        pipeline = Pipeline(specs)
        for entry, spec in zip(entries, specs, strict=True):
            if "upstream" not in entry:
                continue
            written = entry["upstream"]
            actual = list(pipeline[spec.name].upstream)
            if written != actual:
                raise self.error(
                    f"block {spec.name!r}: `upstream = {format_value(written)}` disagrees with "
                    f"what the block reads ({format_value(actual)}, from its body"
                    f"{' and --upstream' if spec.upstream is not None else ''}). The body and "
                    "--upstream decide the edges: update `upstream` to match, or remove it"
                )


def load_folder(path: str | Path) -> Notebook:
    """Read an exported folder (or its ``pipeline.toml``); raise ``PipelineError`` if invalid."""
    reader = _Reader(Path(path))
    data = reader.read()
    entries = data.get("blocks", [])
    if not isinstance(entries, list):
        raise reader.error("`blocks` must be an array of [[blocks]] tables")
    specs = [reader.spec(number, entry) for number, entry in enumerate(entries, start=1)]
    reader.check_upstream(entries, specs)
    prelude: list[PreludeCell] = []
    prelude_file = data.get("prelude")
    if prelude_file:
        text = reader.text_of(prelude_file, "the prelude")
        prelude.append(PreludeCell(0, text, file=str(reader.folder / prelude_file)))
    return Notebook(
        path=reader.folder,
        specs=specs,
        prelude=prelude,
        pipeline_name=data.get("name") or None,
    )
