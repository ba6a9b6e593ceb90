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
        # make bench's names, refused under their own names
        ("POOLS", "5+10,20+0", "POOLS: '5+10,20+0' is not one pool SIZE+OVERFLOW"),
        ("POOLS", "0+1", "POOLS: Input should be greater than or equal to 1"),
        ("TOKENS", "0", "TOKENS: Input should be greater than or equal to 1"),
        ("STYLE", "magic", "STYLE: Input should be"),
        ("DRIVERS", "mysql", "DRIVERS: 'mysql' is not a driver"),
        ("POOL_TIMEOUT", "soon", "POOL_TIMEOUT: 'soon' is not a duration"),
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


def test_make_benchs_names_set_what_the_old_ones_did(monkeypatch: pytest.MonkeyPatch) -> None:
    given = {"POOLS": "20+0", "TOKENS": "7", "STYLE": "context", "POOL_TIMEOUT": "500ms"}
    s = Settings(DATABASE_URL=URL, DRIVERS="psycopg", **given)  # type: ignore[arg-type]
    assert (s.POOL_SIZE, s.MAX_OVERFLOW, s.THREADPOOL_TOKENS, s.POOL_TIMEOUT) == (20, 0, 7, 0.5)
    assert s.SESSION_STYLE is SessionStyle.context
    assert (s.SYNC_DRIVER, s.ASYNC_DRIVER) == ("psycopg", "psycopg")  # psycopg drives both apps
    s = Settings(DATABASE_URL=URL, DRIVERS="psycopg2,psycopg")  # type: ignore[arg-type]
    assert (s.SYNC_DRIVER, s.ASYNC_DRIVER) == ("psycopg2", "psycopg")  # each takes what fits
    s = Settings(DATABASE_URL=URL, POOLS="", TOKENS="")  # type: ignore[arg-type]
    assert (s.POOL_SIZE, s.THREADPOOL_TOKENS) == (5, 40)  # empty: unset (compose passes all)


def test_an_old_name_is_still_read_with_a_note(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", URL)
    monkeypatch.setenv("POOL_SIZE", "3")
    monkeypatch.setenv("SESSION_STYLE", "context")
    s = load_settings()
    assert s.POOL_SIZE == 3 and s.SESSION_STYLE is SessionStyle.context
    note = capsys.readouterr().err
    assert note == (
        "note: POOL_SIZE, SESSION_STYLE: old names, still read; set POOLS, STYLE instead "
        "(make bench's names)\n"
    )


def test_a_setting_given_by_both_its_names_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", URL)
    monkeypatch.setenv("TOKENS", "40")
    monkeypatch.setenv("THREADPOOL_TOKENS", "20")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert str(info.value) == (
        "invalid settings: TOKENS and THREADPOOL_TOKENS set the same thing; THREADPOOL_TOKENS is "
        "its old name: give TOKENS only"
    )


@pytest.mark.parametrize(
    ("drivers", "sync", "async_"),
    [
        ("psycopg,asyncpg", "psycopg", "asyncpg"),
        ("asyncpg,psycopg", "psycopg", "asyncpg"),
        ("psycopg,psycopg2", "psycopg2", "psycopg"),
        ("psycopg2", "psycopg2", "asyncpg"),
    ],
)
def test_drivers_in_any_order(drivers: str, sync: str, async_: str) -> None:
    s = Settings(DATABASE_URL=URL, DRIVERS=drivers)  # type: ignore[arg-type]
    assert sync == s.SYNC_DRIVER and async_ == s.ASYNC_DRIVER


def test_a_driver_left_driving_no_app_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", URL)
    monkeypatch.setenv("DRIVERS", "psycopg2,asyncpg,psycopg")
    with pytest.raises(SettingsError, match="psycopg would drive no app"):
        load_settings()
