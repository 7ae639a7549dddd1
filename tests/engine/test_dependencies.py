"""Dependency inference and graph validation (SPEC §1.3)."""

from __future__ import annotations

import pytest
from helpers import run_cells, specs_from_cells

from mage_nb.engine import BlockCodeError, GraphError, Pipeline, PipelineError
from mage_nb.engine.code import analyse, block_references


def upstream_of(block: str, *cells: str) -> tuple[str, ...]:
    return Pipeline(specs_from_cells(cells))[block].upstream


def refs(source: str, *names: str) -> list[str]:
    return block_references(analyse(source, "blk"), names)


SOURCES = ("%%loader a\n1", "%%loader b\n2", "%%loader c\n3")

# -- what counts as a read ---------------------------------------------------------------------


def test_plain_read_of_a_block_name_is_an_edge() -> None:
    assert upstream_of("t", *SOURCES, "%%transformer t\na + 1") == ("a",)


def test_names_that_are_not_blocks_are_not_edges() -> None:
    assert refs("len(a) + helper(x)", "a", "b") == ["a"]


def test_read_inside_a_nested_function_is_an_edge() -> None:
    assert refs("def f():\n    def g():\n        return a\n    return g\nf()()", "a") == ["a"]


def test_read_inside_a_comprehension_is_an_edge() -> None:
    assert set(refs("[x + b for x in c if x in a]", "a", "b", "c")) == {"a", "b", "c"}
    assert set(refs("{k: a for k in range(3)}", "a")) == {"a"}
    assert refs("list(x for x in b)", "b") == ["b"]


def test_comprehension_variable_named_like_a_block_is_not_an_edge() -> None:
    assert refs("[a * 2 for a in range(3)]", "a") == []


def test_read_inside_a_lambda_is_an_edge_but_its_parameter_is_not() -> None:
    assert refs("f = lambda: a\nf()", "a") == ["a"]
    assert refs("f = lambda b: b + 1\nf(1)", "b") == []


def test_read_in_a_lambda_default_is_an_edge() -> None:
    assert refs("f = lambda x=a: x\nf()", "a") == ["a"]


def test_read_inside_an_f_string_is_an_edge() -> None:
    assert refs("f'{a!r} and {b:>{c}}'", "a", "b", "c") == ["a", "b", "c"]


def test_read_inside_a_class_body_or_method_is_an_edge() -> None:
    source = "class K:\n    rows = a\n    def m(self):\n        return b\nK().m()"
    assert refs(source, "a", "b") == ["a", "b"]


def test_class_attribute_assigned_first_in_the_class_body_is_not_an_edge() -> None:
    assert refs("class K:\n    a = 1\n    b = a\nK.b", "a") == []


def test_class_body_that_reads_a_block_before_assigning_it_is_an_edge() -> None:
    assert refs("class K:\n    rows = a\n    a = 2\nK.rows", "a") == ["a"]


def test_method_reading_a_class_attribute_name_reads_the_global_block() -> None:
    # Class scope is not visible from methods: ``a`` inside m() is the notebook's ``a``.
    assert refs("class K:\n    a = 1\n    def m(self):\n        return a\n", "a") == ["a"]


def test_decorator_default_and_base_class_reads_are_edges() -> None:
    assert refs("@a\ndef f():\n    pass\n", "a") == ["a"]
    assert refs("def f(x=b):\n    return x\n", "b") == ["b"]
    assert refs("class K(c):\n    pass\n", "c") == ["c"]


def test_attribute_or_item_assignment_on_a_block_output_reads_it() -> None:
    assert refs("a.x = 1", "a") == ["a"]
    assert refs("b['k'] = 1", "b") == ["b"]


# -- assignment order --------------------------------------------------------------------------


def test_name_assigned_before_it_is_read_is_not_an_edge() -> None:
    assert upstream_of("t", *SOURCES, "%%transformer t\na = 5\na + 1") == ()


def test_name_assigned_first_runs_without_waiting_for_the_block() -> None:
    run = run_cells("%%loader a\n1", "%%transformer t\na = 5\na + 1")
    assert run.block_runs["t"].output == 6
    assert run.block_runs["t"].upstream == []


def test_name_read_then_assigned_is_an_edge() -> None:
    assert upstream_of("t", *SOURCES, "%%transformer t\na = a * 10\na") == ("a",)
    run = run_cells("%%loader a\n4", "%%transformer t\na = a * 10\na")
    assert run.block_runs["t"].output == 40


def test_augmented_assignment_reads_the_block() -> None:
    assert refs("a += 1", "a") == ["a"]


def test_for_loop_over_a_block_into_its_own_name_is_an_edge() -> None:
    assert refs("for a in a:\n    pass", "a") == ["a"]


def test_import_binds_a_name_so_it_is_not_an_edge() -> None:
    assert refs("import a\na.x", "a") == []
    assert refs("from m import b\nb", "b") == []


def test_function_that_reads_a_name_assigned_at_top_level_is_not_an_edge() -> None:
    assert refs("def f():\n    return a\na = 2\nf()", "a") == []


def test_except_and_walrus_bindings_are_not_edges() -> None:
    assert refs("try:\n    pass\nexcept Exception as a:\n    a", "a") == []
    assert refs("(b := 3) + b", "b") == []


# -- function style ----------------------------------------------------------------------------


def test_function_parameters_named_after_blocks_are_edges() -> None:
    source = "@transformer\ndef f(b, a, other):\n    return 1\n"
    assert upstream_of("t", *SOURCES, f"%%transformer t\n{source}") == ("b", "a")


def test_function_parameters_come_before_names_read_in_the_body() -> None:
    source = "@transformer\ndef f(b, *args):\n    return c + args[0]\n"
    assert upstream_of("t", *SOURCES, f"%%transformer t\n{source}") == ("b", "c")


def test_free_names_read_in_a_function_style_body_are_edges() -> None:
    source = "@transformer\ndef f(*args, **kwargs):\n    return a\n"
    assert upstream_of("t", *SOURCES, f"%%transformer t\n{source}") == ("a",)


def test_analyse_reports_function_style_and_its_parameters() -> None:
    info = analyse("@data_loader\ndef load(x, y=1, **kw):\n    return x\n", "blk")
    assert info.style == "function"
    assert info.function == "load"
    assert info.parameters == ("x", "y", "kw")


def test_analyse_reports_expression_style_for_a_plain_script() -> None:
    info = analyse("x = 1\nx + a", "blk")
    assert info.style == "expression"
    assert info.function is None
    assert info.free_names == ("a",)


# -- order -------------------------------------------------------------------------------------


def test_upstream_order_is_the_order_of_first_appearance() -> None:
    assert upstream_of("t", *SOURCES, "%%transformer t\nc + a + b + a") == ("c", "a", "b")
    assert upstream_of("t", *SOURCES, "%%transformer t\nx = b\ny = a\nx + y + b") == ("b", "a")


def test_upstream_order_over_statements_follows_the_text() -> None:
    body = "first = c.copy()\nsecond = [a]\nthird = b"
    assert upstream_of("t", *SOURCES, f"%%transformer t\n{body}") == ("c", "a", "b")


def test_upstream_order_in_a_conditional_expression_follows_the_text() -> None:
    assert refs("a if b else c", "a", "b", "c") == ["a", "b", "c"]


def test_explicit_upstream_overrides_inference_and_keeps_its_order() -> None:
    assert upstream_of("t", *SOURCES, "%%transformer t --upstream c a\nb") == ("c", "a")


def test_explicit_upstream_applies_to_function_style_too() -> None:
    source = "@transformer\ndef f(a, b):\n    return (a, b)\n"
    assert upstream_of("t", *SOURCES, f"%%transformer t --upstream b a\n{source}") == ("b", "a")


def test_pipeline_orders_blocks_topologically_then_by_notebook_order() -> None:
    pipeline = Pipeline(
        specs_from_cells(["%%transformer t\nb + a", "%%loader b\n2", "%%loader a\n1"])
    )
    assert pipeline.order == ["b", "a", "t"]


# -- refusals ----------------------------------------------------------------------------------


