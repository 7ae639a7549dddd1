"""SQL blocks against a real PostgreSQL server (SPEC §5).

The server is the one ``conftest.py`` starts (``initdb`` in a temporary directory, 127.0.0.1,
a free port). The crash tests get a server of their own, which they kill (``pg_ctl stop -m
immediate``) in the middle of a run and start again.
"""

from __future__ import annotations

import builtins
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import PostgresServer
from helpers import specs_from_cells, write_notebook

import mage_nb
from mage_nb.engine import (
    BlockRun,
    Pipeline,
    PipelineError,
    PipelineRun,
    Run,
    RunListener,
    ThreadExecutor,
)

DATABASE = "pg_blocks"
USERS = [(1, "Ada"), (2, "Alan"), (3, "Grace"), (4, "Edsger")]  # Edsger has no orders
ORDERS = [  # (id, user_id, cents)
    (101, 1, 500),
    (102, 1, 250),
    (103, 1, 1250),
    (201, 2, 999),
    (301, 3, 100),
    (302, 3, 4200),
]
EVIL = "x'); DROP TABLE users; --"


def _execute(
    *cells: str,
    connections: dict[str, str] | None = None,
    workers: int = 8,
    namespace: dict[str, Any] | None = None,
    memo: Any = None,
    listeners: tuple[RunListener, ...] = (),
) -> PipelineRun:
    ns: dict[str, Any] = {"__builtins__": builtins, "__name__": "__main__", **(namespace or {})}
    executor = ThreadExecutor(workers)
    try:
        return Run(
            Pipeline(specs_from_cells(cells)),
            ns,
            executor=executor,
            connections=connections,
            memo=memo,
            listeners=list(listeners),
        ).execute()
    finally:
        executor.close()


def _memo(run: PipelineRun) -> dict[str, dict[tuple[int, ...], BlockRun]]:
    return {block: {r.key: r for r in run.instances(block)} for block in run.blocks}


@pytest.fixture(scope="module")
def shop(postgres: PostgresServer) -> str:
    """This module's database on the shared server, with users and orders; its URL."""
    url = postgres.create_database(DATABASE)
    postgres.execute("create table users (id int primary key, name text not null)", dbname=DATABASE)
    postgres.execute(
        "create table orders (id int primary key, user_id int not null, cents int not null)",
        dbname=DATABASE,
    )
    postgres.execute("create table notes (id serial primary key, body text)", dbname=DATABASE)
    for user in USERS:
        postgres.execute("insert into users values (%s, %s)", user, dbname=DATABASE)
    for order in ORDERS:
        postgres.execute("insert into orders values (%s, %s, %s)", order, dbname=DATABASE)
    return url


USERS_LOADER = "%%loader users --dynamic\n" + repr(
    [{"id": uid, "name": name} for uid, name in USERS]
)


# -- the dynamic example ---------------------------------------------------------------------------
def test_dynamic_users_fan_out_to_a_sql_block_per_user_and_reduce_back(shop: str) -> None:
    run = _execute(
        USERS_LOADER,
        "%%block sql user_orders --dynamic --connection shop\n"
        "select id, user_id, cents from orders where user_id = {{ users.id }} order by id",
        "%%transformer priced --reduce\n"
        "{'for_user': users['id'], 'order_user': user_orders['user_id'],"
        " 'order': user_orders['id'], 'eur': user_orders['cents'] / 100}",
        "%%exporter summary\n"
        "{'user': users['id'], 'name': users['name'], 'orders': [p['order'] for p in priced],"
        " 'cents': round(sum(p['eur'] for p in priced) * 100)}",
        connections={"shop": shop},
    )
    assert run.status == "completed", {u: r.error for u, r in run.block_runs.items() if r.error}

    by_user = {uid: [o for o in ORDERS if o[1] == uid] for uid, _ in USERS}
    assert [r.uuid for r in run.instances("user_orders")] == [f"user_orders:{i}" for i in range(4)]
    for i, (uid, _) in enumerate(USERS):
        rows = run.block_runs[f"user_orders:{i}"].output
        assert rows == [{"id": o, "user_id": u, "cents": c} for o, u, c in by_user[uid]]

    expected_priced = [
        f"priced:{i}:{j}" for i, (uid, _) in enumerate(USERS) for j in range(len(by_user[uid]))
    ]
    assert [r.uuid for r in run.instances("priced")] == expected_priced
    assert expected_priced[:3] == ["priced:0:0", "priced:0:1", "priced:0:2"]
    for i, (uid, _) in enumerate(USERS):
        for j, (oid, _, cents) in enumerate(by_user[uid]):
            out = run.block_runs[f"priced:{i}:{j}"].output
            # Each order reached the instance of its own user, and only that one.
            assert out == {"for_user": uid, "order_user": uid, "order": oid, "eur": cents / 100}

    assert [r.uuid for r in run.instances("summary")] == [f"summary:{i}" for i in range(4)]
    assert run.outputs("summary") == [
        {
            "user": uid,
            "name": name,
            "orders": [o[0] for o in by_user[uid]],
            "cents": sum(o[2] for o in by_user[uid]),
        }
        for uid, name in USERS
    ]


