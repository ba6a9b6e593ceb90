"""The one model of a benchmark cell: what is measured, against which server.

A cell measures either a server the harness starts (`ServerConfig`: every setting known) or a
server someone else started (`Target`: only its URL is known). The two are different types, so
code that starts servers never has to narrow optional settings.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from harness.domain.axes import (
    DEFAULT_DRIVER,
    DIRECT,
    Driver,
    Latency,
    Layer,
    Load,
    Mode,
    Onset,
    Pool,
    ServerName,
    SessionStyle,
    Stack,
    Workload,
    driver_mode,
)
from harness.domain.requests import Requests

SEED_ROWS = 10  # the seed's data set; a cell's variant names its rows only when they differ


def shown(value: object) -> str:
    """A parameter as text; None means the harness could not know it (target mode)."""
    return "unknown" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class ServerConfig:
    """A server the harness starts, with every setting that can change what it measures."""

    name: ServerName
    style: SessionStyle
    pool: Pool
    tokens: int
    workers: int
    rows: int
    pool_timeout_s: float = 30.0
    # Which versions run the app. Under `2021` there is no token limiter: `tokens` then holds
    # the size of asyncio's default executor on the machine that planned the run, not a setting.
    stack: Stack = Stack.current
    # The apps' side channel (GET /_occupancy), sampled during the measured run; off only to
    # measure what it costs.
    occupancy: bool = True
    # One-way delay of the relay between the app and PostgreSQL (direct: no relay).
    db_latency: Latency = DIRECT
    # The app's driver; None until a mode is known (a Cell fills in its mode's default driver,
    # so every cell, and every record, names its driver).
    driver: Driver | None = None
    layer: Layer = Layer.orm

    @property
    def tokens_label(self) -> str:
        """T as a reader should take it: tokens of AnyIO's limiter, or 2021's executor threads."""
        return f"{self.tokens} (executor)" if self.stack is Stack.y2021 else str(self.tokens)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "pool": asdict(self.pool), "db_latency": str(self.db_latency)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ServerConfig:
        """A record's settings; records written before drivers and layers were settings ran
        the mode's default driver through the ORM."""
        return cls(
            name=ServerName(data["name"]),
            style=SessionStyle(data["style"]),
            pool=Pool(**data["pool"]),
            tokens=int(data["tokens"]),
            workers=int(data["workers"]),
            rows=int(data["rows"]),
            pool_timeout_s=float(data["pool_timeout_s"]),
            stack=Stack(data["stack"]),
            occupancy=bool(data.get("occupancy", True)),
            db_latency=Latency.parse(data.get("db_latency", "0")),
            driver=Driver(data["driver"]) if data.get("driver") else None,
            layer=Layer(data.get("layer", Layer.orm)),
        )


@dataclass(frozen=True)
class Target:
    """A server the harness did not start, on this machine's loopback: its settings are unknown.
    `requests`: what it is sent, where it is not the demo app (whose workload says the path)."""

    url: str
    requests: Requests | None = None


# In an APP_ENV value: the URL of the PostgreSQL the harness starts for the run.
DATABASE_TOKEN = "{database}"


@dataclass(frozen=True)
class UserApp:
    """A user's ASGI app (APP=module:attr), started by the harness under a server it names, in
    the user's interpreter and directory: what the harness set is known (server, threadpool
    tokens, workers, environment), the app's own settings are not."""

    app: str  # module:attr
    name: ServerName
    tokens: int
    workers: int
    requests: Requests
    directory: str  # APP_DIR: where its modules are
    python: str  # APP_PYTHON: an interpreter whose environment has the app and the servers
    env: tuple[tuple[str, str], ...] = ()  # APP_ENV: set for the app, as the user gave them
    # Where its sync code runs: AnyIO's threadpool (Starlette 0.15 and later), whose tokens
    # TOKENS sets, or (before) the loop's default executor, which gets TOKENS threads.
    executor: bool = False

    @property
    def tokens_label(self) -> str:
        return f"{self.tokens} (executor)" if self.executor else str(self.tokens)

    @property
    def needs_database(self) -> bool:
        """Whether APP_ENV asks for the harness's throwaway PostgreSQL (`{database}`)."""
        return any(DATABASE_TOKEN in v for _, v in self.env)

    def environment(self, database_url: str | None) -> dict[str, str]:
        """APP_ENV as the app gets it: `{database}` replaced by the throwaway's URL."""
        return {k: v.replace(DATABASE_TOKEN, database_url or "") for k, v in self.env}

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "requests": self.requests.to_json(),
            "env": [list(e) for e in self.env],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UserApp:
        return cls(
            app=data["app"],
            name=ServerName(data["name"]),
            tokens=int(data["tokens"]),
            workers=int(data["workers"]),
            requests=Requests.from_json(data["requests"]),
            directory=data["directory"],
            python=data["python"],
            env=tuple((str(k), str(v)) for k, v in data.get("env", [])),
            executor=bool(data.get("executor", False)),
        )


