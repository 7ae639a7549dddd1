"""Running Python block bodies: expression style and function style (SPEC §1.2, §2.8, §8)."""

from __future__ import annotations

import builtins
import threading
from typing import Any

import pytest
from helpers import outputs, run_cells, specs_from_cells, statuses

import mage_nb
from mage_nb.engine import Pipeline, Run, SyncExecutor
from mage_nb.engine import decorators as engine_decorators


def output(run: mage_nb.PipelineRun, uuid: str) -> Any:
    block_run = run.block_runs[uuid]
    assert block_run.status == "completed", block_run.error
    return block_run.output


# -- expression style --------------------------------------------------------------------------


def test_output_is_the_value_of_the_last_expression(executor: str) -> None:
    run = run_cells("%%loader a\nx = 2\nx * 21", executor=executor)
    assert output(run, "a") == 42


def test_body_ending_in_an_assignment_outputs_none() -> None:
    run = run_cells("%%loader a\n5\nx = 1")
    assert output(run, "a") is None


@pytest.mark.parametrize(
    "body",
    ["for i in range(3):\n    i", "if True:\n    7", "def f():\n    return 1", "import os"],
)
def test_body_ending_in_a_compound_or_import_statement_outputs_none(body: str) -> None:
    run = run_cells(f"%%loader a\n{body}")
    assert output(run, "a") is None


def test_trailing_semicolon_does_not_change_the_output() -> None:
    run = run_cells("%%loader a\n1\n[2, 3];", "%%loader b\n[2, 3]")
    assert output(run, "a") == output(run, "b") == [2, 3]


def test_upstream_output_is_bound_to_the_upstream_name(executor: str) -> None:
    run = run_cells(
        "%%loader users\n[{'id': 1}, {'id': 2}]",
        "%%transformer ids\n[u['id'] for u in users]",
        executor=executor,
    )
    assert output(run, "ids") == [1, 2]


def test_assignments_do_not_leak_into_the_notebook_namespace() -> None:
    namespace: dict[str, Any] = {"__builtins__": builtins}
    pipeline = Pipeline(specs_from_cells(["%%loader a\nleaked = 1\nleaked + 1"]))
    run = Run(pipeline, namespace, executor=SyncExecutor()).execute()
    assert output(run, "a") == 2
    assert "leaked" not in namespace


def test_assignments_do_not_leak_from_one_block_to_another() -> None:
    run = run_cells(
        "%%loader a\nleaked = 1\nleaked", "%%transformer b --upstream a\n'leaked' in dir()"
    )
    assert output(run, "b") is False
    failed = run_cells("%%loader a\nleaked = 1", "%%transformer b --upstream a\nleaked")
    assert statuses(failed, "b") == {"b": "failed"}
    assert "leaked" in failed.block_runs["b"].error.message


def test_notebook_helpers_are_read_live_at_run_time() -> None:
    namespace: dict[str, Any] = {"__builtins__": builtins, "RATE": 1}
    exec("def helper(x):\n    return x * RATE\n", namespace)
    pipeline = Pipeline(specs_from_cells(["%%loader a\nhelper(5) + RATE"]))
    run = Run(pipeline, namespace, executor=SyncExecutor())
    namespace["RATE"] = 3  # changed after the block was compiled, before it runs
    record = run.execute()
    assert output(record, "a") == 18


def test_notebook_helper_function_passed_in_the_namespace_is_callable() -> None:
    run = run_cells("%%loader a\nshout('hi')", namespace={"shout": lambda s: s.upper() + "!"})
    assert output(run, "a") == "HI!"


def test_read_then_assign_of_a_notebook_global_reads_the_global() -> None:
    namespace: dict[str, Any] = {"__builtins__": builtins, "df": 10}
    pipeline = Pipeline(specs_from_cells(["%%loader a\ndf = df + 1\ndf"]))
    run = Run(pipeline, namespace, executor=SyncExecutor()).execute()
    assert output(run, "a") == 11
    assert namespace["df"] == 10


