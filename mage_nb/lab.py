"""The kernel side of the JupyterLab extension (``labextension/``).

Two things, both small:

* ``pipeline_state(session)``: the pipeline's structure (blocks, kinds, edges, cell ids) and
  what each block's last run left (instance counts per status), as plain JSON. It is sent to
  the browser on the comm target ``mage_nb.lab`` after every run (``publish``), so the
  extension's Pipeline panel colours its DAG without asking.
* the cell magic ``%%mage_nb_lab ACTION`` that the extension's commands send, with a JSON body
  (never typed by hand): ``sync`` registers the notebook's block cells as they are now (so a
  command sees the headers being edited, not the ones last run), ``run`` syncs then does
  ``%pipeline run``, ``export`` syncs then does ``%pipeline export``, ``state`` publishes.
  A ``%%`` cell is never part of a worker's prelude (``notebook.is_prelude_cell``).

Outside a kernel with a front end (tests, ``InteractiveShell``) the comm is a no-op.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

from .engine.errors import PipelineError
from .engine.spec import parse_header, split_block_cell

if TYPE_CHECKING:
    from .magics import PipelineMagics
    from .session import Session

TARGET = "mage_nb.lab"
MAGIC = "mage_nb_lab"
STATE_VERSION = 1


def pipeline_state(session: Session) -> dict[str, Any]:
    """Blocks in notebook order with their upstreams, and each block's last-run counts."""
    state: dict[str, Any] = {
        "version": STATE_VERSION,
        "blocks": [],
        "counts": {},
        "stale": [],
        "run": None,
        "error": None,
    }
    registered = sorted(session.blocks.values(), key=lambda r: r.order)
    try:
        pipeline = session.pipeline()
        upstream = {b.name: list(b.upstream) for b in pipeline}
        state["stale"] = session.stale()
    except PipelineError as exc:
        upstream = {}
        state["error"] = str(exc)
    for r in registered:
        spec = r.spec
        state["blocks"].append(
            {
                "name": spec.name,
                "kind": spec.kind,
                "dynamic": spec.dynamic,
                "reduce": spec.reduce,
                "upstream": upstream.get(spec.name, list(spec.upstream or ())),
                "cell_id": r.cell_id,
            }
        )
    for name, (_, runs) in session.results.items():
        counts: dict[str, int] = {}
        for run in runs:
            counts[run.status] = counts.get(run.status, 0) + 1
        state["counts"][name] = counts
    last = session.last_run
    if last is not None:
        state["run"] = {"run_id": last.run_id, "status": last.status}
    return state


class _Channel:
    """The kernel end of the ``mage_nb.lab`` comm, opened lazily, reopened if closed."""

    def __init__(self) -> None:
        self.comm: Any = None

    def send(self, data: dict[str, Any]) -> None:
        try:
            if self.comm is None:
                from comm import create_comm

                self.comm = create_comm(target_name=TARGET, data=data)
                self.comm.on_close(self._closed)
            else:
                self.comm.send(data)
        except Exception:  # no front end listening is never an error for a run
            self.comm = None

    def _closed(self, msg: Any = None) -> None:
        self.comm = None


_CHANNEL = _Channel()


def publish(session: Session) -> None:
    """Send the pipeline state to the browser (after a run, a sync or on request)."""
    _CHANNEL.send(pipeline_state(session))


def publish_current() -> None:
    """``publish`` for the kernel's session, if ``%load_ext mage_nb`` ran (a page reload asks)."""
    from IPython import get_ipython

    shell = get_ipython()
    magics = shell.magics_manager.registry.get("PipelineMagics") if shell is not None else None
    if magics is not None:
        publish(magics.session)


def sync(session: Session, cells: list[dict[str, Any]]) -> list[str]:
    """Register the notebook's block cells (``{"id", "source"}``, notebook order) without
    running them, and forget blocks whose cell left the notebook. Returns notes."""
    notes: list[str] = []
    ids = {c.get("id") for c in cells if c.get("id")}
    for registered in list(session.blocks.values()):
        if registered.cell_id and registered.cell_id not in ids:
            session.forget(registered.spec.name)
            notes.append(f"block {registered.spec.name!r} is no longer in the notebook")
    for cell in cells:
        source = str(cell.get("source", ""))
        parts = split_block_cell(source)
        if parts is None:
            continue
        header, body = parts
        cell_id = cell.get("id") or None
        try:
            spec = parse_header(header, source=body)
            notes += session.register(spec, cell_id)
        except PipelineError as exc:
            where = f" (cell {cell_id})" if cell_id else ""
            raise UsageError(f"{header.strip()}{where}: {exc}") from None
    return notes


def lab_magic(magics: PipelineMagics, line: str, cell: str) -> None:
    """``%%mage_nb_lab sync|run|export|state`` with a JSON body (sent by the extension)."""
    action = line.strip()
    try:
        data = json.loads(cell) if cell.strip() else {}
    except ValueError as exc:
        raise UsageError(f"%%{MAGIC}: the body is not JSON ({exc})") from None
    session = magics.session
    if action == "state":
        publish(session)
        return
    if action not in ("sync", "run", "export"):
        raise UsageError(f"%%{MAGIC}: expected one of sync, run, export, state; got {action!r}")
    try:
        notes = sync(session, list(data.get("cells", [])))
    finally:
        publish(session)
    # the %pipeline subcommands themselves (what `%pipeline run` / `%pipeline export` call)
    if action == "run":
        magics._routes["run"]([])
    elif action == "export":
        words = ["--to", str(data.get("to", "python")), str(data["out_dir"])]
        if data.get("force"):
            words.append("--force")
        magics._routes["export"](words)
    elif notes:
        print("\n".join(notes))


def load(magics: PipelineMagics) -> None:
    """Register ``%%mage_nb_lab`` beside the block magics."""

    def mage_nb_lab(line: str, cell: str) -> None:
        lab_magic(magics, line, cell)

    shell: Any = magics.shell
    shell.register_magic_function(mage_nb_lab, "cell", MAGIC)