# What a report may ask of any cell's server; None where it is a target's.
CONFIG_FIELDS = tuple(f.name for f in fields(ServerConfig))
OWN_FIELDS = (
    "mode",
    "workload",
    "connections",
    "duration_s",
    "target",
    "stack",
    "driver",
    "onset",
    "rate",
    "app",
    "sent",
)


@dataclass(frozen=True)
class Cell:
    """One measurement: a server (started, or a target), an app mode, a load."""

    server: ServerConfig | Target | UserApp
    mode: Mode
    workload: Workload
    connections: int
    duration_s: float
    onset: Onset = Onset.fresh
    # Requests per second an open loop sends (None: wrk's closed loop); `connections` is then
    # the most it opens, past which due requests wait and are sent late, or are dropped.
    rate: float | None = None

    def __post_init__(self) -> None:
        config = self.config
        if config is not None and config.driver is None:
            driver = DEFAULT_DRIVER[driver_mode(self.mode, config.style)]
            object.__setattr__(self, "server", replace(config, driver=driver))

    @property
    def config(self) -> ServerConfig | None:
        return self.server if isinstance(self.server, ServerConfig) else None

    @property
    def target(self) -> str | None:
        return self.server.url if isinstance(self.server, Target) else None

    @property
    def app(self) -> str | None:
        """A user's app's module:attr (APP), None for the demo app or a target."""
        return self.user_app.app if self.user_app else None

    @property
    def sent(self) -> str | None:
        """What a foreign service was sent, told apart by its digest; None for the demo app."""
        return f"{self.requests.label} [{self.requests.digest}]" if self.requests else None

    @property
    def user_app(self) -> UserApp | None:
        return self.server if isinstance(self.server, UserApp) else None

    @property
    def requests(self) -> Requests | None:
        """A foreign service's requests; None for the demo app (its workload's path)."""
        return self.server.requests if isinstance(self.server, Target | UserApp) else None

    @property
    def short_name(self) -> str:
        """How prose names the cell's variant: its mode and style, or, for a foreign service
        (no style known), its mode and what it was sent."""
        style = self.known("style")
        if self.user_app:
            return f"{self.mode} app `{self.user_app.app}`"
        if style:
            return f"{self.mode} `{style}`"
        return f"{self.mode} ({self.workload_label})" if self.requests else str(self.mode)

    @property
    def workload_label(self) -> str:
        return self.requests.label if self.requests else str(self.workload)

    def known(self, name: str) -> Any:
        """Any setting of the cell by name: its own (mode, workload, connections, duration_s,
        target, stack, driver) or its server's, None where the harness cannot know it (a target)."""
        if name in OWN_FIELDS:
            return getattr(self, name)
        if name not in CONFIG_FIELDS:
            raise AttributeError(name)
        if isinstance(self.server, UserApp):  # what the harness set; the app's own are unknown
            return getattr(self.server, name) if name in ("name", "tokens", "workers") else None
        return getattr(self.config, name) if self.config else None

    @property
    def load(self) -> Load:
        return Load.closed if self.rate is None else Load.open

    @property
    def level(self) -> float:
        """What rises along a variant's line: connections (closed loop) or the rate (open)."""
        return self.connections if self.rate is None else self.rate

    @property
    def level_key(self) -> tuple[bool, float]:
        """Orders and tells apart the levels of a run that has both loads: wrk's, then rates."""
        return self.rate is not None, self.level

    @property
    def level_short(self) -> str:
        return f"{self.connections}" if self.rate is None else f"{self.rate:g}/s"

    @property
    def level_text(self) -> str:
        return f"{self.connections} connections" if self.rate is None else f"{self.rate:g} req/s"

    @property
    def stack(self) -> Stack:
        return self.config.stack if self.config else Stack.current

    @property
    def driver(self) -> Driver | None:
        return self.config.driver if self.config else None

    @property
    def default_driver(self) -> bool:
        mode = driver_mode(self.mode, self.config.style) if self.config else self.mode
        return self.driver is None or self.driver is DEFAULT_DRIVER[mode]

    @property
    def tokens_label(self) -> str:
        if self.user_app:
            return self.user_app.tokens_label
        return self.config.tokens_label if self.config else shown(self.known("tokens"))

    @property
    def server_label(self) -> str:
        if self.user_app:
            return f"{self.user_app.name} app {self.user_app.app}"
        return f"target {self.target}" if self.target else shown(self.known("name"))

    @property
    def variant(self) -> str:
        """The cell without its connection count: the line a threshold is looked for along."""
        k = self.known
        stack = "" if self.stack is Stack.current else f"/stack {self.stack}"
        side = "/side channel off" if k("occupancy") is False else ""
        rows = "" if k("rows") in (None, SEED_ROWS) else f"/rows {k('rows')}"
        latency = "" if self.db_latency is None else f"/latency {self.db_latency}"
        onset = "" if self.onset is Onset.fresh else f"/{self.onset}"
        onset += "" if self.rate is None else f"/open loop, at most {self.connections} connections"
        layer = "" if k("layer") in (None, Layer.orm) else f"/layer {k('layer')}"
        if self.target:  # only what is known of a server the harness did not start
            return f"{self.server_label}/{self.mode}/{self.workload_label}{onset}"
        if self.user_app:  # what the harness set, not the app's own settings
            return (
                f"{self.server_label}/{self.mode}/tokens {self.tokens_label}/workers "
                f"{k('workers')}/{self.workload_label}{onset}"
            )
        return (
            f"{self.server_label}/{self.mode}/{shown(self.driver)}{layer}/{shown(k('style'))}/"
            f"pool {shown(k('pool'))}/tokens {shown(k('tokens'))}/workers {shown(k('workers'))}/"
            f"{self.workload_label}{stack}{rows}{latency}{side}{onset}"
        )

    @property
    def db_latency(self) -> Latency | None:
        """The relay's delay, None where there is none (direct, or a target: not the harness's)."""
        latency = self.known("db_latency")
        return latency if latency is not None and latency.relay else None

    @property
    def id(self) -> str:
        """Stable across runs and record formats, so records can be resumed and compared."""
        k = self.known
        where = (
            "target-" + re.sub(r"[^A-Za-z0-9]+", "_", self.target.split("//", 1)[-1]).strip("_")
            if self.target
            else str(k("name"))
        )
        if self.user_app:
            env = hashlib.sha256(repr(self.user_app.env).encode()).hexdigest()[:6]
            app = re.sub(r"[^A-Za-z0-9]+", "_", self.user_app.app).strip("_")
            where = f"app-{app}-{where}" + (f"-e{env}" if self.user_app.env else "")
        pool = k("pool")
        # Settings added later appear only when they differ from what records had before them.
        later = "" if self.stack is Stack.current else f"-s{self.stack}"
        later += "-occoff" if k("occupancy") is False else ""
        later += "" if self.default_driver else f"-dr{self.driver}"
        later += "" if k("layer") in (None, Layer.orm) else f"-l{k('layer')}"
        later += "" if self.db_latency is None else f"-lat{self.db_latency}"
        later += "" if self.onset is Onset.fresh else f"-o{self.onset}"
        return (
            f"{where}-{self.mode}-{shown(k('style'))}-p{pool or 'unknown'}"
            f"-pt{shown(k('pool_timeout_s'))}-t{shown(k('tokens'))}-w{shown(k('workers'))}"
            f"-{self.workload}{f'-q{self.requests.digest}' if self.requests else ''}"
            f"-r{shown(k('rows'))}-d{self.duration_s:g}{later}-c{self.connections}"
            + ("" if self.rate is None else f"-open{self.rate:g}")
        )

    def to_json(self) -> dict[str, Any]:
        where: dict[str, Any] = (
            {"server": self.config.to_json()} if self.config else {"target": self.target}
        )
        if self.user_app:
            where = {"app": self.user_app.to_json()}
        elif self.requests:
            where["requests"] = self.requests.to_json()
        return {
            **where,
            "mode": str(self.mode),
            "workload": str(self.workload),
            "connections": self.connections,
            "duration_s": self.duration_s,
            "onset": str(self.onset),
            "rate": self.rate,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Cell:
        requests = Requests.from_json(data["requests"]) if data.get("requests") else None
        server: ServerConfig | Target | UserApp
        if data.get("app"):
            server = UserApp.from_json(data["app"])
        elif data.get("target"):
            server = Target(data["target"], requests)
        else:
            server = ServerConfig.from_json(data["server"])
        return cls(
            server=server,
            mode=Mode(data["mode"]),
            workload=Workload(data["workload"]),
            connections=int(data["connections"]),
            duration_s=float(data["duration_s"]),
            onset=Onset(data.get("onset", Onset.fresh)),
            rate=float(data["rate"]) if data.get("rate") is not None else None,
        )
