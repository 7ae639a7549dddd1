"""The ``%%block KIND NAME [options]`` header parser (SPEC §1.1)."""

from __future__ import annotations

import pytest

from mage_nb.engine import BlockSpec, HeaderError, PipelineError, parse_header
from mage_nb.engine.spec import split_block_cell

# -- magics and kinds --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "kind"),
    [
        ("%%loader users", "loader"),
        ("%%transformer users", "transformer"),
        ("%%exporter users", "exporter"),
        ("%%block loader users", "loader"),
        ("%%block transformer users", "transformer"),
        ("%%block exporter users", "exporter"),
        ("%%block custom users", "custom"),
        ("%%block sql users", "sql"),
    ],
)
def test_every_magic_and_kind_gives_that_kind_and_name(header: str, kind: str) -> None:
    spec = parse_header(header)
    assert spec.kind == kind
    assert spec.name == "users"


@pytest.mark.parametrize(
    ("alias", "long"),
    [
        ("%%loader users --dynamic", "%%block loader users --dynamic"),
        ("%%transformer clean --retries 2", "%%block transformer clean --retries 2"),
        ("%%exporter save --timeout 5", "%%block exporter save --timeout 5"),
    ],
)
def test_alias_magics_mean_the_same_as_block_kind(alias: str, long: str) -> None:
    assert parse_header(alias) == parse_header(long)


def test_header_without_leading_percent_signs_is_accepted_as_ipython_passes_it() -> None:
    assert parse_header("block loader users --dynamic") == parse_header(
        "%%block loader users --dynamic"
    )
    assert parse_header("loader users") == parse_header("%%loader users")


def test_source_and_origin_are_kept_on_the_spec() -> None:
    spec = parse_header("%%loader users", source="[1, 2]", origin="cell 3")
    assert spec.source == "[1, 2]"
    assert spec.origin == "cell 3"


def test_there_is_no_sql_alias_magic() -> None:
    with pytest.raises(HeaderError) as info:
        parse_header("%%sql users")
    message = str(info.value)
    assert "%%sql" in message
    assert "%%block" in message


# -- options and their defaults ----------------------------------------------------------------


def test_a_bare_header_has_every_default() -> None:
    spec = parse_header("%%loader users")
    assert spec.dynamic is False
    assert spec.reduce is None
    assert spec.reduce_policy == "all"
    assert spec.upstream is None
    assert spec.retries == 0
    assert spec.retry_delay == 0.0
    assert spec.timeout is None
    assert spec.max_concurrency is None
    assert spec.connection is None
    assert spec.max_children is None
    assert spec.on_overflow == "fail"
    assert spec.window is None
    assert spec.executor is None
    assert spec.no_run is False


def test_dynamic_flag_sets_dynamic() -> None:
    assert parse_header("%%loader users --dynamic").dynamic is True


def test_reduce_without_strategy_defaults_to_list() -> None:
    assert parse_header("%%transformer t --reduce").reduce == "list"


@pytest.mark.parametrize("strategy", ["list", "concat", "sum", "count", "merge", "my_reducer"])
def test_reduce_with_strategy_keeps_the_strategy_name(strategy: str) -> None:
    assert parse_header(f"%%transformer t --reduce {strategy}").reduce == strategy


def test_reduce_followed_by_another_option_still_defaults_to_list() -> None:
    spec = parse_header("%%transformer t --reduce --dynamic")
    assert spec.reduce == "list"
    assert spec.dynamic is True


@pytest.mark.parametrize("policy", ["all", "partial"])
def test_reduce_policy_is_parsed(policy: str) -> None:
    assert parse_header(f"%%transformer t --reduce --reduce-policy {policy}").reduce_policy == (
        policy
    )


def test_upstream_takes_several_names_in_the_order_given() -> None:
    assert parse_header("%%transformer t --upstream b a c").upstream == ("b", "a", "c")


def test_upstream_list_ends_at_the_next_option() -> None:
    spec = parse_header("%%transformer t --upstream b a --retries 3")
    assert spec.upstream == ("b", "a")
    assert spec.retries == 3


def test_retries_and_retry_delay_are_numbers() -> None:
    spec = parse_header("%%loader t --retries 3 --retry-delay 0.5")
    assert spec.retries == 3
    assert spec.retry_delay == 0.5


def test_retries_and_retry_delay_accept_zero() -> None:
    spec = parse_header("%%loader t --retries 0 --retry-delay 0")
    assert spec.retries == 0
    assert spec.retry_delay == 0.0


def test_timeout_is_seconds_as_a_float() -> None:
    assert parse_header("%%loader t --timeout 2.5").timeout == 2.5
    assert parse_header("%%loader t --timeout 10").timeout == 10.0