def test_a_dynamic_sql_loader_fans_out_one_item_per_row(shop: str) -> None:
    run = _execute(
        f"%%block sql customers --dynamic --connection {shop}\n"
        "select id, name from users order by id",
        f"%%block sql order_count --connection {shop}\n"
        "select count(*) as n from orders where user_id = {{ customers.id }}",
        "%%transformer line\nf\"{customers['name']}: {int(order_count['n'][0])}\"",
    )
    assert run.status == "completed"
    assert run.block_runs["customers"].output == [{"id": u, "name": n} for u, n in USERS]
    assert [r.uuid for r in run.instances("order_count")] == [f"order_count:{i}" for i in range(4)]
    assert run.outputs("line") == ["Ada: 3", "Alan: 1", "Grace: 2", "Edsger: 0"]


# -- bind parameters ---------------------------------------------------------------------------
def test_template_values_are_bind_parameters_so_an_injection_is_just_text(
    shop: str, postgres: PostgresServer
) -> None:
    names = [EVIL, "Robert'); DROP TABLE orders;--", "O'Brien", "{{ 1 }}"]
    run = _execute(
        f"%%loader names --dynamic\n{names!r}",
        "%%block sql echo --connection shop\n"
        "select {{ names }} as name, (select count(*) from users) as users_left,\n"
        "       (select count(*) from users where name = {{ names }}) as matches",
        "%%block sql remember --connection shop\ninsert into notes (body) values ({{ names }})",
        connections={"shop": shop},
    )
    assert run.status == "completed", {u: r.error for u, r in run.block_runs.items() if r.error}
    for i, name in enumerate(names):
        frame = run.block_runs[f"echo:{i}"].output
        assert frame.to_dict(orient="records") == [
            {"name": name, "users_left": len(USERS), "matches": 0}
        ]
        assert run.block_runs[f"remember:{i}"].output.empty  # no rows: an empty DataFrame
    # The tables survived and the strings were stored exactly as given (and committed).
    assert postgres.execute("select count(*) from users", dbname=DATABASE) == [(len(USERS),)]
    assert postgres.execute("select count(*) from orders", dbname=DATABASE) == [(len(ORDERS),)]
    stored = postgres.execute("select body from notes", dbname=DATABASE)
    assert sorted(body for (body,) in stored) == sorted(names)
    postgres.execute("delete from notes", dbname=DATABASE)


def test_a_template_value_can_be_cast_with_double_colon(shop: str) -> None:
    run = _execute(
        "%%block sql cast --connection shop\nselect {{ 41 + 1 }}::int as answer",
        connections={"shop": shop},
    )
    assert run.block_runs["cast"].status == "completed", run.block_runs["cast"].error
    assert run.block_runs["cast"].output["answer"].tolist() == [42]


# -- errors ------------------------------------------------------------------------------------
def test_a_postgres_error_fails_only_its_instance_with_block_uuid_sql_and_message(
    shop: str,
) -> None:
    run = _execute(
        "%%loader picks --dynamic\n[{'id': 1, 'col': 'cents'}, {'id': 3, 'col': 'no_such_col'}]",
        "%%block sql user_orders --connection shop\n"
        "select {{ picks.col | ident }} as v from orders where user_id = {{ picks.id }}",
        "%%transformer total\nint(user_orders['v'].sum())",
        connections={"shop": shop},
    )
    assert run.status == "failed"
    good, bad = run.block_runs["user_orders:0"], run.block_runs["user_orders:1"]
    assert good.status == "completed"
    assert run.block_runs["total:0"].output == 2000
    assert bad.status == "failed"
    assert bad.error is not None
    assert bad.error.type == "SqlError"
    message = bad.error.message
    assert "SQL block 'user_orders'" in message
    assert "instance 'user_orders:1'" in message
    assert 'column "no_such_col" does not exist' in message  # PostgreSQL's own words
    assert 'select "no_such_col" as v from orders where user_id = %(mage_nb_0)s' in message
    downstream = run.block_runs["total:1"]
    assert downstream.status == "upstream_failed"
    assert downstream.error is not None
    assert "user_orders:1" in downstream.error.message


