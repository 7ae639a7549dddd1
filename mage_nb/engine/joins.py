"""Creating a block's instances: the natural join of its upstreams' rows on lineage.

Each upstream hands down rows keyed by item indices over its own scope; a block's instance
exists for every combination of one row per upstream that agrees on the fan-outs they share
(zip), with independent fan-outs combined as a product. Rows are indexed by the shared
positions each later upstream needs, so a new row is joined in time proportional to its
matches, not to everything seen so far. One upstream (the common case) is a straight pass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .rows import ROW_FAILED, ROW_GHOST, ROW_OK, Row

if TYPE_CHECKING:
    from .scheduler import BlockState, Run


class Joiner:
    """Creates a block's instances from its upstreams' rows (the join on lineage)."""

    def __init__(self, run: Run, state: BlockState, scopes: list[tuple[str, ...]]):
        self.run = run
        self.state = state
        scope = state.block.scope
        self.width = len(scope)
        self.positions = [tuple(scope.index(entry) for entry in s) for s in scopes]
        self.single = len(scopes) == 1
        self.rows: list[list[Row]] = [[] for _ in scopes]
        # For each arriving upstream, the order in which the others are joined and, per step,
        # the index to look into: (other upstream, offsets into its key, scope positions).
        self.plans: list[list[tuple[int, tuple[int, ...], tuple[int, ...]]]] = []
        self.indexes: dict[tuple[int, tuple[int, ...]], dict[tuple[int, ...], list[Row]]] = {}
        for i, pos_i in enumerate(self.positions):
            bound = set(pos_i)
            plan = []
            for j, pos_j in enumerate(self.positions):
                if j == i:
                    continue
                shared = tuple(p for p in pos_j if p in bound)
                offsets = tuple(pos_j.index(p) for p in shared)
                self.indexes.setdefault((j, offsets), {})
                plan.append((j, offsets, shared))
                bound.update(pos_j)
            self.plans.append(plan)
        self.index_of: list[list[tuple[tuple[int, ...], dict[tuple[int, ...], list[Row]]]]] = [
            [(offsets, index) for (j, offsets), index in self.indexes.items() if j == i]
            for i in range(len(scopes))
        ]

    def receive(self, i: int, rows: list[Row] | tuple[Row, ...]) -> None:
        create = self.run._create
        state = self.state
        if self.single:
            for row in rows:
                create(state, row.key, row.fanouts, (row.value,), (row.origin,), row.state)
            return
        for row in rows:
            self._join(i, row)
            for offsets, index in self.index_of[i]:
                index.setdefault(tuple(row.key[o] for o in offsets), []).append(row)

    def _join(self, i: int, row: Row) -> None:
        n = len(self.positions)
        key: list[int] = [0] * self.width
        fanouts: list[Any] = [None] * self.width
        chosen: list[Row | None] = [None] * n
        chosen[i] = row
        for p, k, f in zip(self.positions[i], row.key, row.fanouts):
            key[p] = k
            fanouts[p] = f
        plan = self.plans[i]

        def extend(step: int) -> None:
            if step == len(plan):
                rows = [r for r in chosen if r is not None]
                states = {r.state for r in rows}
                state = (
                    ROW_GHOST
                    if ROW_GHOST in states
                    else ROW_FAILED
                    if ROW_FAILED in states
                    else ROW_OK
                )
                self.run._create(
                    self.state,
                    tuple(key),
                    tuple(fanouts),
                    tuple(r.value for r in rows),
                    tuple(r.origin for r in rows),
                    state,
                )
                return
            j, offsets, shared = plan[step]
            wanted = tuple(key[p] for p in shared)
            for other in self.indexes[(j, offsets)].get(wanted, ()):
                chosen[j] = other
                for p, k, f in zip(self.positions[j], other.key, other.fanouts):
                    key[p] = k
                    fanouts[p] = f
                extend(step + 1)
            chosen[j] = None

        extend(0)
