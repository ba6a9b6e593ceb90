import pytest

from servers.registry import (
    APP_FACTORY,
    REGISTRY,
    SERVERS_2021,
    Launch,
    Mode,
    ServerName,
    Stack,
    server_argv,
)


@pytest.mark.parametrize("server", list(ServerName))
@pytest.mark.parametrize("mode", list(Mode))
def test_argv_binds_loopback_with_explicit_port_and_workers(server: str, mode: Mode) -> None:
    argv = server_argv(server, Launch(mode=mode, port=8123, workers=3, python="py"))
    assert argv[:3] == ["py", "-m", server]
    joined = " ".join(argv)
    assert "127.0.0.1" in joined and "0.0.0.0" not in joined
    assert "8123" in joined
    assert argv[argv.index("--workers") + 1] == "3"
    assert "--reload" not in argv
    assert any(APP_FACTORY[mode] in a for a in argv)


def test_every_server_name_is_registered() -> None:
    assert set(REGISTRY) == set(ServerName)


def test_unknown_server_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown server 'nginx'; choose from uvicorn, gunicorn"):
        server_argv("nginx", Launch(mode=Mode.sync, port=8000))


@pytest.mark.parametrize(("port", "workers"), [(0, 1), (70000, 1), (8000, 0)])
def test_launch_refuses_nonsense(port: int, workers: int) -> None:
    with pytest.raises(ValueError):
        Launch(mode=Mode.sync, port=port, workers=workers)


# What the current stack runs, written out: the 2021 stack must not change it.
CURRENT_ARGV = {
    "uvicorn": "py -m uvicorn --factory app.sync_app:create_app --host 127.0.0.1 --port 8123 "
    "--workers 3 --loop uvloop --http httptools --no-access-log --log-level warning",
    "gunicorn": "py -m gunicorn --config {cfg}/gunicorn.conf.py --bind 127.0.0.1:8123 "
    "--workers 3 app.sync_app:create_app()",
    "hypercorn": "py -m hypercorn --config {cfg}/hypercorn.toml --bind 127.0.0.1:8123 "
    "--workers 3 app.sync_app:create_app()",
    "granian": "py -m granian --interface asgi --factory app.sync_app:create_app --host 127.0.0.1 "
    "--port 8123 --workers 3 --blocking-threads 1 --runtime-threads 1 --loop uvloop --http 1 "
    "--no-ws --log-level warning",
}


@pytest.mark.parametrize("server", list(ServerName))
def test_current_stack_argv_is_unchanged(server: str) -> None:
    launch = Launch(mode=Mode.sync, port=8123, workers=3, python="py")
    assert launch.stack is Stack.current
    expected = CURRENT_ARGV[server].format(cfg=launch.config_dir)
    assert " ".join(server_argv(server, launch)) == expected


@pytest.mark.parametrize("server", SERVERS_2021)
def test_2021_argv_differs_only_where_the_old_versions_need_it(server: str) -> None:
    current = server_argv(server, Launch(mode=Mode.async_, port=8123, python="py"))
    old = server_argv(server, Launch(mode=Mode.async_, port=8123, python="py", stack="2021"))
    added = {
        "uvicorn": [],  # uvicorn 0.13.4 already has --factory
        "gunicorn": ["--worker-class", "uvicorn.workers.UvicornWorker"],  # no uvicorn-worker
        "hypercorn": ["--log-level", "WARNING"],  # 0.12 puts its CLI default over the file's
    }[server]
    assert old == [*current[:5], *added, *current[5:]]


def test_unknown_stack_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown stack '2020'; choose from current, 2021"):
        Launch(mode=Mode.sync, port=8000, stack="2020")  # type: ignore[arg-type]


def test_granian_is_not_in_the_2021_stack() -> None:
    assert ServerName.granian not in SERVERS_2021
    with pytest.raises(ValueError, match=r"granian is not part of the 2021 stack .*choose uvicorn"):
        server_argv("granian", Launch(mode=Mode.sync, port=8000, stack=Stack.y2021))