def test_read_then_assign_of_a_notebook_global_is_fresh_in_every_instance(executor: str) -> None:
    run = run_cells(
        "%%loader a --dynamic\n[1, 2, 3]",
        "%%transformer t\ntotal = total + a\ntotal",
        namespace={"total": 100},
        executor=executor,
    )
    assert outputs(run, "t") == {"t:0": 101, "t:1": 102, "t:2": 103}


def test_read_then_assign_of_an_undefined_global_is_a_name_error() -> None:
    run = run_cells("%%loader a\nmissing = missing + 1")
    assert run.block_runs["a"].status == "failed"
    assert run.block_runs["a"].error.type in ("NameError", "UnboundLocalError")
    assert "missing" in run.block_runs["a"].error.message


# -- context -----------------------------------------------------------------------------------


def test_context_is_bound_outside_a_fan_out() -> None:
    run = run_cells(
        "%%loader a\n(context.uuid, context.block, context.index, context.lineage, "
        "dict(context.metadata), dict(context.params), context.attempt)",
        params={"day": "2024-01-01"},
    )
    assert output(run, "a") == ("a", "a", (), [], {}, {"day": "2024-01-01"}, 1)


def test_context_is_bound_in_a_dynamic_child(executor: str) -> None:
    run = run_cells(
        "%%loader users --dynamic\n[[1, 2], [{'block_uuid': 'u1', 'tier': 'gold'}, {'tier': 'x'}]]",
        "%%transformer t\n(users, context.uuid, context.block, context.index, context.lineage, "
        "dict(context.metadata), dict(context.params), context.attempt)",
        params={"p": "v"},
        executor=executor,
    )
    assert outputs(run, "t") == {
        "t:u1": (1, "t:u1", "t", (0,), [("users", "u1")], {"tier": "gold"}, {"p": "v"}, 1),
        "t:1": (2, "t:1", "t", (1,), [("users", "1")], {"tier": "x"}, {"p": "v"}, 1),
    }


def test_context_attempt_counts_retries() -> None:
    run = run_cells(
        "%%loader a --retries 2\nif context.attempt < 3:\n    raise RuntimeError('flaky')\n"
        "context.attempt"
    )
    assert output(run, "a") == 3
    assert run.block_runs["a"].attempts == 3


# -- function style ----------------------------------------------------------------------------

ROLES = ["loader", "transformer", "exporter", "custom", "data_loader", "data_exporter"]


@pytest.mark.parametrize("role", ROLES)
def test_function_style_decorators_work_without_import(role: str) -> None:
    run = run_cells(f"%%block custom a\n@{role}\ndef fn(*args, **kwargs):\n    return '{role}'\n")
    assert output(run, "a") == role


@pytest.mark.parametrize("role", ROLES)
def test_function_style_decorators_work_imported_from_mage_nb(role: str) -> None:
    body = f"from mage_nb import {role}\n@{role}\ndef fn(*args, **kwargs):\n    return 1\n"
    run = run_cells(f"%%block custom a\n{body}")
    assert output(run, "a") == 1


def test_function_style_decorator_works_as_module_attribute() -> None:
    body = "import mage_nb\n@mage_nb.transformer\ndef fn():\n    return 'ok'\n"
    assert output(run_cells(f"%%transformer a\n{body}"), "a") == "ok"


def test_decorators_are_exported_by_mage_nb() -> None:
    for name in [*ROLES, "test"]:
        assert name in mage_nb.__all__
        assert getattr(mage_nb, name) is getattr(engine_decorators, name)


def test_function_output_is_its_return_value_not_the_last_expression() -> None:
    body = "@loader\ndef load():\n    return [1, 2]\n"
    assert output(run_cells(f"%%loader a\n{body}"), "a") == [1, 2]


