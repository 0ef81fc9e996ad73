"""Every code block of README.md and docs/ runs, in order, as a reader would run it.

Each page gets its own folder (with a copy of the repository's ``flows/``), and its fenced blocks
are played top to bottom:

- ```` ```python title="booking.py" ```` (any ``title=``, Material shows it as the file name) is
  written to that file; a file that defines flows must load and validate; a ``test_*.py`` file is
  run by pytest with no configuration at all (``-c /dev/null``): no ``asyncio_mode``, no conftest.
- ```` ```yaml title="booking.scenarios.yaml" ```` is written to that file (and must be YAML).
- ```` ```python ```` without a title is executed in one namespace per page.
- ```` ```sh ```` and ```` ```console ```` blocks run line by line in bash; in a ``console`` block
  the lines after a ``$ command`` are output that the command must print (each line, as written).
  ``voicefsm serve`` is started on a free port, must say it is serving, and is stopped.
- ```` ```toml ````/```` ```yaml ```` without a title must parse.

An HTML comment right before a block changes that: ``<!-- docs-test: skip REASON -->`` (a reason is
required: e.g. it installs from the network), ``<!-- docs-test: exit N -->`` (the commands must fail
with N; before a flow file: ``voicefsm validate`` must fail with N). Leading ``NAME=value`` words
of a command are its environment. A block in another language (``text``, ``mermaid``...) is prose
and is not run.
"""

from __future__ import annotations

import ast
import os
import re
import select
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PAGES = sorted([REPO / "README.md", *(REPO / "docs").rglob("*.md")])
RUN_LANGUAGES = {"python", "py", "sh", "bash", "console", "shell", "yaml", "yml", "toml"}
PROSE_LANGUAGES = {
    "text", "mermaid", "json", "html", "http", "ini", "dockerfile", "js", "javascript", "caddy", "nginx", ""
}  # fmt: skip
COMMAND_TIMEOUT_S = 180
FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+)(?P<info>[^`\n]*)$")
DIRECTIVE = re.compile(r"<!--\s*docs-test:\s*(?P<what>skip|exit)\s*(?P<rest>.*?)\s*-->")
READY = re.compile(r"voicefsm serving \w+ from .* on http://[\w.]+:(?P<port>\d+)")
SERVE_TIMEOUT_S = 30


@dataclass
class Block:
    """One fenced code block of a page."""

    page: Path
    line: int  # 1-based line of the opening fence
    language: str
    attributes: dict[str, str]
    text: str
    skip: str | None = None
    exit_code: int = 0

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"

    @property
    def title(self) -> str | None:
        return self.attributes.get("title")


@dataclass
class Session:
    """A page being played: its folder and the namespace of its untitled Python blocks."""

    folder: Path
    env: dict[str, str]
    namespace: dict[str, object] = field(default_factory=dict)


def blocks_of(page: Path) -> list[Block]:
    """The fenced blocks of a Markdown page, with the directive comment before each, if any."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        info = opening["info"].strip()
        language, _, rest = info.partition(" ")
        attributes = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        indent = len(opening["indent"])
        body: list[str] = []
        end = index + 1
        while end < len(lines) and not lines[end].strip().startswith(opening["fence"]):
            body.append(lines[end][indent:])
            end += 1
        block = Block(page, index + 1, language.lower(), attributes, "\n".join(body) + "\n")
        before = next((lines[i] for i in range(index - 1, -1, -1) if lines[i].strip()), "")
        if directive := DIRECTIVE.search(before):
            if directive["what"] == "skip":
                block.skip = directive["rest"]
            else:
                block.exit_code = int(directive["rest"])
        found.append(block)
        index = end + 1
    return found


def runnable(page: Path) -> list[Block]:
    """The blocks of ``page`` that these tests run."""
    return [b for b in blocks_of(page) if b.skip is None and b.language in RUN_LANGUAGES]


def test_every_page_has_blocks_and_every_skip_says_why() -> None:
    assert (REPO / "README.md") in PAGES and len(PAGES) > 5
    assert len(runnable(REPO / "README.md")) >= 6
    for page in PAGES:
        for block in blocks_of(page):
            assert block.language in RUN_LANGUAGES | PROSE_LANGUAGES, (
                f"{block.where}: a ```{block.language} block: use a language these tests know "
                f"({', '.join(sorted(RUN_LANGUAGES))}) or a prose one ({', '.join(sorted(PROSE_LANGUAGES))})"
            )
            if block.skip is not None:
                assert len(block.skip) > 10, f"{block.where}: `docs-test: skip` needs a reason"


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    "page", [page for page in PAGES if runnable(page)], ids=lambda page: str(page.relative_to(REPO))
)
def test_the_code_blocks_of_a_page_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(REPO / "flows", tmp_path / "flows", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    bin_dir = str(Path(sys.executable).parent)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("TWILIO_", "ELEVENLABS_", "AZURE_", "VOICEFSM_", "VOICE_", "PYTEST_"))
    }
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", COLUMNS="120", NO_COLOR="1")
    session = Session(tmp_path, env)
    for block in runnable(page):
        run_block(block, session)


