"""The fault table (docs/guide/fault-matrix.md) and the numbered fault tests agree, for all 48 faults.

Every number 1..48 has one row; every test a row names exists, in the file it names, with that
number; every ``test_fault_NN_*`` in tests/faults/test_matrix*.py has its number's row naming it.
A row may name ``<file>::test_fault_NN_*``: any test with that number in that file.

Three files belong to other teams (edge, scale, ops) and arrive when the branches are merged. Until a
file exists, only its owner's numbers may point at it; once it exists, it is checked like the others.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "docs" / "guide" / "fault-matrix.md"
FAULTS = ROOT / "tests" / "faults"
NUMBERS = range(1, 49)
#: The numbers other teams own, and the file each one's test lives in.
OWNED_ELSEWHERE: dict[int, str] = {
    **{number: "tests/faults/test_matrix_edge.py" for number in (11, 20, 21, 22, 23, 24, 46)},
    47: "tests/faults/test_matrix_scale.py",
    48: "tests/faults/test_matrix_ops.py",
}
ROW = re.compile(r"^\|\s*(\d+)\s*\|(.*)\|\s*$")
NODE = re.compile(r"`(tests/faults/test_matrix\w*\.py)::(test_fault_(\d\d)_\w*\*?)`")
NAME = re.compile(r"^test_fault_(\d\d)_\w+$")


def table_rows() -> dict[int, list[tuple[str, str, int]]]:
    """number -> [(file, test name or pattern, the number in the name)] from the table's rows."""
    rows: dict[int, list[tuple[str, str, int]]] = {}
    for line in TABLE.read_text(encoding="utf-8").splitlines():
        match = ROW.match(line)
        if match is None:
            continue
        number = int(match.group(1))
        assert number not in rows, f"fault {number} has two rows in {TABLE.name}"
        rows[number] = [(f, name, int(n)) for f, name, n in NODE.findall(match.group(2))]
    return rows


def fault_tests(path: Path) -> set[str]:
    """The names of the numbered fault tests in ``path`` (module functions, or methods of its classes)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = [
        *tree.body,
        *(item for node in tree.body if isinstance(node, ast.ClassDef) for item in node.body),
    ]
    return {
        node.name
        for node in nodes
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and NAME.match(node.name)
    }


def matrix_files() -> dict[str, set[str]]:
    return {str(path.relative_to(ROOT)): fault_tests(path) for path in sorted(FAULTS.glob("test_matrix*.py"))}


def test_every_fault_has_one_row_naming_its_tests() -> None:
    rows = table_rows()
    assert sorted(rows) == list(NUMBERS), f"rows for {sorted(set(NUMBERS) - set(rows))} are missing"
    for number, tests in rows.items():
        assert tests, f"the row of fault {number} names no test"
        for file, name, named in tests:
            assert named == number, f"the row of fault {number} names {name}, a test of fault {named}"
            if number in OWNED_ELSEWHERE:
                assert file == OWNED_ELSEWHERE[number], (
                    f"fault {number}'s test lives in {OWNED_ELSEWHERE[number]}"
                )


def test_every_test_the_table_names_exists() -> None:
    files = matrix_files()
    for number, tests in table_rows().items():
        for file, name, _ in tests:
            if file not in files:
                # Only another team's file may be absent: it arrives with their branch at the merge.
                assert OWNED_ELSEWHERE.get(number) == file, f"fault {number}: {file} does not exist"
                continue
            if name.endswith("*"):
                found = [test for test in files[file] if test.startswith(name[:-1])]
                assert found, f"fault {number}: no test in {file} is named {name}"
            else:
                assert name in files[file], f"fault {number}: {file}::{name} does not exist"


def test_every_numbered_test_is_in_the_table() -> None:
    rows = table_rows()
    for file, names in matrix_files().items():
        for name in names:
            number = int(NAME.match(name).group(1))  # type: ignore[union-attr]
            named = rows.get(number, [])
            assert any(
                f == file and (n == name or (n.endswith("*") and name.startswith(n[:-1])))
                for f, n, _ in named
            ), f"{file}::{name} is not in the row of fault {number} in {TABLE.name}"


def test_every_number_has_a_test_once_the_teams_files_are_merged() -> None:
    files = matrix_files()
    numbered = {int(NAME.match(name).group(1)) for names in files.values() for name in names}  # type: ignore[union-attr]
    missing = set(NUMBERS) - numbered
    pending = {number for number in missing if OWNED_ELSEWHERE.get(number) not in files}
    assert missing == pending, f"faults {sorted(missing - pending)} have no test"
    # Our own numbers never wait for a merge.
    assert not (pending - set(OWNED_ELSEWHERE)), (
        f"faults {sorted(pending - set(OWNED_ELSEWHERE))} have no test"
    )
