import pytest

from app.settings import SessionStyle, Settings, SettingsError, load_settings

URL = "postgresql://bench@127.0.0.1:5432/bench"


def test_defaults_are_sqlalchemys_and_anyios(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", URL)
    s = load_settings()
    assert (s.POOL_SIZE, s.MAX_OVERFLOW, s.POOL_TIMEOUT, s.THREADPOOL_TOKENS) == (5, 10, 30.0, 40)
    assert s.SESSION_STYLE is SessionStyle.dependency
    assert s.pool_capacity == 15


def test_driver_is_named_explicitly() -> None:
    s = Settings(DATABASE_URL=URL)
    assert s.url_for("psycopg2").drivername == "postgresql+psycopg2"
    assert s.url_for("asyncpg").drivername == "postgresql+asyncpg"
    assert s.url_for("asyncpg").port == 5432


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("POOL_SIZE", "0", "POOL_SIZE"),
        ("POOL_SIZE", "five", "POOL_SIZE"),
        ("MAX_OVERFLOW", "-1", "MAX_OVERFLOW"),
        ("POOL_TIMEOUT", "0", "POOL_TIMEOUT"),
        ("THREADPOOL_TOKENS", "0", "THREADPOOL_TOKENS"),
        ("SESSION_STYLE", "magic", "SESSION_STYLE"),
        ("DATABASE_URL", "mysql://x@y/z", "postgresql"),
        ("DATABASE_URL", "not a url", "DATABASE_URL"),
    ],
)
def test_nonsense_fails_with_a_clear_message(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", URL)
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    text = str(info.value)
    assert text.startswith("invalid settings: ")
    assert message in text
    assert "\n" not in text


def test_missing_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with pytest.raises(SettingsError, match="DATABASE_URL: Field required"):
        load_settings()
