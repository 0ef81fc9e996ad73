"""Load a flow class from a file path or a module path, as the CLI's ``FLOW`` argument names it.

Accepted forms: ``flows/booking.py``, ``flows/booking.py:Booking``, ``my_pkg.flows:Booking``
and ``my_pkg.flows`` (when the module defines exactly one flow). ``flow=`` (the CLI's
``--flow``) picks a class when a file defines several.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import traceback
from pathlib import Path
from types import ModuleType

from voicefsm.flow.chart import VoiceFlow
from voicefsm.flow.errors import FlowDefinitionError, FlowLoadError


def load_flow(source: str | Path, flow: str | None = None) -> type[VoiceFlow]:
    """The flow class named by ``source`` (and ``flow``, when the source defines several).

    Raises FlowLoadError when the file or module cannot be imported or holds no such flow,
    and FlowDefinitionError (with every problem) when the flow is defined but unsound.
    """
    text = str(source)
    target, _, class_name = text.rpartition(":") if _has_class_suffix(text) else (text, "", "")
    class_name = flow or class_name or ""
    module = _import(target)
    flows = flows_in(module)
    if class_name:
        found = getattr(module, class_name, None)
        if isinstance(found, type) and issubclass(found, VoiceFlow) and found is not VoiceFlow:
            return found
        raise FlowLoadError(text, f"it has no flow class {class_name!r}", _listing_fix(flows))
    if len(flows) == 1:
        return flows[0]
    if not flows:
        raise FlowLoadError(
            text, "it defines no VoiceFlow subclass", "define `class MyFlow(VoiceFlow): ...` in it"
        )
    names = ", ".join(f.__name__ for f in flows)
    raise FlowLoadError(
        text, f"it defines several flows ({names})", f"pick one with --flow {flows[0].__name__}"
    )


def load_flows_in_file(path: str | Path) -> list[type[VoiceFlow]]:
    """Every flow class a Python file defines (none when it defines none), for ``validate FOLDER``.

    Raises FlowLoadError and FlowDefinitionError as ``load_flow`` does.
    """
    return flows_in(_import_file(Path(path), str(path)))


def flow_files_in(folder: str | Path) -> list[Path]:
    """The Python files of a folder that may hold flows: not tests, conftest or dunder modules."""
    return sorted(
        path
        for path in Path(folder).glob("*.py")
        if not (
            path.name.startswith(("test_", "_"))
            or path.name.endswith("_test.py")
            or path.name == "conftest.py"
        )
    )


def flows_in(module: ModuleType) -> list[type[VoiceFlow]]:
    """The flow classes a module defines itself (not those it imports), in definition order."""
    found = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, VoiceFlow)
        and value.__module__ == module.__name__
        and len(value.states)
    ]
    return sorted(found, key=lambda cls: cls._voice_source[1])


def _has_class_suffix(text: str) -> bool:
    head, sep, tail = text.rpartition(":")
    # "C:\\flows\\x.py" is a Windows drive, not a class: a class name is an identifier after the last colon.
    return bool(sep) and tail.isidentifier() and len(head) > 1


def _listing_fix(flows: list[type[VoiceFlow]]) -> str:
    if not flows:
        return "it defines no VoiceFlow subclass"
    return f"it defines {', '.join(f.__name__ for f in flows)}"


def _import(target: str) -> ModuleType:
    path = Path(target)
    if target.endswith(".py") or path.exists():
        return _import_file(path, target)
    try:
        return importlib.import_module(target)
    except FlowDefinitionError:
        raise
    except ModuleNotFoundError as exc:
        if exc.name and target.startswith(exc.name):
            raise FlowLoadError(
                target, "no such file or module", "give a path like flows/booking.py"
            ) from exc
        raise FlowLoadError(target, f"importing it failed: {exc}", "install the missing package") from exc
    except Exception as exc:
        raise FlowLoadError(target, _failure(exc)) from exc


def _import_file(path: Path, shown: str) -> ModuleType:
    if path.is_dir():
        raise FlowLoadError(
            shown, "it is a folder, not a flow file", f"name a file in it, e.g. {_example_in(path)}"
        )
    if not path.is_file():
        raise FlowLoadError(shown, "no such file", "check the path (it is relative to the current directory)")
    resolved = path.resolve()
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:8]
    name = f"voicefsm_flow_{resolved.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise FlowLoadError(shown, "it is not a Python file")
    module = importlib.util.module_from_spec(spec)
    # Registered before running, so pydantic and dataclasses can resolve the module's own names.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except FlowDefinitionError:
        sys.modules.pop(name, None)
        raise
    except SyntaxError as exc:
        sys.modules.pop(name, None)
        where = f"{_shown_path(exc.filename, resolved, shown)}:{exc.lineno}" if exc.filename else ""
        reason = f"SyntaxError: {exc.msg}"
        raise FlowLoadError(shown, reason, "fix the syntax there", where=where).with_traceback(None) from None
    except Exception as exc:
        sys.modules.pop(name, None)
        frame = _user_frame(exc, resolved)
        if frame is None:
            raise FlowLoadError(shown, _failure(exc)) from exc
        where = f"{_shown_path(frame.filename, resolved, shown)}:{frame.lineno}"
        reason = f"{type(exc).__name__}: {exc}"
        fix = "install the missing package" if isinstance(exc, ModuleNotFoundError) else ""
        raise FlowLoadError(shown, reason, fix, where=where).with_traceback(None) from None
    return module


def _example_in(folder: Path) -> str:
    files = flow_files_in(folder)
    return str(files[0]) if files else str(folder / "my_flow.py")


def _user_frame(exc: BaseException, flow_file: Path) -> traceback.FrameSummary | None:
    """The deepest frame in the flow file or the user's own code (not the import machinery, not voicefsm)."""
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if not frame.filename.startswith("<") and Path(frame.filename).resolve() != Path(__file__).resolve()
    ]
    here = Path.cwd().resolve()
    own = [frame for frame in frames if _is_user_file(Path(frame.filename), flow_file, here)]
    return own[-1] if own else None


def _is_user_file(path: Path, flow_file: Path, cwd: Path) -> bool:
    resolved = path.resolve()
    if resolved == flow_file:
        return True
    library = Path(__file__).resolve().parents[1]
    return resolved.is_relative_to(cwd) and not resolved.is_relative_to(library) and ".venv" not in path.parts


def _shown_path(filename: str, flow_file: Path, shown: str) -> str:
    if Path(filename).resolve() == flow_file:
        return shown
    try:
        return str(Path(filename).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return filename


def _failure(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return f"running it raised {type(exc).__name__}{where}: {exc}"
