import pytest

from servers.registry import APP_FACTORY, REGISTRY, Launch, Mode, ServerName, server_argv


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
