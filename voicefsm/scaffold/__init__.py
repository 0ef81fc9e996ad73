"""``voicefsm new NAME``: a folder with a flow, its scenarios, a pytest test and a README, passing as written.

The templates beside this module are ``string.Template`` texts over ``$name`` (the module name),
``$cls`` (the flow class) and ``$title`` (the words people read).
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from string import Template

from voicefsm.errors import VoiceFsmError

#: Template file -> the file it becomes ("{name}" is the project's module name).
TEMPLATES: dict[str, str] = {
    "flow.py.tmpl": "{name}.py",
    "scenarios.yaml.tmpl": "{name}.scenarios.yaml",
    "test_flow.py.tmpl": "test_{name}.py",
    "README.md.tmpl": "README.md",
}


class ScaffoldError(VoiceFsmError):
    """A project that cannot be created where or as asked."""


@dataclass(frozen=True, slots=True)
class ProjectNames:
    """The names a project is written with."""

    name: str
    cls: str
    title: str

    @classmethod
    def of(cls, folder_name: str) -> ProjectNames:
        """``"dental-line"`` -> module ``dental_line``, class ``DentalLine``, title ``Dental line``."""
        name = re.sub(r"[^0-9a-zA-Z_]+", "_", folder_name).strip("_").lower()
        if not name or name[0].isdigit() or keyword.iskeyword(name):
            raise ScaffoldError(
                f"cannot make a Python module name from {folder_name!r}; "
                "start it with a letter, e.g. `voicefsm new front_desk`"
            )
        words = name.split("_")
        return cls(name, "".join(word.capitalize() for word in words), " ".join(words).capitalize())


def create_project(folder: Path) -> list[Path]:
    """Write the project into ``folder`` (new, or empty); returns the files written.

    Raises ScaffoldError when ``folder`` is a file or a folder with files in it.
    """
    if folder.exists() and not folder.is_dir():
        raise ScaffoldError(f"{folder} is a file; give the name of a new folder")
    if folder.is_dir() and any(folder.iterdir()):
        raise ScaffoldError(f"{folder} already has files in it; give the name of a new folder")
    names = ProjectNames.of(folder.resolve().name)
    folder.mkdir(parents=True, exist_ok=True)
    here = files(__package__)
    written = []
    for template, target in TEMPLATES.items():
        text = Template(here.joinpath(template).read_text(encoding="utf-8")).substitute(
            name=names.name, cls=names.cls, title=names.title
        )
        path = folder / target.format(name=names.name)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
