"""``App.from_env()``: every option from its ``AIOQ_*`` variable, typed, with errors naming the
variable; explicit arguments win; ``name``, ``redis_url`` and ``visibility_timeout`` are
read-only, and ``rebind`` is the way to move an app."""

from __future__ import annotations

import pytest

from aioq import App
from aioq.env import VARIABLES

pytestmark = pytest.mark.anyio

EVERY = {
    "AIOQ_NAME": "billing",
    "AIOQ_REDIS_URL": "redis://cache.internal:6380/3",
    "AIOQ_VISIBILITY_TIMEOUT": "12.5",
    "AIOQ_RESULT_TTL": "3600",
    "AIOQ_MAX_DELIVERIES": "7",
    "AIOQ_DEFAULT_QUEUE": "main",
    "AIOQ_DEAD_LETTER_MAX": "500",
    "AIOQ_MAX_CONNECTIONS": "40",
}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for variable, _ in VARIABLES.values():
        monkeypatch.delenv(variable, raising=False)
    return monkeypatch


def test_every_app_option_has_a_variable() -> None:
    """The table covers App()'s keyword arguments exactly, each named AIOQ_<OPTION>."""
    import inspect

    params = [p for p in inspect.signature(App.__init__).parameters if p != "self"]
    assert list(VARIABLES) == params
    assert all(var == f"AIOQ_{opt.upper()}" for opt, (var, _) in VARIABLES.items())


def test_every_variable_is_read_and_typed(env: pytest.MonkeyPatch) -> None:
    for variable, value in EVERY.items():
        env.setenv(variable, value)
    app = App.from_env()
    assert (app.name, app.redis_url, app.visibility_timeout) == (
        "billing",
        "redis://cache.internal:6380/3",
        12.5,
    )
    assert (app.result_ttl, app.max_deliveries, app.default_queue) == (3600, 7, "main")
    assert (app.dead_letter_max, app.max_connections) == (500, 40)
    assert app.queues == ["main"]


def test_keyword_arguments_win_and_unset_or_empty_means_default(
    env: pytest.MonkeyPatch,
) -> None:
    env.setenv("AIOQ_NAME", "from-env")
    env.setenv("AIOQ_VISIBILITY_TIMEOUT", "9")
    env.setenv("AIOQ_MAX_DELIVERIES", "")  # VAR= in a compose file: not set
    app = App.from_env(name="explicit", visibility_timeout=4.0)
    assert (app.name, app.visibility_timeout, app.max_deliveries) == ("explicit", 4.0, 5)
    assert app.redis_url == "redis://localhost:6379/0"
    # an explicit value is not read from the environment, so a bad variable beside it is moot
    env.setenv("AIOQ_RESULT_TTL", "soon")
    assert App.from_env(result_ttl=10).result_ttl == 10


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("AIOQ_VISIBILITY_TIMEOUT", "30s", "AIOQ_VISIBILITY_TIMEOUT='30s': expected a number"),
        ("AIOQ_VISIBILITY_TIMEOUT", "0", "AIOQ_VISIBILITY_TIMEOUT='0': expected a number"),
        ("AIOQ_VISIBILITY_TIMEOUT", "nan", "AIOQ_VISIBILITY_TIMEOUT='nan': expected"),
        ("AIOQ_RESULT_TTL", "1.5", "AIOQ_RESULT_TTL='1.5': expected a whole number >= 0"),
        ("AIOQ_RESULT_TTL", "-1", "AIOQ_RESULT_TTL='-1': expected a whole number >= 0"),
        ("AIOQ_MAX_DELIVERIES", "0", "AIOQ_MAX_DELIVERIES='0': expected a whole number >= 1"),
        ("AIOQ_MAX_CONNECTIONS", "lots", "AIOQ_MAX_CONNECTIONS='lots': expected a whole"),
        ("AIOQ_DEAD_LETTER_MAX", "-5", "AIOQ_DEAD_LETTER_MAX='-5': expected a whole"),
        ("AIOQ_NAME", "my app", "AIOQ_NAME: app name 'my app' must not contain"),
        ("AIOQ_DEFAULT_QUEUE", "a:b", "AIOQ_DEFAULT_QUEUE: queue name 'a:b' must not"),
        ("AIOQ_REDIS_URL", "localhost:6379", "AIOQ_REDIS_URL 'localhost:6379' is not a Redis"),
    ],
)
def test_a_bad_value_names_its_variable(
    env: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    env.setenv("AIOQ_NAME", "shop")
    env.setenv(variable, value)
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(")):
        App.from_env()


def test_a_bad_url_keeps_its_password_out_of_the_error(env: pytest.MonkeyPatch) -> None:
    env.setenv("AIOQ_REDIS_URL", "redis://:hunter2@cache:port/0")
    with pytest.raises(ValueError, match="AIOQ_REDIS_URL") as err:
        App.from_env(name="shop")
    assert "hunter2" not in str(err.value)


def test_no_name_and_unknown_options_are_refused(env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="set AIOQ_NAME"):
        App.from_env()
    with pytest.raises(TypeError, match=r"unknown option.*visibility"):
        App.from_env(name="x", visibilty_timeout=3)  # type: ignore[call-arg]


def test_name_url_and_visibility_timeout_are_public_and_read_only() -> None:
    app = App("shop", redis_url="redis://localhost:6379/2", visibility_timeout=8)
    assert (app.name, app.redis_url, app.visibility_timeout) == (
        "shop",
        "redis://localhost:6379/2",
        8.0,
    )
    for attribute in ("name", "redis_url", "visibility_timeout"):
        with pytest.raises(AttributeError):
            setattr(app, attribute, "x")


async def test_rebind_moves_the_app_and_its_tasks_until_it_has_connections(
    redis_url: str,
) -> None:
    """A task follows its app's rebind (its jobs land under the new name on the new Redis),
    and rebind refuses while the app has a connection open on a running loop."""
    app = App("before", redis_url="redis://localhost:1/0")

    @app.task
    async def add(x: int, y: int) -> int:
        return x + y

    app.rebind(redis_url=redis_url, name="after")
    assert (app.name, app.redis_url, app.keys().queue) == ("after", redis_url, "default")
    job = await add.enqueue(1, 2)
    assert await app.redis.exists(app.keys().job(job.id)) == 1
    assert app.keys().job(job.id).startswith("aioq:{after:")
    with pytest.raises(RuntimeError, match=r"await app\.aclose\(\)"):
        app.rebind(name="again")
    await app.aclose()
    app.rebind(name="again")
    assert app.name == "again"
    with pytest.raises(ValueError, match="app name"):
        app.rebind(name="a b")
    with pytest.raises(ValueError, match="is not a Redis URL"):
        app.rebind(redis_url="localhost")
    assert (app.name, app.redis_url) == ("again", redis_url)  # a refused rebind changes nothing