def test_function_gets_upstream_outputs_positionally_in_inferred_order(executor: str) -> None:
    run = run_cells(
        "%%loader a\n'A'",
        "%%loader b\n'B'",
        "%%transformer t\n@transformer\ndef fn(b, a):\n    return (b, a)\n",
        executor=executor,
    )
    assert output(run, "t") == ("B", "A")


def test_function_gets_upstream_outputs_positionally_in_explicit_order() -> None:
    run = run_cells(
        "%%loader a\n'A'",
        "%%loader b\n'B'",
        "%%transformer t --upstream b a\n@transformer\ndef fn(first, second):\n"
        "    return (first, second)\n",
    )
    assert output(run, "t") == ("B", "A")


def test_function_with_star_args_gets_every_upstream_in_order() -> None:
    run = run_cells(
        "%%loader a\n1",
        "%%loader b\n2",
        "%%loader c\n3",
        "%%transformer t --upstream c a b\n@transformer\ndef fn(*args):\n    return args\n",
    )
    assert output(run, "t") == (3, 1, 2)


def test_function_keyword_arguments_with_kwargs_get_every_keyword() -> None:
    run = run_cells(
        "%%loader a\n1",
        "%%transformer t\n@transformer\ndef fn(a, **kwargs):\n    return kwargs\n",
        params={"env": "prod"},
    )
    got = output(run, "t")
    assert got["env"] == "prod"
    assert got["block_uuid"] == "t"
    assert got["dynamic_block_index"] is None
    assert "a" not in got


def test_function_gets_only_the_keywords_it_accepts() -> None:
    body = "@transformer\ndef fn(a, env, block_uuid):\n    return (a, env, block_uuid)\n"
    run = run_cells("%%loader a\n1", f"%%transformer t\n{body}", params={"env": "prod", "x": "1"})
    assert output(run, "t") == (1, "prod", "t")


def test_function_without_keyword_parameters_gets_none() -> None:
    run = run_cells(
        "%%loader a\n1",
        "%%transformer t\n@transformer\ndef fn(a):\n    return a\n",
        params={"env": "prod"},
    )
    assert output(run, "t") == 1


def test_function_gets_dynamic_block_index_and_uuid_in_a_fan_out(executor: str) -> None:
    body = (
        "@transformer\ndef fn(users, block_uuid, dynamic_block_index):\n"
        "    return (users, block_uuid, dynamic_block_index)\n"
    )
    run = run_cells(
        "%%loader users --dynamic\n['x', 'y', 'z']", f"%%transformer t\n{body}", executor=executor
    )
    assert outputs(run, "t") == {
        "t:0": ("x", "t:0", 0),
        "t:1": ("y", "t:1", 1),
        "t:2": ("z", "t:2", 2),
    }


def test_function_gets_merged_lineage_metadata_nearer_wins(executor: str) -> None:
    body = (
        "@transformer\ndef fn(inner, region, tier, dynamic_block_index, extra=None):\n"
        "    return (inner, region, tier, extra, dynamic_block_index)\n"
    )
    run = run_cells(
        "%%loader outer --dynamic\n[['o'], [{'region': 'eu', 'tier': 'outer'}]]",
        "%%transformer inner --dynamic\n"
        "[[outer + '1', outer + '2'], [{'tier': 'inner'}, {'extra': True}]]",
        f"%%transformer t\n{body}",
        executor=executor,
    )
    assert outputs(run, "t") == {
        "t:0:0": ("o1", "eu", "inner", None, 0),
        "t:0:1": ("o2", "eu", "outer", True, 1),
    }


# -- @test -------------------------------------------------------------------------------------


def test_test_function_is_called_after_every_instance(executor: str) -> None:
    seen: list[Any] = []
    lock = threading.Lock()
    namespace = {"seen": seen, "lock": lock}
    body = (
        "@transformer\ndef fn(a):\n    return a * 2\n"
        "@test\ndef check(out):\n    with lock:\n        seen.append(out)\n"
    )
    run = run_cells(
        "%%loader a --dynamic\n[1, 2, 3]",
        f"%%transformer t\n{body}",
        namespace=namespace,
        executor=executor,
    )
    assert run.status == "completed"
    assert sorted(seen) == [2, 4, 6]


