"""Errors the engine raises.

``PipelineError`` and its subclasses mean "the notebook or command is invalid, nothing ran"
(exit status 2 headless, ``UsageError`` in the kernel). Errors inside a block instance are
never raised out of a run: they become that instance's ``error``.
"""

from __future__ import annotations


class PipelineError(Exception):
    """The pipeline cannot run as written; nothing was run."""


class HeaderError(PipelineError):
    """A ``%%block`` header that cannot be parsed or has a bad option."""


class BlockCodeError(PipelineError):
    """A block body that cannot be compiled (syntax, top-level ``yield``...)."""


class GraphError(PipelineError):
    """Duplicate names, unknown upstreams, self-references, cycles, misplaced reduces."""


class PreludeError(PipelineError):
    """A plain notebook cell raised while running the shared prelude."""


class FanoutError(Exception):
    """A dynamic block produced something that cannot be fanned out."""
