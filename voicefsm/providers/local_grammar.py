"""JSGF grammars for a closed-grammar recognizer, compact however many phrases they hold.

A flat list of alternatives makes pocketsphinx search every phrase from its first word: 1,500
day phrases took 3.5 s to decode a one-second answer. Phrases share words at their start
("next tuesday", "next friday") and at their end ("the first of march", "the second of
march"), so the list is folded into a minimal word graph (a trie whose identical subtrees are
merged) and each graph node becomes one JSGF rule: the same language, a fraction of the search.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

_WORD = re.compile(r"[a-z']+")
_END = ""  # a trie key no word can be: the phrase may end here


def jsgf_grammar(
    phrases: Iterable[str], known: Callable[[str], object], *, repeatable: bool = False
) -> str | None:
    """A JSGF grammar accepting exactly ``phrases`` whose words ``known`` knows; None if there are none.

    ``known(word)`` is the recognizer's dictionary lookup (falsy for a word it cannot say).
    ``repeatable``: one or more phrases in a row (digits of a number, "four one two two").
    """
    trie: dict[str, dict] = {}  # type: ignore[type-arg]
    for phrase in phrases:
        words = _WORD.findall(phrase.lower())
        if not words or not all(known(word) for word in words):
            continue
        node = trie
        for word in words:
            node = node.setdefault(word, {})
        node[_END] = {}
    if not trie:
        return None
    numbers: dict[tuple[bool, tuple[tuple[str, int], ...]], int] = {}
    nodes: list[tuple[bool, tuple[tuple[str, int], ...]]] = []  # by number: (may end, edges)

    def merged(node: dict) -> int:  # type: ignore[type-arg]
        edges = tuple(sorted((word, merged(child)) for word, child in node.items() if word != _END))
        signature = (_END in node, edges)
        if signature not in numbers:
            numbers[signature] = len(nodes)
            nodes.append(signature)
        return numbers[signature]

    def then(child: int) -> str:
        may_end, edges = nodes[child]
        if not edges:
            return ""
        return f" [<n{child}>]" if may_end else f" <n{child}>"

    top = merged(trie)
    lines = ["#JSGF V1.0;", "grammar expected;"]
    for number, (_, edges) in enumerate(nodes):
        if edges:
            body = " | ".join(f"({word}{then(child)})" for word, child in edges)
            public = "public " if number == top and not repeatable else ""
            lines.append(f"{public}<n{number}> = {body};")
    if repeatable:
        lines.append(f"public <phrases> = <n{top}>+;")
    return "\n".join(lines) + "\n"