def test_test_function_works_in_expression_style() -> None:
    run = run_cells("%%loader a\n@test\ndef check(out):\n    assert out == 1, 'bad'\n1")
    assert output(run, "a") == 1


def test_failing_test_in_expression_style_fails_the_instance() -> None:
    run = run_cells("%%loader a\n@test\ndef check(out):\n    assert out == 1, 'bad output'\n2")
    assert run.block_runs["a"].status == "failed"
    assert "bad output" in run.block_runs["a"].error.message


def test_failing_test_fails_only_that_instance(executor: str) -> None:
    body = (
        "@transformer\ndef fn(a):\n    return a\n"
        "@test\ndef check(out):\n    assert out != 2, 'two is not allowed'\n"
    )
    run = run_cells(
        "%%loader a --dynamic\n[1, 2, 3]",
        f"%%transformer t\n{body}",
        "%%exporter e\nt",
        executor=executor,
    )
    assert statuses(run, "t") == {"t:0": "completed", "t:1": "failed", "t:2": "completed"}
    assert statuses(run, "e") == {"e:0": "completed", "e:1": "upstream_failed", "e:2": "completed"}
    error = run.block_runs["t:1"].error
    assert error.type == "AssertionError"
    assert "two is not allowed" in error.message
    assert run.status == "failed"


def test_mage_import_guard_uses_the_provided_decorators() -> None:
    body = (
        "if 'data_loader' not in globals():\n"
        "    from mage_ai.data_preparation.decorators import data_loader\n"
        "if 'test' not in globals():\n"
        "    from mage_ai.data_preparation.decorators import test\n"
        "@data_loader\ndef load(*args, **kwargs):\n    return [1, 2]\n"
        "@test\ndef test_output(output, *args):\n    assert output is not None\n"
    )
    run = run_cells(f"%%loader users\n{body}")
    assert output(run, "users") == [1, 2]


# -- errors ------------------------------------------------------------------------------------


def test_traceback_points_at_the_blocks_own_line() -> None:
    run = run_cells("%%loader users\nx = 1\ny = x + undefined_name\ny")
    block_run = run.block_runs["users"]
    assert block_run.status == "failed"
    assert block_run.error.type == "NameError"
    traceback = block_run.error.traceback
    assert 'File "<block users>", line 3' in traceback
    assert "y = x + undefined_name" in traceback
    assert "scheduler.py" not in traceback


def test_traceback_in_function_style_points_at_the_line_in_the_function() -> None:
    body = "@loader\ndef load():\n    data = {}\n    return data['missing']\n"
    run = run_cells(f"%%loader users\n{body}")
    error = run.block_runs["users"].error
    assert error.type == "KeyError"
    assert 'File "<block users>", line 5, in load' in error.traceback
    assert "return data['missing']" in error.traceback


def test_an_exception_fails_only_its_own_instance_and_descendants(executor: str) -> None:
    run = run_cells(
        "%%loader a --dynamic\n[1, 0, 2]",
        "%%transformer t\n10 // a",
        "%%exporter e\nt",
        "%%loader other\n'fine'",
        executor=executor,
    )
    assert statuses(run, "t") == {"t:0": "completed", "t:1": "failed", "t:2": "completed"}
    assert statuses(run, "e") == {"e:0": "completed", "e:1": "upstream_failed", "e:2": "completed"}
    assert output(run, "other") == "fine"
    assert run.block_runs["t:1"].error.type == "ZeroDivisionError"


def test_a_misspelt_block_name_fails_with_a_suggestion() -> None:
    run = run_cells("%%loader users\n[1, 2]", "%%transformer t\nuser * 2")
    error = run.block_runs["t"].error
    assert error is not None
    assert error.type == "NameError"
    assert "Did you mean: 'users'?" in error.message
