"""Resources: declared by the flow, opened once and closed, faked by name; errors that say what to do."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from types import TracebackType

import pytest

from voicefsm.flow import (
    Hangup,
    ResourceError,
    Resources,
    Say,
    VoiceFlow,
    fakes_for,
    open_resources,
    resource,
)
from voicefsm.flow.resources import declared_resources, resource_problems
from voicefsm.settings import Settings

log: list[str] = []


class Client:
    """An async context manager, like httpx.AsyncClient."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def __aenter__(self) -> Client:
        log.append(f"enter {self.url}")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        log.append(f"exit {self.url}")


@resource(fake=lambda: Client("fake"))
def api(settings: Settings) -> Client:
    return Client(settings.db_url)


@resource(fake=list)
async def pool() -> AsyncIterator[list[str]]:
    log.append("pool open")
    yield ["connection"]
    log.append("pool closed")


@resource(fake="test-key")
def api_key() -> str:
    return "real-key"


@resource
@contextlib.contextmanager
def unused() -> Iterator[str]:
    yield "never opened in these tests"


class Acting(VoiceFlow):
    resources = (api, pool, api_key)

    greet = Say("Hi.", initial=True)
    bye = Hangup("Bye.")
    spoken = greet.to(bye)


class Renamed(VoiceFlow):
    resources = {"key": api_key}  # noqa: RUF012 - the dict form, to rename

    greet = Say("Hi.", initial=True)
    bye = Hangup("Bye.")
    spoken = greet.to(bye)


SETTINGS = Settings(_env_file=None, VOICEFSM_DB_URL="sqlite+aiosqlite:///calendar.db")  # type: ignore[call-arg]


async def test_open_resources_opens_in_order_with_the_settings_and_closes_in_reverse() -> None:
    log.clear()
    async with open_resources(Acting, SETTINGS) as opened:
        assert list(opened) == ["api", "pool", "api_key"]
        assert isinstance(opened["api"], Client) and opened["api"].url == SETTINGS.db_url
        assert opened["pool"] == ["connection"] and opened["api_key"] == "real-key"
        assert log == [f"enter {SETTINGS.db_url}", "pool open"]
    assert log == [f"enter {SETTINGS.db_url}", "pool open", "pool closed", f"exit {SETTINGS.db_url}"]


async def test_a_resource_that_fails_to_open_is_named_and_the_others_are_closed() -> None:
    @resource
    def broken() -> None:
        raise ConnectionRefusedError("no calendar at 127.0.0.1:5432")

    class Broken(VoiceFlow):
        resources = (pool, broken)
        greet = Say("Hi.", initial=True)
        bye = Hangup("Bye.")
        spoken = greet.to(bye)

    log.clear()
    with pytest.raises(ResourceError) as caught:
        async with open_resources(Broken, SETTINGS):
            pytest.fail("opened although one resource failed")
    message = str(caught.value)
    assert message.startswith("Broken: resource 'broken' could not be opened (")
    assert (
        "test_resources.py:" in message and "ConnectionRefusedError: no calendar at 127.0.0.1:5432" in message
    )
    assert log == ["pool open", "pool closed"]


def test_fakes_are_fresh_per_call_and_given_ones_replace_them_by_name() -> None:
    first, second = fakes_for(Acting), fakes_for(Acting)
    assert first["api_key"] == "test-key" and first["pool"] == []
    assert first["pool"] is not second["pool"]
    given = fakes_for(Acting, given={"api_key": "other"})
    assert given["api_key"] == "other" and isinstance(given["api"], Client)


def test_a_resource_without_a_fake_stops_a_test_call_with_the_fix() -> None:
    class NeedsReal(VoiceFlow):
        resources = (unused,)
        greet = Say("Hi.", initial=True)
        bye = Hangup("Bye.")
        spoken = greet.to(bye)

    with pytest.raises(ResourceError, match=r"'unused' \(declared at .*\) has no fake") as caught:
        fakes_for(NeedsReal)
    assert "@resource(fake=...)" in str(caught.value) and "FlowLine" in str(caught.value)
    assert fakes_for(NeedsReal, given={"unused": "mine"}) == {"unused": "mine"}


def test_a_misspelt_resource_name_is_refused_with_a_suggestion() -> None:
    with pytest.raises(ResourceError, match=r"'api_kye' is given but not declared.*did you mean 'api_key'"):
        fakes_for(Acting, given={"api_kye": "x"})


def test_flow_code_reads_resources_as_attributes() -> None:
    flow = Acting(resources=fakes_for(Acting))
    assert isinstance(flow.resources, Resources)
    assert flow.resources.api_key == "test-key" == flow.resources["api_key"]
    with pytest.raises(AttributeError, match=r"did you mean self.resources.api_key\?"):
        _ = flow.resources.api_kee
    assert not hasattr(flow.resources, "nothing")
    renamed = Renamed(resources={"key": "k"})
    assert renamed.resources.key == "k"


def test_a_declared_resource_the_call_was_not_given_says_how_to_give_it() -> None:
    flow = Acting()
    with pytest.raises(ResourceError, match="'pool' was not handed to this call") as caught:
        _ = flow.resources.pool
    assert "open_resources()" in str(caught.value)


def test_bad_declarations_are_reported_for_validate() -> None:
    class Odd:
        resources = ("not a resource",)

    assert resource_problems(Odd)[0][0].startswith("'s resources names")
    assert resource_problems(type("Str", (), {"resources": "calendar"}))[0][0].startswith(
        "'s resources must be a tuple of resources"
    )
    nameless = resource(lambda: "k")
    assert (
        "resource(lambda: key, name='api_key')"
        in resource_problems(type("L", (), {"resources": (nameless,)}))[0][1]
    )
    assert declared_resources(Acting).keys() == {"api", "pool", "api_key"}
    assert resource_problems(Acting) == []
