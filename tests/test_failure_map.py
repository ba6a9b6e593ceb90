"""The failure map: prediction, agreement, report and charts from raw records, and a small
real map whose measured threshold must sit next to the prediction."""

import shutil
import struct
from pathlib import Path

import pytest

from harness.domain.axes import Mode, Pool, ServerName, SessionStyle
from harness.domain.cell import ServerConfig
from harness.domain.plan import MapLine, MapPlan
from harness.domain.rules import agreement
from harness.domain.search import Threshold, bracket
from harness.report import files, map_summary
from harness.report.map_summary import threshold_of
from harness.store.rundir import RunDir
from tests.cli import harness

FIXTURES = Path(__file__).parent / "fixtures"


def line(mode: Mode = Mode.sync, style: SessionStyle = SessionStyle.dependency, **kw) -> MapLine:
    values = {"pool": Pool(5, 10), "tokens": 40, "workers": 1, **kw}
    config = ServerConfig(ServerName.uvicorn, style, rows=10, **values)  # type: ignore[arg-type]
    return MapLine(config, mode, duration_s=3)


def test_prediction_is_workers_times_tokens_plus_capacity() -> None:
    assert line().predicted == 55
    assert line(pool=Pool(80, 0)).predicted == 120
    assert line(tokens=80).predicted == 95
    assert line(workers=2).predicted == 110
    assert line(style=SessionStyle.context).predicted is None
    assert line(mode=Mode.async_).predicted is None


@pytest.mark.parametrize(
    ("guess", "found", "verdict"),
    [
        (55, Threshold(48, 56, 400), "agrees"),
        (55, Threshold(60, 68, 400), "agrees"),  # within one step (8) of the bracket
        (55, Threshold(90, 100, 400), "DISAGREES: collapsed later than ~55"),
        (110, Threshold(48, 56, 400), "DISAGREES: collapsed earlier than ~110"),
        (55, bracket({400: False}, 400), "DISAGREES: predicted ~55, no collapse up to 400"),
        (500, bracket({400: False}, 400), "agrees: predicted beyond the ceiling"),
        (
            500,
            bracket({32: False}, 400),
            "agrees: predicted beyond 32, the highest level that answered",
        ),
        (55, bracket({}, 400), "no probe answered"),
        (None, bracket({400: False}, 400), "agrees: none expected"),
        (None, Threshold(100, 128, 400), "DISAGREES: no collapse expected, collapsed at 128"),
    ],
)
def test_agreement_is_judged_within_one_search_step(
    guess: int | None, found: Threshold, verdict: str
) -> None:
    assert agreement(guess, found) == verdict


def test_lines_are_every_variant_at_baseline_plus_one_factor_at_a_time() -> None:
    plan = MapPlan((ServerName.uvicorn,), (Pool(5, 10), Pool(20, 0)), (40, 80), (1, 2))
    variants = [
        (x.mode, x.style, str(x.config.pool), x.config.tokens, x.config.workers)
        for x in plan.lines()
    ]
    assert variants == [
        (Mode.sync, SessionStyle.dependency, "5+10", 40, 1),
        (Mode.sync, SessionStyle.context, "5+10", 40, 1),
        (Mode.sync, SessionStyle.limited, "5+10", 40, 1),
        (Mode.async_, SessionStyle.dependency, "5+10", 40, 1),
        (Mode.sync, SessionStyle.dependency, "20+0", 40, 1),
        (Mode.sync, SessionStyle.dependency, "5+10", 80, 1),
        (Mode.sync, SessionStyle.dependency, "5+10", 40, 2),
    ]
    assert MapPlan.from_json(plan.to_json()) == plan


def test_map_summary_matches_the_golden_file() -> None:
    run = RunDir.open(FIXTURES / "map")
    meta = run.metadata()
    plan = MapPlan.from_json(meta["plan"])
    text = map_summary.summary(meta, run.records(), "fixture-map", plan, run.pgbench())
    assert text == (FIXTURES / "golden_map_summary.md").read_text()
    assert "| sync psycopg2 dependency | 1+1 | 2 | 4 | 1 | ~6 | fine at 4, collapsed at 6 |" in text


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_charts_are_written_as_valid_png(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "map", tmp_path / "map")
    run = RunDir.open(tmp_path / "map")
    files.write(run)
    for name in ("collapse-uvicorn.png", "throughput-uvicorn.png"):
        width, height = png_size(tmp_path / "map" / "charts" / name)
        assert width > 400 and height > 300
    assert (tmp_path / "map" / "summary.md").read_text().startswith("# syncasync-bench failure map")


@pytest.mark.integration
def test_small_real_map_measures_the_predicted_threshold(tmp_path: Path) -> None:
    """4 tokens, pool 1+1: sync dependency collapses near 4 + 2 = 6; context never does."""
    out = tmp_path / "map"
    done = harness(
        "map",
        "--pools",
        "1+1",
        "--tokens",
        "4",
        "--workers",
        "1",
        "--variants",
        "sync-dependency,sync-context",
        "--start",
        "2",
        "--ceiling",
        "16",
        "--duration",
        "1s",
        "--warmup",
        "1s",
        "--pool-timeout",
        "2s",
        "--ceiling-levels",
        "4",
        "--boundary-probes",
        "1",
        "--onsets",
        "cold",  # warm ramps: tests/test_thresholds.py resumes a recorded map with one
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    run = RunDir.open(out)
    plan = MapPlan.from_json(run.metadata()["plan"])
    dependency, context = plan.lines()
    for onset in plan.onsets:
        found = threshold_of(dependency, run.records(), plan.ceiling, onset)
        assert agreement(dependency.predicted, found) == "agrees", (onset, found)
        assert threshold_of(context, run.records(), plan.ceiling, onset).collapsed_at is None
        probed = [
            r.cell.connections for r in run.records() if r.cell.variant == context.variant_of(onset)
        ]
        assert max(probed) == 16
    assert [p.connections for p in run.pgbench()] == [4]
    summary = (out / "summary.md").read_text()
    row = "| sync psycopg2 context | cold | 1+1 | 2 | 4 | 1 | none | no collapse up to 16 |"
    assert row in summary
    png_size(out / "charts" / "collapse-uvicorn.png")


def test_pgbench_output_is_parsed() -> None:
    from harness.infra import pgbench

    r = pgbench.parse((FIXTURES / "pgbench_c200.txt").read_text(), 200, 2.0)
    assert (r.transactions, r.failed, r.tps, r.latency_avg_ms) == (21236, 0, 17736.440635, 11.276)
    with pytest.raises(ValueError):
        pgbench.parse("pgbench: error: connection refused", 200, 2.0)


def test_ceiling_cells_keep_the_ids_their_records_have() -> None:
    run = RunDir.open(FIXTURES / "map")
    plan = MapPlan.from_json(run.metadata()["plan"])
    on_record = {r.cell.id for r in run.records()}
    assert {c.id for c in plan.http_ceiling_cells()} <= on_record
    other = MapPlan(
        plan.servers,
        plan.pools,
        plan.tokens,
        plan.workers,
        variants=((Mode.sync, SessionStyle.context),),
    )
    assert all("-async-context-" in c.id for c in other.http_ceiling_cells())
