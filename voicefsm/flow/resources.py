"""Resources: what a flow's code uses to act (an HTTP client, a database, an API key), opened once.

A flow module declares its resources; the server opens them once per process when it starts
and closes them when it stops; every call's flow reaches them as ``self.resources.<name>``.
Tests, scenarios and fault runs never open the real ones: they use each resource's declared
fake, or one given by name (``FlowLine(flow, resources={"calendar": ...})``)::

    @resource(fake=lambda: httpx.AsyncClient(transport=httpx.MockTransport(answer)))
    def shop(settings: Settings) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=os.environ["SHOP_URL"], timeout=5.0)

    class OrderStatus(VoiceFlow):
        resources = (shop,)  # named by the opener: self.resources.shop; or {"shop": shop}
        ...
        async def fetch_order(self) -> str:
            reply = await self.resources.shop.get(f"/orders/{self.slots.number}")

An opener takes the settings (or nothing) and is one of:

- an ``async`` generator (or plain generator) function: it yields the resource, and the code
  after ``yield`` closes it when the server stops (like a FastAPI lifespan);
- a function or ``async`` function returning the resource. A returned async context manager
  (``httpx.AsyncClient``, an object with ``__aenter__``/``__aexit__``) or context manager is
  entered, and exited on shutdown; anything else (an API key string) is used as it is.

A fake is a value, or a callable without arguments that builds one (called once per call in
tests, so an in-memory fake starts empty each time). Fakes are never closed: keep them in memory.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, overload

from voicefsm.flow.errors import FlowError

if TYPE_CHECKING:
    from voicefsm.settings import Settings

__all__ = [
    "Resource",
    "ResourceError",
    "Resources",
    "declared_resources",
    "fakes_for",
    "open_resources",
    "resource",
    "resource_problems",
]

log = logging.getLogger(__name__)

Opener = Callable[..., Any]


class _NoFake:
    def __repr__(self) -> str:
        return "<no fake>"


NO_FAKE: Any = _NoFake()


class ResourceError(FlowError):
    """A resource could not be opened, was not handed to a call, or has no fake for a test."""

    def __init__(self, flow: str, name: str, reason: str, fix: str = "") -> None:
        super().__init__(flow, name, reason, fix)
        self.flow = flow
        self.resource = name
        self.reason = reason
        self.fix = fix

    def __str__(self) -> str:
        fix = f" Fix: {self.fix}" if self.fix else ""
        return f"{self.flow}: resource {self.resource!r} {self.reason}.{fix}"


class Resource:
    """One thing flow code uses, with how to open it for real and how to fake it in tests.

    Build it with :func:`resource`; declare it in the flow's ``resources`` mapping.
    """

    def __init__(self, open: Opener | None = None, *, fake: Any = NO_FAKE, name: str | None = None) -> None:
        if open is not None and not callable(open):
            raise TypeError(
                f"resource(open=...) must be a function that opens the resource, not {open!r}; "
                "for a constant value write resource(lambda: value, name='...')"
            )
        self.open = open
        self.fake = fake
        #: The name flow code uses (``self.resources.<name>``) when declared in a tuple: the opener's.
        self.name = name if name is not None else getattr(open, "__name__", "")
        self.__doc__ = getattr(open, "__doc__", None) or "A flow resource."

    def __repr__(self) -> str:
        name = getattr(self.open, "__qualname__", None) or repr(self.open)
        return f"<Resource {name}{'' if self.has_fake else ' (no fake)'}>"

    @property
    def has_fake(self) -> bool:
        """Whether the test kit can build this resource without opening the real one."""
        return self.fake is not NO_FAKE

    def make_fake(self) -> object:
        """A fresh fake: the declared value, or what the declared factory returns."""
        if not self.has_fake:
            raise LookupError("no fake declared")
        return self.fake() if callable(self.fake) else self.fake

    @property
    def where(self) -> str:
        """``file:line`` of the opener, for messages."""
        code = getattr(self.open, "__code__", None)
        return f"{code.co_filename}:{code.co_firstlineno}" if code is not None else "?"

    async def enter(self, settings: Settings | None, stack: contextlib.AsyncExitStack) -> object:
        """Open the real resource; whatever closes it is pushed on ``stack``."""
        if self.open is None:
            raise LookupError("it declares no opener")
        opener = self.open
        args = (settings,) if _takes_an_argument(opener) else ()
        if inspect.isasyncgenfunction(opener):
            return await stack.enter_async_context(contextlib.asynccontextmanager(opener)(*args))
        if inspect.isgeneratorfunction(opener):
            return stack.enter_context(contextlib.contextmanager(opener)(*args))
        value = opener(*args)
        if inspect.isawaitable(value):
            value = await value
        if hasattr(value, "__aenter__") and hasattr(value, "__aexit__"):
            return await stack.enter_async_context(value)
        if hasattr(value, "__enter__") and hasattr(value, "__exit__"):
            return stack.enter_context(value)
        return value


def _takes_an_argument(function: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return any(p.kind in positional or p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters)


@overload
def resource(open: Opener, *, fake: Any = NO_FAKE, name: str | None = None) -> Resource: ...
@overload
def resource(
    open: None = None, *, fake: Any = NO_FAKE, name: str | None = None
) -> Callable[[Opener], Resource]: ...
def resource(
    open: Opener | None = None, *, fake: Any = NO_FAKE, name: str | None = None
) -> Resource | Callable[[Opener], Resource]:
    """Declare a resource: ``@resource`` or ``@resource(fake=...)`` over an opener, or ``resource(opener)``.

    ``open`` receives the server's :class:`~voicefsm.settings.Settings` when it takes an argument.
    ``fake`` is what tests, scenarios and fault runs use instead (a value or a zero-argument factory).
    ``name`` is what flow code calls it when the flow lists it in a tuple (default: the opener's name).
    """
    if open is not None:
        return Resource(open, fake=fake, name=name)

    def decorate(function: Opener) -> Resource:
        return Resource(function, fake=fake, name=name)

    return decorate


def declared_resources(flow_cls: type) -> dict[str, Resource]:
    """The resources a flow class declares, by name (empty when it declares none).

    Raises ResourceError when ``resources`` is not a mapping of names to :class:`Resource`.
    """
    declared = getattr(flow_cls, "resources", None)
    if declared is None:
        return {}
    problems = _declaration_problems(declared)
    if problems:
        reason, fix = problems[0]
        raise ResourceError(flow_cls.__name__, "resources", reason, fix)
    return _as_mapping(declared)


def _as_mapping(declared: object) -> dict[str, Any]:
    if isinstance(declared, Mapping):
        return dict(declared)
    if isinstance(declared, tuple | list):
        return {getattr(value, "name", repr(value)): value for value in declared}
    raise TypeError(type(declared).__name__)


def _declaration_problems(declared: object) -> list[tuple[str, str]]:
    if not isinstance(declared, Mapping | tuple | list):
        return [
            (
                f"must be a tuple of resources (or a dict of names to them), not {type(declared).__name__}",
                "write resources = (calendar,) with calendar made by @resource",
            )
        ]
    problems: list[tuple[str, str]] = []
    if not isinstance(declared, Mapping) and len({getattr(v, "name", id(v)) for v in declared}) < len(
        declared
    ):
        problems.append(("names two resources alike", "give one another name: resource(..., name='other')"))
    for name, value in _as_mapping(declared).items():
        if not isinstance(value, Resource):
            problems.append(
                (
                    f"names {value!r}, which is not a resource",
                    "declare it with @resource over the function that opens it",
                )
            )
        elif not (isinstance(name, str) and name.isidentifier() and not name.startswith("_")):
            problems.append(
                (
                    f"has the name {name!r}",
                    "name each resource as a Python identifier, e.g. resource(lambda: key, name='api_key')",
                )
            )
    return problems


def resource_problems(flow_cls: type) -> list[tuple[str, str]]:
    """Problems with a flow's ``resources`` declaration, as (message, fix) pairs, for ``validate``."""
    declared = getattr(flow_cls, "resources", None)
    if declared is None or isinstance(declared, Resources):
        return []
    return [(f"'s resources {message}", fix) for message, fix in _declaration_problems(declared)]


def fakes_for(flow_cls: type, *, given: Mapping[str, object] | None = None) -> dict[str, object]:
    """The resources a test call of ``flow_cls`` runs with: ``given`` by name, declared fakes for the rest.

    Raises ResourceError naming a resource that has neither a fake nor a given value, and
    one given that the flow does not declare.
    """
    declared = declared_resources(flow_cls)
    given = dict(given or {})
    _check_known(flow_cls.__name__, declared, given)
    values: dict[str, object] = {}
    for name, declaration in declared.items():
        if name in given:
            values[name] = given[name]
        elif declaration.has_fake:
            values[name] = declaration.make_fake()
        else:
            raise ResourceError(
                flow_cls.__name__,
                name,
                f"(declared at {declaration.where}) has no fake, so a test call cannot use it",
                f"declare one with @resource(fake=...), or pass resources={{{name!r}: ...}} to FlowLine",
            )
    return values


@contextlib.asynccontextmanager
async def open_resources(
    flow_cls: type, settings: Settings | None = None, *, given: Mapping[str, object] | None = None
) -> AsyncIterator[dict[str, object]]:
    """Open every resource ``flow_cls`` declares (except those ``given``), and close them on exit.

    Opened in declaration order and closed in reverse. The server runs it once in its lifespan and
    hands the mapping to each call's ``FlowRuntime(resources=...)``. Raises ResourceError naming
    the resource that failed to open (the ones already open are closed first).
    """
    declared = declared_resources(flow_cls)
    given = dict(given or {})
    _check_known(flow_cls.__name__, declared, given)
    # Closed as on a normal exit whatever ends the block (a failed opener, the server's shutdown
    # by an exception): an opener's code after ``yield`` runs even without try/finally.
    stack = contextlib.AsyncExitStack()
    try:
        values: dict[str, object] = {}
        for name, declaration in declared.items():
            if name in given:
                values[name] = given[name]
                continue
            try:
                values[name] = await declaration.enter(settings, stack)
            except Exception as exc:
                raise ResourceError(
                    flow_cls.__name__,
                    name,
                    f"could not be opened ({declaration.where}): {type(exc).__name__}: {exc}",
                    "check the settings it reads (database URL, service URL, API key)",
                ) from exc
            log.info("opened resource %s of %s", name, flow_cls.__name__)
        yield values
    finally:
        log.info("closing the resources of %s", flow_cls.__name__)
        await stack.aclose()


def _check_known(flow: str, declared: Mapping[str, Resource], given: Mapping[str, object]) -> None:
    for name in given:
        if name not in declared:
            known = ", ".join(declared) or "none"
            close = difflib.get_close_matches(name, list(declared), n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}?" if close else f'declare it: resources = {{"{name}": ...}}'
            raise ResourceError(
                flow, name, f"is given but not declared by the flow (it declares {known})", hint
            )


class Resources(Mapping[str, Any]):
    """What ``self.resources`` is inside flow code: the call's resources, by attribute or by key.

    A declared resource the call was not given, and a name the flow does not declare, raise an
    error that says which and how to fix it.
    """

    __slots__ = ("_declared", "_flow", "_values")

    def __init__(
        self,
        values: Mapping[str, object] | None = None,
        *,
        declared: Mapping[str, object] | None = None,
        flow: str = "flow",
    ) -> None:
        self._values = dict(values or {})
        self._declared = dict(declared) if declared is not None else dict.fromkeys(self._values)
        self._flow = flow
        _check_known(flow, {name: Resource() for name in self._declared}, self._values)

    @classmethod
    def for_flow(cls, flow_cls: type, values: Mapping[str, object] | None) -> Resources:
        """The container a new flow instance stores as ``self.resources``."""
        return cls(values, declared=declared_resources(flow_cls), flow=flow_cls.__name__)

    def __getitem__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise self._missing(name) from None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self._values[name]
        except KeyError:
            raise self._missing(name) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"<Resources of {self._flow}: {', '.join(self._values) or 'none'}>"

    def _missing(self, name: str) -> ResourceError:
        if name in self._declared:
            return ResourceError(
                self._flow,
                name,
                "was not handed to this call",
                "the server opens it with open_resources(); in tests declare @resource(fake=...) "
                f"or pass resources={{{name!r}: ...}} to FlowLine",
            )
        known = ", ".join(self._declared) or "none"
        close = difflib.get_close_matches(name, list(self._declared), n=1, cutoff=0.6)
        fix = (
            f"did you mean self.resources.{close[0]}?"
            if close
            else f'declare it: resources = {{"{name}": ...}}'
        )
        return _UnknownResource(self._flow, name, f"is not declared by the flow (it declares {known})", fix)


class _UnknownResource(ResourceError, AttributeError):
    """A name the flow does not declare (an AttributeError too, so ``hasattr`` stays False)."""
