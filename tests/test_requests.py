"""What a foreign service is sent, and the shape its answers keep: parsed, rendered for wrk and the
open loop, recorded; and the command line's refusals around TARGET, REQUESTS, APP. Nothing is
started here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.domain.axes import Mode, ServerName, Verdict, Workload
from harness.domain.cell import Cell, Target, UserApp
from harness.domain.errors import UsageError
from harness.domain.parse import parse_target
from harness.domain.requests import Request, Requests, parse_requests, same_shape, shape
from harness.domain.result import CellResult, Checks
from harness.domain.rules import Judgement, Rule, by_answers
from harness.infra.wrk import WrkCommand, lua_string, mix_file, render_lua
from harness.report.stats import by_cell, not_measured
from loadgen.openloop import encode
from tests.test_cli import cli, refused

MIX = Requests(
    (
        Request(path="/items?limit=10", weight=3),
        Request("POST", "/orders", (("Content-Type", "application/json"),), '{"a": "é"}', 1),
    ),
    "mix.toml",
)


def test_a_target_may_carry_a_path_and_a_query() -> None:
    assert parse_target("http://127.0.0.1:8001") == ("http://127.0.0.1:8001", "")
    assert parse_target("http://127.0.0.1:8001/") == ("http://127.0.0.1:8001", "")
    assert parse_target("http://localhost:9/items?x=1") == ("http://localhost:9", "/items?x=1")


def test_a_remote_target_needs_to_be_allowed() -> None:
    with pytest.raises(UsageError, match="say so with ALLOW_REMOTE=1"):
        parse_target("http://10.1.2.3:80/items")
    assert parse_target("http://10.1.2.3:80/items", remote=True) == ("http://10.1.2.3:80", "/items")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "no requests"),
        ({"request": [{"path": "items"}]}, "request 1: path 'items' must start with /"),
        ({"request": [{"path": "/", "method": "FETCH"}]}, "method 'FETCH'; choose from GET"),
        ({"request": [{"path": "/", "method": "HEAD"}]}, "method 'HEAD'; choose from GET"),
        ({"request": [{"path": "/é"}]}, "must start with / and be printable ASCII"),
        ({"request": [{"path": "/", "weight": 0}]}, "weight 0 must be a whole number 1-100"),
        ({"request": [{"path": "/", "headers": {"Host": "x"}}]}, "header 'Host' cannot be set"),
        ({"request": [{"path": "/", "headers": {"X": "a\nb"}}]}, "header 'X' needs a one-line"),
        ({"request": [{"path": "/", "verb": "GET"}]}, "unknown key 'verb'; choose from method"),
        ({"request": [{"path": "/"}] * 21}, "21 requests; at most 20"),
    ],
)
def test_a_bad_requests_file_is_named_in_one_line(data: object, message: str) -> None:
    with pytest.raises(UsageError, match=r"^REQUESTS: f\.toml") as caught:
        parse_requests(data, "f.toml")
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_body_gets_a_json_content_type_unless_it_has_one() -> None:
    given = {"request": [{"method": "post", "path": "/o", "body": {"a": 1}}]}
    (r,) = parse_requests(given, "f").items
    assert (r.method, r.body, r.headers) == (
        "POST",
        '{"a": 1}',
        (("Content-Type", "application/json"),),
    )


def test_the_weights_are_spread_over_one_cycle() -> None:
    three = Requests((Request(path="/a", weight=3), Request(path="/b", weight=1)))
    assert three.order() == [0, 0, 1, 0] or sorted(three.order()) == [0, 0, 0, 1]
    mixed = Requests((Request(path="/a", weight=2), Request(path="/b", weight=2)))
    assert mixed.order() == [0, 1, 0, 1]  # not a, a, b, b


def test_shapes_keep_keys_and_kinds_not_values() -> None:
    a = shape(b'{"count": 2, "items": [{"id": 1, "name": "x"}]}', "application/json")
    b = shape(b'{"count": 0, "items": []}', "application/json; charset=utf-8")
    c = shape(b'{"count": 1, "items": [{"id": 1}]}', "application/json")
    assert a == {"count": "number", "items": [{"id": "number", "name": "text"}]}
    assert same_shape(a, b) and same_shape(b, a)  # an empty list fits any list
    assert not same_shape(a, c)  # a key went missing
    assert shape(b"<html>", "text/html; charset=utf-8") == {"media": "text/html"}
    error = shape(b'{"detail": "busy"}', "application/json")
    assert not same_shape([], error) and not same_shape(a, error)  # an error object in its place
    assert not same_shape(a, "null")  # the answer itself must be there
    assert same_shape({"item": {"id": "number"}}, {"item": "null"})  # a field may be empty
    assert shape(b"{", "application/json") == {"media": "invalid JSON"}


def test_wrk_gets_a_script_only_for_more_than_one_plain_get(tmp_path: Path) -> None:
    plain = WrkCommand(url="http://127.0.0.1:1/items", connections=1, duration_s=1, threads=1,
                       timeout_s=1, requests=Requests((Request(path="/items"),)))  # fmt: skip
    assert plain.script.name == "wrk_report.lua"
    mixed = WrkCommand(url="http://127.0.0.1:1/items", connections=1, duration_s=1, threads=1,
                       timeout_s=1, requests=MIX)  # fmt: skip
    text = mixed.script.read_text()
    assert text == render_lua(MIX, "127.0.0.1:1") and text.endswith(
        (Path(__file__).parent.parent / "harness" / "wrk_report.lua").read_text()
    )
    assert 'wrk.format("POST", "/orders", {["Host"] = "127.0.0.1:1", ["Content-Type"]' in text
    assert "local built, order, next_i = nil, {1, 1, 2, 1}, 0" in text or "{1, 2, 1, 1}" in text


def test_lua_strings_escape_what_could_break_out() -> None:
    assert lua_string('a"b\\c') == '"a\\034b\\092c"'
    assert lua_string("é\n") == '"\\195\\169\\010"'


def test_the_open_loop_sends_each_request_whole() -> None:
    data = json.loads(mix_file(MIX).read_text())
    assert data["order"] == MIX.order()
    wire = encode(data["items"][1], "127.0.0.1:1")
    body = '{"a": "é"}'.encode()
    assert wire == (
        b"POST /orders HTTP/1.1\r\nHost: 127.0.0.1:1\r\nUser-Agent: openloop\r\n"
        b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode()
        + b"\r\n\r\n" + body
    )  # fmt: skip


def test_foreign_cells_round_trip_and_name_only_what_is_known() -> None:
    target = Cell(Target("http://127.0.0.1:9", MIX), Mode.sync, Workload.requests, 4, 2.0)
    app = UserApp("main:app", ServerName.hypercorn, 8, 2, MIX, "/srv", "/venv/bin/python",
                  (("DB", "x"),))  # fmt: skip
    started = Cell(app, Mode.async_, Workload.requests, 4, 2.0)
    for cell in (target, started):
        assert Cell.from_json(json.loads(json.dumps(cell.to_json()))) == cell
        assert "unknown" not in cell.variant
    assert (
        target.variant
        == "target http://127.0.0.1:9/sync/mix (3× GET /items?limit=10, 1× POST /orders)"
    )
    assert started.variant.startswith("hypercorn app main:app/async/tokens 8/workers 2/mix")
    assert started.known("tokens") == 8 and started.known("pool") is None
    assert target.id != Cell(Target("http://127.0.0.1:9"), Mode.sync, Workload.list, 4, 2.0).id


def test_answers_of_another_shape_turn_ok_into_errors() -> None:
    ok = Judgement(Verdict.ok, Rule.throughput)
    assert by_answers(ok, Checks(4, 4, 0)) == ok
    judged = by_answers(ok, Checks(4, 3, 2, "GET / answered 500"))
    assert judged.verdict is Verdict.errors and judged.rule is Rule.answers
    assert "2 of 3 answers sampled under load differed" in judged.reason
    collapsed = Judgement(Verdict.collapsed, Rule.throughput, "0 req/s")
    assert by_answers(collapsed, Checks(4, 0, 0)) == collapsed


def test_rounds_not_measured_count_for_no_verdict_but_are_told() -> None:
    cell = Cell(Target("http://127.0.0.1:9"), Mode.sync, Workload.list, 48, 2.0)
    higher = Cell(Target("http://127.0.0.1:9"), Mode.sync, Workload.list, 96, 2.0)
    skipped = dict(verdict=Verdict.not_measured, judgement="frozen since round 1 at 48 connections")
    records = [
        CellResult(cell, Verdict.collapsed, repeat=1),
        *(CellResult(cell, repeat=n, **skipped) for n in (2, 3)),  # type: ignore[arg-type]
        CellResult(higher, repeat=1, **skipped),  # type: ignore[arg-type]
    ]
    (stats,) = by_cell(records)
    assert stats.n == 1 and stats.verdict == (
        "collapsed; 2 not measured (frozen since round 1 at 48 connections)"
    )
    assert [r.cell for r in not_measured(records)] == [higher]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--requests", "x.toml"], "REQUESTS: only with TARGET or APP"),
        (["--app-path", "/items"], "APP_PATH: only with APP"),
        (["--allow-remote"], "ALLOW_REMOTE: only with TARGET"),
        (["--target", "http://127.0.0.1:1/items", "--mode", "sync", "--workload", "insert"],
         "WORKLOAD: names the demo app's endpoints"),
        (["--target", "http://127.0.0.1:1/items", "--mode", "sync", "--requests", "x.toml"],
         "REQUESTS: TARGET has a path (/items): give the path or REQUESTS"),
        (["--target", "http://127.0.0.1:1", "--mode", "sync", "--requests", "/nonexistent.toml"],
         "REQUESTS: cannot read /nonexistent.toml"),
        (["--app", "main:app", "--mode", "sync"], "APP: say what to send it: APP_PATH=/items"),
        (["--app", "main:app", "--app-path", "/x"], "MODE: say how your app reaches its database"),
        (["--app", "main:app", "--app-path", "/x", "--mode", "sync", "--pools", "5+10"],
         "APP: POOLS is the demo app's setting"),
        (["--app", "main:", "--app-path", "/x", "--mode", "sync"],
         "APP: 'main:' is not module:attr"),
        (["--app", "m:a", "--app-path", "/x", "--mode", "sync", "--app-python", "/nope"],
         "APP_PYTHON: '/nope' is not an executable file"),
        (["--app", "m:a", "--app-path", "/x", "--mode", "sync", "--app-env", "A"],
         "APP_ENV: 'A' is not NAME=value"),
        (["--app", "m:a", "--app-path", "/x", "--mode", "sync", "--app-env", "SYNCASYNC_APP=y"],
         "APP_ENV: SYNCASYNC_APP is the harness's to set"),
    ],
)  # fmt: skip
def test_bad_foreign_input_is_one_line_and_exit_code_2(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert message in refused(capsys, "run", "--dry-run", *args)


def test_a_requests_file_plans_cells_of_its_mix(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    mix = tmp_path / "mix.json"
    mix.write_text(json.dumps({"request": [{"path": "/a", "weight": 2}, {"path": "/b"}]}))
    target = ["--target", "http://127.0.0.1:1", "--requests", str(mix), "--mode", "async"]
    code, out, err = cli(capsys, "run", "--dry-run", *target, "--connections", "1,2")
    assert code == 0, err
    assert "-requests-q" in out
    assert len([k for k in out.splitlines() if k.startswith("target-")]) == 2 * 5


def test_a_foreign_cell_is_replayed_with_its_own_settings() -> None:
    from harness.run.options import Options
    from harness.run.replay import replay

    options = Options(warmup_s=1.0)
    path = Requests((Request(path="/items"),))
    target = Cell(Target("http://127.0.0.1:9", path), Mode.sync, Workload.requests, 4, 2.0)
    command = replay(target, options).command  # type: ignore[union-attr]
    assert "TARGET=http://127.0.0.1:9/items" in command and "WORKLOAD" not in command
    app = UserApp("main:app", ServerName.gunicorn, 8, 2, MIX, "/srv", "/venv/bin/python",
                  (("DB", "postgresql://u:secret@h/d"),))  # fmt: skip
    command = replay(Cell(app, Mode.async_, Workload.requests, 4, 2.0), options).command  # type: ignore[union-attr]
    for word in ("APP=main:app", "APP_DIR=/srv", "APP_PYTHON=/venv/bin/python", "SERVER=gunicorn",
                 "TOKENS=8", "WORKERS=2", "REQUESTS=mix.toml", "MODES=async"):  # fmt: skip
        assert word in command, command
    assert "secret" not in command and "u:***@h" in command
