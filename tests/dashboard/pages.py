"""Reading dashboard pages in tests: a small tree of the HTML (the standard library's
parser), its tables by id and its figures (``.stat``) by label, as text a person reads."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

# Elements that never have children (no end tag).
VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}
)


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node | str] = field(default_factory=list)

    @property
    def text(self) -> str:
        parts = [c if isinstance(c, str) else c.text for c in self.children]
        return re.sub(r"\s+", " ", " ".join(parts)).strip()

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def walk(self) -> list[Node]:
        found = [self]
        for child in self.children:
            if isinstance(child, Node):
                found += child.walk()
        return found

    def find_all(self, tag: str | None = None, *, cls: str | None = None) -> list[Node]:
        return [
            n
            for n in self.walk()
            if (tag is None or n.tag == tag) and (cls is None or cls in n.classes)
        ]

    def by_id(self, element_id: str) -> Node:
        matches = [n for n in self.walk() if n.attrs.get("id") == element_id]
        assert len(matches) == 1, f"{len(matches)} elements with id {element_id!r}"
        return matches[0]

    def has_id(self, element_id: str) -> bool:
        return any(n.attrs.get("id") == element_id for n in self.walk())


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {name: value or "" for name, value in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse(html: str | bytes) -> Node:
    builder = _TreeBuilder()
    builder.feed(html.decode() if isinstance(html, bytes) else html)
    builder.close()
    return builder.root


def table_rows(page: Node, table_id: str, *, part: str = "tbody") -> list[list[str]]:
    """The text of each cell of each row of the table's ``part`` (tbody, thead, tfoot)."""
    table = page.by_id(table_id)
    rows = []
    for section in table.find_all(part):
        for row in section.find_all("tr"):
            rows.append(
                [
                    cell.text
                    for cell in row.children
                    if isinstance(cell, Node) and cell.tag in ("td", "th")
                ]
            )
    return rows


def stats(page: Node, within: str) -> dict[str, str]:
    """``{label: value}`` of the figures (``.stat``) inside the element ``within``."""
    shown = {}
    for stat in page.by_id(within).find_all(cls="stat"):
        (label,) = stat.find_all(cls="stat-label")
        (value,) = stat.find_all(cls="stat-value")
        shown[label.text] = value.text
    return shown


def stat_notes(page: Node, within: str) -> dict[str, str]:
    """``{label: note}`` of the figures that carry a note (``.stat-note``)."""
    notes = {}
    for stat in page.by_id(within).find_all(cls="stat"):
        (label,) = stat.find_all(cls="stat-label")
        for note in stat.find_all(cls="stat-note"):
            notes[label.text] = note.text
    return notes