def test_max_concurrency_is_an_int() -> None:
    assert parse_header("%%loader t --max-concurrency 4").max_concurrency == 4


@pytest.mark.parametrize("connection", ["warehouse", "postgresql://u:p@host:5432/db"])
def test_connection_on_a_sql_block_is_a_name_or_url(connection: str) -> None:
    assert parse_header(f"%%block sql q --connection {connection}").connection == connection


def test_max_children_on_a_dynamic_block_defaults_to_fail_on_overflow() -> None:
    spec = parse_header("%%loader t --dynamic --max-children 10")
    assert spec.max_children == 10
    assert spec.on_overflow == "fail"


@pytest.mark.parametrize("policy", ["fail", "truncate"])
def test_on_overflow_is_parsed(policy: str) -> None:
    spec = parse_header(f"%%loader t --dynamic --max-children 2 --on-overflow {policy}")
    assert spec.on_overflow == policy


def test_window_on_a_dynamic_block_is_an_int() -> None:
    assert parse_header("%%loader t --dynamic --window 64").window == 64


@pytest.mark.parametrize("executor", ["threads", "processes", "dask"])
def test_executor_is_one_of_the_three(executor: str) -> None:
    assert parse_header(f"%%loader t --executor {executor}").executor == executor


def test_no_run_flag_sets_no_run() -> None:
    assert parse_header("%%loader t --no-run").no_run is True


def test_dynamic_and_reduce_together_are_allowed() -> None:
    spec = parse_header("%%transformer t --dynamic --reduce sum")
    assert spec.dynamic is True
    assert spec.reduce == "sum"


def test_every_option_at_once_is_parsed() -> None:
    spec = parse_header(
        "%%block sql q --dynamic --reduce concat --reduce-policy partial --upstream a b "
        "--retries 2 --retry-delay 1.5 --timeout 30 --max-concurrency 3 --connection wh "
        "--max-children 100 --on-overflow truncate --window 8 --executor dask --no-run"
    )
    assert isinstance(spec, BlockSpec)
    assert (spec.kind, spec.name) == ("sql", "q")
    assert spec.dynamic is True
    assert spec.reduce == "concat"
    assert spec.reduce_policy == "partial"
    assert spec.upstream == ("a", "b")
    assert (spec.retries, spec.retry_delay, spec.timeout) == (2, 1.5, 30.0)
    assert spec.max_concurrency == 3
    assert spec.connection == "wh"
    assert (spec.max_children, spec.on_overflow, spec.window) == (100, "truncate", 8)
    assert spec.executor == "dask"
    assert spec.no_run is True


# -- refusals ----------------------------------------------------------------------------------


def _refusal(header: str) -> str:
    with pytest.raises(HeaderError) as info:
        parse_header(header)
    assert isinstance(info.value, PipelineError)
    message = str(info.value)
    assert "\n" not in message.strip(), "a refusal is one clear line"
    return message


def test_unknown_kind_is_refused_naming_it_and_the_kinds() -> None:
    message = _refusal("%%block model users")
    assert "unknown block kind" in message
    assert "'model'" in message
    for kind in ("loader", "transformer", "exporter", "custom", "sql"):
        assert kind in message


def test_block_without_kind_is_refused_asking_for_kind() -> None:
    message = _refusal("%%block")
    assert "missing KIND" in message
    assert "loader" in message


@pytest.mark.parametrize(
    ("header", "usage"),
    [
        ("%%block loader", "%%block loader NAME"),
        ("%%loader", "%%loader NAME"),
        ("%%transformer --dynamic", "%%transformer NAME"),
    ],
)
def test_missing_name_is_refused_showing_the_usage(header: str, usage: str) -> None:
    message = _refusal(header)
    assert "missing NAME" in message
    assert usage in message


@pytest.mark.parametrize("name", ["1abc", "my-block", "class", "a.b"])
def test_name_that_is_not_an_identifier_is_refused(name: str) -> None:
    message = _refusal(f"%%loader {name}")
    assert f"'{name}'" in message
    assert "not a valid Python identifier" in message


@pytest.mark.parametrize("name", ["context", "transformer", "data_loader"])
def test_reserved_name_is_refused_saying_why(name: str) -> None:
    message = _refusal(f"%%loader {name}")
    assert f"'{name}'" in message
    assert "reserved" in message
    assert "bound in every block body" in message


