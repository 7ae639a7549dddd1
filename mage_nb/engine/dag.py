"""The pipeline: blocks, their edges, their order and their fan-out scopes.

Built once from ``BlockSpec``s; everything about it that can be wrong (duplicates, unknown
or self references, cycles, a reduce outside every fan-out, a body that does not compile)
is refused here with an error that names the blocks, before anything runs.

**Scopes** are how lineage is modelled once, as data. A block's ``scope`` is the ordered
tuple of dynamic blocks whose fan-outs its instances descend from; an instance's key is one
item index per scope entry. The scope of a block is the ordered union of what its upstreams
hand down (a dynamic upstream adds itself; a reduce drops its innermost entry). Sharing an
entry means "zip on it", entries from different upstreams mean "product", and nesting is
just a longer scope; the scheduler needs no special case per topology. Invariant: in every
scope a fan-out's ancestors come before it, so the innermost entry is always the last.
"""

from __future__ import annotations

import graphlib
import hashlib
import heapq
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from .code import BodyInfo, CompiledBody, analyse, block_references, compile_body
from .errors import BlockCodeError, GraphError, PipelineError
from .spec import BlockSpec
from .sql import SqlBody, SqlInfo, SqlResources, analyse_sql, dialect_of, sql_references


@dataclass
class Block:
    """A block placed in its pipeline."""

    spec: BlockSpec
    position: int  # notebook order
    upstream: tuple[str, ...] = ()
    info: BodyInfo | None = None
    sql: SqlInfo | None = None
    downstream: list[str] = field(default_factory=list)
    scope: tuple[str, ...] = ()  # fan-outs the block's instances live in
    out_scope: tuple[str, ...] = ()  # fan-outs its downstream receive
    order: int = 0  # topological rank

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def dynamic(self) -> bool:
        return self.spec.dynamic

    @property
    def reduce(self) -> str | None:
        return self.spec.reduce

    def compile(self, namespace: dict[str, Any], sql: SqlResources) -> CompiledBody | SqlBody:
        """The body its instances call: compiled once per run (or per worker process)."""
        spec = self.spec
        if spec.kind == "sql":
            assert self.sql is not None
            return SqlBody(
                spec.name, spec.source, self.upstream, namespace, sql, spec.connection, self.sql
            )
        return compile_body(
            spec.source,
            spec.name,
            self.upstream,
            namespace,
            info=self.info,
            header=spec.header,
        )


def _describe(spec: BlockSpec) -> str:
    return f"{spec.name!r} ({spec.origin})" if spec.origin else repr(spec.name)


class Pipeline:
    """Blocks in topological order (ties broken by notebook order)."""

    def __init__(self, specs: Sequence[BlockSpec]):
        seen: dict[str, BlockSpec] = {}
        for spec in specs:
            if spec.name in seen:
                first = seen[spec.name]
                where = (
                    f" in {first.origin} and {spec.origin}" if first.origin and spec.origin else ""
                )
                raise GraphError(f"block {spec.name!r} is defined twice{where}")
            seen[spec.name] = spec
        names = list(seen)
        blocks = {s.name: Block(spec=s, position=i) for i, s in enumerate(specs)}
        for block in blocks.values():
            self._resolve_upstream(block, names)
        self.order = self._sort(blocks)
        self.blocks = {name: blocks[name] for name in self.order}
        for rank, name in enumerate(self.order):
            block = self.blocks[name]
            block.order = rank
            for up in block.upstream:
                self.blocks[up].downstream.append(name)
            self._place(block)

    # -- edges -------------------------------------------------------------------------------
    @staticmethod
    def _resolve_upstream(block: Block, names: list[str]) -> None:
        spec = block.spec
        if spec.kind == "sql":
            try:
                block.sql = analyse_sql(spec.source, dialect=dialect_of(spec.connection))
            except PipelineError as exc:
                where = f" ({spec.origin})" if spec.origin else ""
                raise BlockCodeError(f"block {spec.name!r}{where}: {exc}") from None
        else:
            try:
                block.info = analyse(spec.source, spec.name)
            except BlockCodeError as exc:
                raise BlockCodeError(f"{exc}{f' ({spec.origin})' if spec.origin else ''}") from None
        if spec.upstream is not None:
            for up in spec.upstream:
                if up == spec.name:
                    raise GraphError(f"block {spec.name!r} lists itself in --upstream")
                if up not in names:
                    raise GraphError(
                        f"block {_describe(spec)}: --upstream names {up!r}, which is not a block"
                    )
            block.upstream = spec.upstream
            return
        if block.sql is not None:
            refs = sql_references(block.sql, names)
        else:
            refs = block_references(block.info, names) if block.info else []
        if spec.name in refs:
            raise GraphError(
                f"block {spec.name!r} reads its own name; a block cannot depend on itself "
                "(rename the variable, or give --upstream explicitly)"
            )
        block.upstream = tuple(refs)

    @staticmethod
    def _sort(blocks: dict[str, Block]) -> list[str]:
        graph = {name: set(b.upstream) for name, b in blocks.items()}
        try:
            graphlib.TopologicalSorter(graph).prepare()
        except graphlib.CycleError as exc:
            cycle = list(exc.args[1])
            raise GraphError(f"blocks form a cycle: {' -> '.join(cycle)}") from None
        waiting = {name: len(ups) for name, ups in graph.items()}
        children: dict[str, list[str]] = {name: [] for name in blocks}
        for name, ups in graph.items():
            for up in ups:
                children[up].append(name)
        heap = [(b.position, name) for name, b in blocks.items() if not waiting[name]]
        heapq.heapify(heap)
        order: list[str] = []
        while heap:
            _, name = heapq.heappop(heap)
            order.append(name)
            for child in children[name]:
                waiting[child] -= 1
                if not waiting[child]:
                    heapq.heappush(heap, (blocks[child].position, child))
        return order

    # -- scopes ------------------------------------------------------------------------------
    def _place(self, block: Block) -> None:
        scope: list[str] = []
        for up in block.upstream:
            for entry in self.blocks[up].out_scope:
                if entry not in scope:
                    scope.append(entry)
        block.scope = tuple(scope)
        kept = block.scope
        if block.reduce is not None:
            if not scope:
                raise GraphError(
                    f"block {_describe(block.spec)} has --reduce but is outside every fan-out: "
                    "there is nothing to reduce (put it below a --dynamic block)"
                )
            kept = kept[:-1]
        block.out_scope = (*kept, block.name) if block.dynamic else kept

    # -- queries -----------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Block]:
        return iter(self.blocks.values())

    def __getitem__(self, name: str) -> Block:
        return self.blocks[name]

    def __contains__(self, name: object) -> bool:
        return name in self.blocks

    def __len__(self) -> int:
        return len(self.blocks)


def block_versions(pipeline: Pipeline) -> dict[str, str]:
    """A block's version changes when its header, its body or any ancestor's changes: a
    result computed at another version may be wrong now."""
    versions: dict[str, str] = {}
    for block in pipeline:
        digest = hashlib.sha256()
        digest.update(block.spec.header.encode())
        digest.update(b"\0")
        digest.update(block.spec.source.encode())
        for up in block.upstream:
            digest.update(b"\0" + up.encode() + b"=" + versions[up].encode())
        versions[block.name] = digest.hexdigest()[:16]
    return versions
