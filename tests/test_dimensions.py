"""Drivers and layers as dimensions of a cell, and granian's log: unit tests, nothing started."""

from dataclasses import replace
from pathlib import Path

from harness.domain.axes import Driver, Layer, Mode, Pool, ServerName, SessionStyle, Workload
from harness.domain.cell import Cell, ServerConfig
from harness.domain.plan import MapPlan
from harness.domain.result import CellResult, Verdict, WrkResult
from harness.infra.server import read_log
from harness.report import comparisons, layers

CONFIG = ServerConfig(ServerName.uvicorn, SessionStyle.dependency, Pool(5, 10), 40, 1, 10)


def cell(mode: Mode = Mode.sync, **changes: object) -> Cell:
    return Cell(replace(CONFIG, **changes), mode, Workload.list, 24, 3.0)  # type: ignore[arg-type]


def test_a_cell_names_its_driver_and_keeps_the_old_id_for_the_default() -> None:
    assert cell().driver is Driver.psycopg2 and cell(Mode.async_).driver is Driver.asyncpg
    assert cell().id == "uvicorn-sync-dependency-p5+10-pt30-t40-w1-list-r10-d3-c24"
    assert cell(driver=Driver.psycopg2) == cell()
    assert cell(driver=Driver.psycopg, layer=Layer.core).id == (
        "uvicorn-sync-dependency-p5+10-pt30-t40-w1-list-r10-d3-drpsycopg-lcore-c24"
    )
    assert cell(Mode.async_).variant == (
        "uvicorn/async/asyncpg/dependency/pool 5+10/tokens 40/workers 1/list"
    )
    assert "/psycopg/layer driver/" in cell(driver=Driver.psycopg, layer=Layer.driver).variant


def test_records_round_trip_and_old_records_read_as_the_default_driver() -> None:
    new = cell(Mode.async_, driver=Driver.psycopg, layer=Layer.driver)
    data = new.to_json()
    assert data["server"]["driver"] == "psycopg" and data["server"]["layer"] == "driver"
    assert Cell.from_json(data) == new
    old = cell(Mode.async_).to_json()
    del old["server"]["driver"], old["server"]["layer"]
    assert Cell.from_json(old) == cell(Mode.async_)


def test_old_map_plans_run_the_default_drivers_through_the_orm() -> None:
    plan = MapPlan((ServerName.granian,), (Pool(5, 10),), (40,), (1,))
    data = plan.to_json()
    assert data["drivers"] == {"sync": "psycopg2", "async": "asyncpg"} and data["layer"] == "orm"
    del data["drivers"], data["layer"]
    assert MapPlan.from_json(data) == plan
    labels = [line.label for line in plan.lines()]
    assert labels[0] == "sync psycopg2 dependency" and labels[-1] == "async asyncpg dependency"
    psycopg = replace(plan, drivers=((Mode.sync, Driver.psycopg), (Mode.async_, Driver.psycopg)))
    assert {line.cell(8).driver for line in psycopg.lines()} == {Driver.psycopg}


def record(c: Cell, rps: float, repeat: int) -> CellResult:
    requests = int(rps * 3)
    wrk = WrkResult(requests, 3.0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0)
    return CellResult(c, Verdict.ok, wrk=wrk, repeat=repeat)


def test_comparisons_pair_the_default_drivers_by_mode_and_each_layer_with_the_driver_alone() -> (
    None
):
    cells = {
        ("sync", "psycopg2", "orm"): cell(),
        ("async", "asyncpg", "orm"): cell(Mode.async_),
        ("sync", "psycopg", "orm"): cell(driver=Driver.psycopg),
        ("sync", "psycopg2", "driver"): cell(layer=Layer.driver),
    }
    rates = {k: rps for k, rps in zip(cells, (400.0, 500.0, 440.0, 1600.0), strict=True)}
    records = [record(c, rates[k] * (1 + 0.01 * n), n) for k, c in cells.items() for n in (1, 2, 3)]
    found = {c.label: c for c in comparisons.comparisons(records)}
    # Sync and async on their own default drivers differ in the mode alone; psycopg against
    # psycopg2 in the driver; the ORM against the driver alone in the layer (A: the driver).
    assert set(found) == {
        "async / sync · asyncpg/psycopg2 orm",
        "psycopg / psycopg2 · sync orm",
        "orm / driver · sync psycopg2",
    }
    layer = found["orm / driver · sync psycopg2"]
    ratio = comparisons.at_level(layer, records, 24)
    assert not isinstance(ratio, str) and ratio is not None
    assert abs(ratio.value - 0.25) < 0.01 and ratio.significant
    table = layers.table(records, [])
    assert "| uvicorn sync psycopg2 driver dependency list | 24 | 1,632.0 | 1 (itself) |" in table
    assert "| uvicorn sync psycopg2 orm dependency list | 24 | 408.0 | 0.25× [" in table


def test_granians_log_counts_pool_timeouts_and_errors_like_the_others(tmp_path: Path) -> None:
    """Recorded lines: granian prints an exception without its module, uvicorn with it."""
    log = tmp_path / "server.log"
    log.write_text(
        "[ERROR] Application callable raised an exception\n"
        "Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\n'
        "TimeoutError: QueuePool limit of size 5 overflow 10 reached, connection timed out, "
        "timeout 30.00 (Background on this error at: https://sqlalche.me/e/21/3o7r)\n"
        "[ERROR] Application callable raised an exception\n"
        '    raise PoolExhausted(self.settings, "psycopg2")\n'
        "PoolExhausted: psycopg2 pool limit of size 5 overflow 10 reached, connection timed "
        "out, timeout 30.00\n"
        "ERROR:    Exception in ASGI application\n"
        "app.common.PoolExhausted: asyncpg pool limit of size 1 overflow 0 reached, ...\n"
        "ERROR:    Exception in ASGI application\n"
        "sqlalchemy.exc.TimeoutError: QueuePool limit of size 1 overflow 1 reached, ...\n"
        "psycopg_pool.PoolTimeout: couldn't get a connection after 30.00 sec\n"
    )
    counts = read_log(log)
    assert (counts.pool_timeouts, counts.server_errors) == (4, 4)