@pytest.mark.parametrize(
    ("options", "flag", "kind"),
    [
        ("--retries -1", "--retries", "non-negative integer"),
        ("--retries x", "--retries", "non-negative integer"),
        ("--retries 1.5", "--retries", "non-negative integer"),
        ("--retry-delay -1", "--retry-delay", "non-negative number"),
        ("--timeout 0", "--timeout", "positive number"),
        ("--timeout -3", "--timeout", "positive number"),
        ("--timeout soon", "--timeout", "positive number"),
        ("--max-concurrency 0", "--max-concurrency", "positive integer"),
        ("--dynamic --max-children 0", "--max-children", "positive integer"),
        ("--dynamic --window 0", "--window", "positive integer"),
    ],
)
def test_bad_number_is_refused_naming_the_option_the_value_and_what_it_must_be(
    options: str, flag: str, kind: str
) -> None:
    message = _refusal(f"%%loader t {options}")
    assert flag in message
    assert kind in message
    assert repr(options.split()[-1]) in message


@pytest.mark.parametrize(
    ("options", "flag", "bad"),
    [
        ("--executor gpu", "--executor", "gpu"),
        ("--dynamic --on-overflow drop", "--on-overflow", "drop"),
        ("--reduce --reduce-policy some", "--reduce-policy", "some"),
    ],
)
def test_bad_choice_is_refused_listing_the_choices(options: str, flag: str, bad: str) -> None:
    message = _refusal(f"%%transformer t {options}")
    assert flag in message
    assert f"'{bad}'" in message
    assert "choose from" in message


@pytest.mark.parametrize("extra", ["--bogus", "--dyn", "stray"])
def test_unknown_option_or_stray_word_is_refused_naming_it(extra: str) -> None:
    message = _refusal(f"%%loader users {extra}")
    assert "'users'" in message
    assert "unexpected argument" in message
    assert extra in message


def test_upstream_without_names_is_refused() -> None:
    message = _refusal("%%transformer t --upstream")
    assert "--upstream" in message
    assert "expected at least one argument" in message


def test_reduce_strategy_that_is_no_identifier_is_refused() -> None:
    message = _refusal("%%transformer t --reduce 1x")
    assert "reduce strategy '1x'" in message
    assert "list, concat, sum, count, merge" in message


@pytest.mark.parametrize("kind", ["loader", "transformer", "exporter", "custom"])
def test_connection_on_a_non_sql_block_is_refused(kind: str) -> None:
    message = _refusal(f"%%block {kind} t --connection wh")
    assert "'t'" in message
    assert "--connection is only for sql blocks" in message
    assert kind in message


def test_reduce_policy_without_reduce_is_refused() -> None:
    message = _refusal("%%transformer t --reduce-policy partial")
    assert "'t'" in message
    assert "--reduce-policy needs --reduce" in message


@pytest.mark.parametrize(
    ("options", "flag"),
    [
        ("--max-children 5", "--max-children"),
        ("--on-overflow truncate", "--on-overflow"),
        ("--window 4", "--window"),
    ],
)
def test_dynamic_only_option_without_dynamic_is_refused(options: str, flag: str) -> None:
    message = _refusal(f"%%loader t {options}")
    assert "'t'" in message
    assert f"{flag} is only for --dynamic blocks" in message


def test_duplicate_upstream_name_is_refused() -> None:
    message = _refusal("%%transformer t --upstream a b a")
    assert "'t'" in message
    assert "--upstream" in message
    assert "twice" in message


def test_duplicate_upstream_refusal_names_the_repeated_block() -> None:
    message = _refusal("%%transformer t --upstream a b a")
    assert "'a'" in message


def test_upstream_name_that_is_not_an_identifier_is_refused() -> None:
    message = _refusal("%%transformer t --upstream ok 2bad")
    assert "--upstream" in message
    assert "'2bad'" in message
    assert "not a valid Python identifier" in message


def test_unbalanced_quote_is_refused_as_unreadable() -> None:
    message = _refusal("%%loader 'users")
    assert "cannot read the header" in message


def test_empty_header_is_refused_showing_the_usage() -> None:
    message = _refusal("   ")
    assert "empty block header" in message
    assert "%%block KIND NAME" in message


# -- splitting a cell --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "%%block loader users --dynamic",
        "%%loader users",
        "%%transformer clean",
        "%%exporter save",
        "%%block sql q",
    ],
)
def test_block_cell_splits_into_header_line_and_body(header: str) -> None:
    assert split_block_cell(f"{header}\nx = 1\nx") == (header, "x = 1\nx")


def test_block_cell_without_body_has_an_empty_body() -> None:
    assert split_block_cell("%%loader users") == ("%%loader users", "")


@pytest.mark.parametrize(
    "cell",
    ["x = 1", "%%sql\nselect 1", "%%capture\nprint(1)", "", "# %%loader users\n1", "x\n%%loader a"],
)
def test_cells_that_are_not_block_magics_are_not_split(cell: str) -> None:
    assert split_block_cell(cell) is None
