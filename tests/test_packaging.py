"""What pyproject.toml promises about the package: its imports are declared, its messages name real extras."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from voicefsm.errors import ProviderUnavailable
from voicefsm.providers import registry

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "voicefsm"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
#: Imported by the pytest plugin, which only pytest itself loads (the pytest11 entry point).
HOSTS = {"pytest"}


def _distribution(requirement: str) -> str:
    return re.split(r"[<>=!~\[;\s]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _imported_modules() -> dict[str, set[str]]:
    """Top-level third-party modules imported anywhere in the package -> the files importing them."""
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in {"voicefsm", "__future__"}:
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_import_in_the_package_is_declared_in_pyproject() -> None:
    declared = {_distribution(req) for req in PROJECT["dependencies"]}
    for requirements in PROJECT["optional-dependencies"].values():
        declared |= {_distribution(req) for req in requirements}
    providers = packages_distributions()
    imported = _imported_modules()
    assert "numpy" in imported and "starlette" in imported  # the scan sees module-level and nested imports
    undeclared = {
        module: sorted(files)
        for module, files in imported.items()
        if module not in HOSTS
        and not {dist.lower().replace("_", "-") for dist in providers.get(module, [])} & declared
    }
    assert not undeclared, f"imported but declared in no dependency list of pyproject.toml: {undeclared}"


def test_every_extra_named_in_a_message_exists() -> None:
    named: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for extra in re.findall(r"voicefsm\[([a-z0-9_,-]+)\]", path.read_text()):
            for name in extra.split(","):
                named.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    assert {"azure", "elevenlabs"} <= set(named)
    extras = PROJECT["optional-dependencies"]
    missing = {name: sorted(files) for name, files in named.items() if name not in extras}
    assert not missing, f"messages name extras that pyproject.toml does not define: {missing}"


def test_local_speech_installs_with_the_package_so_its_hint_is_a_reinstall(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(sys.modules, "voicefsm.providers.local_stt", raising=False)
    monkeypatch.setitem(sys.modules, "numpy", None)  # importing it now fails as a missing package would
    registry.get_provider_class.cache_clear()
    try:
        with pytest.raises(ProviderUnavailable) as raised:
            registry.get_provider_class("stt", "local")
    finally:
        registry.get_provider_class.cache_clear()
    message = str(raised.value)
    assert "needs the numpy package" in message
    assert "pip install --force-reinstall voicefsm" in message
    assert "voicefsm[" not in message