def _refusal(*cells: str, error: type[PipelineError] = GraphError) -> str:
    with pytest.raises(error) as info:
        Pipeline(specs_from_cells(cells))
    assert isinstance(info.value, PipelineError)
    return str(info.value)


def test_block_reading_its_own_name_is_refused() -> None:
    message = _refusal("%%loader a\na + 1")
    assert "'a'" in message
    assert "its own name" in message
    assert "cannot depend on itself" in message


def test_block_listing_itself_in_upstream_is_refused() -> None:
    message = _refusal("%%loader a --upstream a\n1")
    assert "'a'" in message
    assert "lists itself in --upstream" in message


def test_cycle_is_refused_naming_every_block_in_it() -> None:
    message = _refusal("%%loader a\nc", "%%transformer b\na", "%%transformer c\nb", "%%loader d\n1")
    assert "cycle" in message
    for name in ("a", "b", "c"):
        assert name in message
    assert "d" not in message.split(":", 1)[1]
    assert (
        "a -> b -> c -> a" in message
        or "b -> c -> a -> b" in message
        or ("c -> a -> b -> c" in message)
    )


def test_cycle_through_explicit_upstream_is_refused() -> None:
    message = _refusal("%%loader a --upstream b\n1", "%%loader b --upstream a\n2")
    assert "cycle" in message
    assert "a" in message
    assert "b" in message


def test_cycle_means_nothing_runs() -> None:
    ran: list[str] = []
    with pytest.raises(GraphError):
        run_cells(
            "%%loader first\nran.append('first')",
            "%%loader a\nb",
            "%%transformer b\na",
            namespace={"ran": ran},
        )
    assert ran == []


def test_unknown_explicit_upstream_is_refused_naming_it_and_the_block() -> None:
    message = _refusal("%%loader a\n1", "%%transformer t --upstream a ghost\n1")
    assert "'t'" in message
    assert "cell 2" in message
    assert "'ghost'" in message
    assert "not a block" in message


def test_duplicate_block_name_is_refused_naming_both_cells() -> None:
    message = _refusal("%%loader a\n1", "%%loader b\n2", "%%transformer a\n3")
    assert "'a'" in message
    assert "defined twice" in message
    assert "cell 1" in message
    assert "cell 3" in message


def test_syntax_error_is_refused_naming_block_line_and_cell() -> None:
    message = _refusal("%%loader a\n1", "%%transformer t\nx = 1\ny = (", error=BlockCodeError)
    assert "'t'" in message
    assert "line 3" in message
    assert "never closed" in message
    assert "cell 2" in message


@pytest.mark.parametrize(
    ("body", "word", "line"),
    [
        ("x = 1\nyield x", "'yield'", "line 3"),
        ("return 3", "'return'", "line 2"),
        ("x = 1\n\nyield from x", "'yield from'", "line 4"),
        ("if True:\n    return 1", "'return'", "line 3"),
    ],
)
def test_top_level_yield_or_return_is_refused_naming_block_and_line(
    body: str, word: str, line: str
) -> None:
    message = _refusal(f"%%transformer t\n{body}", error=BlockCodeError)
    assert "'t'" in message
    assert word in message
    assert "outside a function" in message
    assert line in message


def test_yield_and_return_inside_a_function_are_fine() -> None:
    body = "def gen():\n    yield 1\n    return\nlist(gen())"
    assert Pipeline(specs_from_cells([f"%%loader a\n{body}"]))["a"].upstream == ()


def test_analyse_refuses_syntax_errors_with_the_cell_line() -> None:
    with pytest.raises(BlockCodeError) as info:
        analyse("ok = 1\nnot ok (", "users")
    assert "'users'" in str(info.value)
    assert "line 3" in str(info.value)


def test_star_import_is_refused() -> None:
    with pytest.raises(BlockCodeError) as info:
        analyse("from os import *", "users")
    assert "import *" in str(info.value)


def test_block_references_keeps_parameters_first_then_free_names_once() -> None:
    info = analyse("@transformer\ndef f(b, x):\n    return a + b + c\n", "t")
    assert block_references(info, ["a", "b", "c"]) == ["b", "a", "c"]