# -- run_notebook with a named connection --------------------------------------------------------
NOTEBOOK_CELLS = [
    "%load_ext mage_nb",
    USERS_LOADER,
    "%%block sql user_orders --connection warehouse\n"
    "select count(*) as n, coalesce(sum(cents), 0) as cents\n"
    "from orders where user_id = {{ users.id }}",
    "%%transformer per_user --reduce\n"
    "{'id': users['id'], 'n': int(user_orders['n'][0]), 'cents': int(user_orders['cents'][0])}",
    "%%exporter report\nsorted(per_user, key=lambda row: -row['cents'])",
]


def test_run_notebook_reads_a_named_connection_with_env_expansion(
    shop: str, postgres: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_notebook(tmp_path / "orders.ipynb", NOTEBOOK_CELLS)
    (tmp_path / "mage_nb.toml").write_text(
        "[connections]\n"
        f'warehouse = "postgresql+psycopg://{postgres.user}@127.0.0.1:${{MAGE_NB_TEST_PGPORT}}'
        f'/{DATABASE}"\n'
    )
    monkeypatch.setenv("MAGE_NB_TEST_PGPORT", str(postgres.port))
    run = mage_nb.run_notebook(path, executor="threads")
    assert run.status == "completed", {u: r.error for u, r in run.block_runs.items() if r.error}
    assert [r.uuid for r in run.instances("user_orders")] == [f"user_orders:{i}" for i in range(4)]
    assert run.block_runs["report"].output == [
        {"id": 3, "n": 2, "cents": 4300},
        {"id": 1, "n": 3, "cents": 2000},
        {"id": 2, "n": 1, "cents": 999},
        {"id": 4, "n": 0, "cents": 0},
    ]

    monkeypatch.delenv("MAGE_NB_TEST_PGPORT")
    with pytest.raises(PipelineError, match="MAGE_NB_TEST_PGPORT is not set"):
        mage_nb.run_notebook(path, executor="threads")


# -- the server dies mid-run ---------------------------------------------------------------------
ITEMS = 20
SLOW_SQL = (
    "with ins as (insert into hits (i) values ({{ items }}) returning i)\n"
    "select i from ins, pg_sleep(0.25)"
)


@pytest.fixture(scope="module")
def crash_server(postgres_factory: Callable[[], PostgresServer]) -> PostgresServer:
    server = postgres_factory()
    server.execute("create table hits (i int not null)")
    return server


@pytest.fixture
def crashy(crash_server: PostgresServer) -> Iterator[PostgresServer]:
    """The crash tests' own server, running and with an empty ``hits`` table."""
    yield crash_server
    if not crash_server.running:
        crash_server.start()
    crash_server.execute("delete from hits")


class KillAfter(RunListener):
    """Kills the server once ``count`` instances of ``block`` have completed."""

    def __init__(self, server: PostgresServer, block: str, count: int, then: Callable[[], Any]):
        self.server, self.block, self.count, self.then = server, block, count, then
        self.completed_before: list[str] = []
        self.killed = False
        self.retried: list[str] = []

    def instance_finished(self, *, run: PipelineRun, instance: BlockRun) -> None:
        if self.killed or instance.block != self.block or instance.status != "completed":
            return
        self.completed_before.append(instance.uuid)
        if len(self.completed_before) == self.count:
            self.server.kill()
            self.killed = True
            self.then()

    def instance_retried(self, *, run: PipelineRun, instance: BlockRun) -> None:
        self.retried.append(instance.uuid)


def _hits(server: PostgresServer) -> dict[int, int]:
    return dict(server.execute("select i, count(*) from hits group by i"))


def _crash_cells(url: str, retry: str = "") -> list[str]:
    return [
        f"%%loader items --dynamic\nlist(range({ITEMS}))",
        f"%%block sql slow --connection {url} {retry}\n{SLOW_SQL}",
        "%%transformer doubled --reduce sum\ncalls.append(context.uuid)\nint(slow['i'][0]) * 2",
        "%%exporter total\ndoubled",
        "%%transformer offline\nitems + 1000",  # a branch that never touches the database
    ]


def test_killing_the_server_fails_the_affected_instances_and_a_reuse_run_completes(
    crashy: PostgresServer,
) -> None:
    calls: list[str] = []
    killer = KillAfter(crashy, "slow", 3, then=lambda: None)
    started = time.monotonic()
    first = _execute(
        *_crash_cells(crashy.url), workers=4, namespace={"calls": calls}, listeners=(killer,)
    )
    elapsed = time.monotonic() - started
    assert killer.killed
    assert elapsed < 20, f"the run took {elapsed:.1f}s after the server died"
    assert first.status == "failed"

    slow = list(first.instances("slow"))
    done = [r for r in slow if r.status == "completed"]
    failed = [r for r in slow if r.status == "failed"]
    assert len(slow) == ITEMS
    assert len(done) + len(failed) == ITEMS  # nothing pending, cancelled or hanging
    assert len(done) >= 3
    assert failed, "the kill came after every instance had finished"
    for r in failed:
        assert r.error is not None and r.error.type == "SqlError"
        message = r.error.message
        assert message.startswith(f"SQL block 'slow', instance '{r.uuid}': OperationalError")
        assert "connection" in message.lower(), message
        assert "insert into hits" in message  # the rendered SQL
    # Completed work is kept: outputs, their consumers, and the branch off the database.
    for r in done:
        i = r.key[0]
        assert r.output["i"].tolist() == [i]
        assert first.block_runs[f"doubled:{i}"].status == "completed"
        assert first.block_runs[f"doubled:{i}"].output == 2 * i
    for r in failed:
        assert first.block_runs[f"doubled:{r.key[0]}"].status == "upstream_failed"
    assert first.block_runs["total"].status == "upstream_failed"
    assert first.outputs("offline") == [i + 1000 for i in range(ITEMS)]
    assert sorted(calls) == sorted(f"doubled:{r.key[0]}" for r in done)

    crashy.start()
    hits_before = _hits(crashy)
    assert all(hits_before.get(r.key[0]) == 1 for r in done)

    calls.clear()
    second = _execute(
        *_crash_cells(crashy.url), workers=4, namespace={"calls": calls}, memo=_memo(first)
    )
    assert second.status == "completed", {
        u: r.error for u, r in second.block_runs.items() if r.error
    }
    assert second.block_runs["total"].output == 2 * sum(range(ITEMS))
    rerun = {r.uuid for r in second.instances("slow") if not r.reused}
    assert rerun == {r.uuid for r in failed}
    assert sorted(calls) == sorted(f"doubled:{r.key[0]}" for r in failed)
    hits = _hits(crashy)
    assert set(hits) == set(range(ITEMS))
    assert all(hits[r.key[0]] == 1 for r in done)  # completed instances did not run again


def test_a_restart_within_the_retry_window_lets_the_run_complete(crashy: PostgresServer) -> None:
    problems: list[BaseException] = []

    def restart() -> None:
        try:
            time.sleep(0.3)
            crashy.start()
        except BaseException as exc:
            problems.append(exc)

    restarter = threading.Thread(target=restart, daemon=True)
    killer = KillAfter(crashy, "slow", 3, then=restarter.start)
    started = time.monotonic()
    run = _execute(
        *_crash_cells(crashy.url, "--retries 8 --retry-delay 0.5"),
        workers=4,
        namespace={"calls": []},
        listeners=(killer,),
    )
    elapsed = time.monotonic() - started
    restarter.join(30)
    assert not problems, problems
    assert killer.killed and crashy.running
    assert elapsed < 30
    assert run.status == "completed", {u: r.error for u, r in run.block_runs.items() if r.error}
    assert killer.retried, "no instance was retried: the kill came too late"
    slow = {r.uuid: r for r in run.instances("slow")}
    assert all(r.status == "completed" for r in slow.values())
    assert any(r.attempts > 1 for r in slow.values())
    assert all(slow[uuid].attempts == 1 for uuid in killer.completed_before)
    assert run.block_runs["total"].output == 2 * sum(range(ITEMS))
    assert set(_hits(crashy)) == set(range(ITEMS))