def run_block(block: Block, session: Session) -> None:
    if block.language in {"sh", "bash", "console", "shell"}:
        run_commands(block, session)
    elif block.title is not None:
        path = session.folder / block.title
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(block.text, encoding="utf-8")
        check_file(block, path, session)
    elif block.language in {"python", "py"}:
        code = compile(block.text, block.where, "exec")
        exec(code, session.namespace)
    elif block.language in {"yaml", "yml"}:
        yaml.safe_load(block.text)
    elif block.language == "toml":
        tomllib.loads(block.text)


def check_file(block: Block, path: Path, session: Session) -> None:
    if path.suffix in {".yaml", ".yml"}:
        yaml.safe_load(path.read_text(encoding="utf-8"))
    elif path.suffix == ".toml":
        tomllib.loads(path.read_text(encoding="utf-8"))
    elif path.suffix == ".py":
        ast.parse(block.text, block.where)
        if path.name.startswith("test_"):
            done = run(
                [
                    sys.executable,
                    "-m",
                    "pytest",
                    "-q",
                    "-p",
                    "no:cacheprovider",
                    "-c",
                    os.devnull,
                    "--rootdir",
                    str(session.folder),
                    str(path),
                ],
                session,
            )
            assert done.returncode == 0, (
                f"{block.where}: pytest {path.name} failed:\n{done.stdout}{done.stderr}"
            )
        elif "VoiceFlow" in block.text:
            done = run([sys.executable, "-m", "voicefsm", "validate", str(path)], session)
            assert done.returncode == block.exit_code, (
                f"{block.where}: `voicefsm validate {path.name}` exited {done.returncode}:\n{done.stderr}"
            )


def commands_of(block: Block) -> list[tuple[str, list[str]]]:
    """(command, expected output lines) pairs; a line ending in a backslash continues on the next.

    In a ``console`` block a command starts with ``$ `` and the lines up to the next one are its
    output; in an ``sh`` block every line is a command (``#`` comments are dropped).
    """
    pairs: list[tuple[str, list[str]]] = []
    pending: str | None = None
    for raw in block.text.splitlines():
        line = raw.rstrip()
        if pending is None and block.language == "console" and not line.startswith("$ "):
            if pairs and line.strip():
                pairs[-1][1].append(line.strip())
            continue
        if pending is None:
            line = line.removeprefix("$ ")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
        if line.endswith("\\"):
            pending = (pending or "") + line[:-1] + " "
            continue
        pairs.append(((pending or "") + line, []))
        pending = None
    return pairs


def run_commands(block: Block, session: Session) -> None:
    for command, expected in commands_of(block):
        words = shlex.split(command, comments=True)
        assignments = {}
        while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
            name, _, value = words.pop(0).partition("=")
            assignments[name] = value
        if words[:2] == ["voicefsm", "serve"]:
            output, code = serve_briefly(
                words, Session(session.folder, {**session.env, **assignments}), expected
            )
        else:
            done = run(["bash", "-c", f"set -o pipefail; {command}"], session, stdin=subprocess.DEVNULL)
            output, code = done.stdout + done.stderr, done.returncode
        assert code == block.exit_code, f"{block.where}: `{command}` exited {code}:\n{output}"
        for line in expected:
            if line != "...":
                assert line in output, (
                    f"{block.where}: `{command}` did not print {line!r}; it printed:\n{output}"
                )


def serve_briefly(words: list[str], session: Session, expected: list[str]) -> tuple[str, int]:
    """Start ``voicefsm serve`` on a free port; once it has said it serves (and printed the
    ``expected`` lines), stop it. Returns (output, 0), or what it printed and its exit code."""
    asked_port = "8080"
    if "--port" in words:
        at = words.index("--port")
        asked_port = words[at + 1]
        words = words[:at] + words[at + 2 :]
    process = subprocess.Popen(
        [sys.executable, "-m", *words, "--port", "0"],
        cwd=session.folder,
        env=session.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    printed = b""
    try:
        assert process.stdout is not None
        fd = process.stdout.fileno()
        deadline = time.monotonic() + SERVE_TIMEOUT_S
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([fd], [], [], left)[0]:
                break  # the deadline passed
            chunk = os.read(fd, 65536)  # unbuffered: select sees every byte not read yet
            if not chunk:
                return printed.decode(errors="replace"), process.wait(timeout=15)  # it exited
            printed += chunk
            output = printed.decode(errors="replace")
            if found := READY.search(output):  # the docs say :8080; the test asked for any free port
                output = output.replace(f":{found['port']}", f":{asked_port}")
                if all(want in output for want in expected if want != "..."):
                    return output, 0
        return printed.decode(errors="replace"), -1  # neither served nor exited in time
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        if process.stdout is not None:
            process.stdout.close()


def run(
    argv: list[str], session: Session, stdin: int | None = subprocess.DEVNULL
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        cwd=session.folder,
        env=session.env,
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )
