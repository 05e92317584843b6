"""Destinations that are one file on macOS and Windows: ``Cat.jpg`` and ``cat.jpg``, ``café.jpg`` in NFC and NFD.

Linux keeps them apart; APFS and NTFS compare names without case (and APFS without Unicode form), so
there one image silently overwrites the other while both rows end ``done``. The folding here is pure;
which names were already claimed is asked of a ``claim`` function, backed by SQLite (the manifest, or a
temporary database for ``plan``), so millions of names never sit in a Python set.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sci_fetch.keys.mapping import Task

SHOWN = 5  # pairs named in the warning; all of them are in failures.csv when they are treated as duplicates

Reject = tuple[str, str, str | None, str | None, str | None, str]


def fold(name: str) -> str:
    """The name as a case- and normalisation-insensitive file system compares it: NFC, case-folded, NFC
    again (case folding can undo the composition: 'ǰ' folds to 'ǰ' plus a combining caron)."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", name).casefold())


@dataclass(frozen=True, slots=True)
class Collision:
    """``dest`` (of ``image_id``) is the same file as ``first_dest`` (of ``first_id``) after folding."""

    first_id: str
    first_dest: str
    image_id: str
    dest: str


# claim((image_id, dest) pairs) -> the pairs whose folded name another image of this run already holds
Claim = Callable[[Sequence[tuple[str, str]]], list[Collision]]


def shown(name: str) -> str:
    """A name as the user can tell it apart: NFC and NFD look the same, so non-ASCII is escaped."""
    return repr(name) if name.isascii() else ascii(name)


@dataclass
class FoldCheck:
    """Checks each planned batch; with ``as_duplicates`` the later name of a colliding pair is not fetched
    (a ``duplicate`` reject, like two records with one destination), else it is only counted for the warning."""

    claim: Claim
    as_duplicates: bool = False
    found: int = 0
    examples: list[Collision] = field(default_factory=list)
    warned: bool = False

    def apply(self, tasks: list[Task], claim: Claim | None = None) -> tuple[list[Task], list[Reject]]:
        """``claim``: instead of the check's own (the manifest's, inside the transaction that plans the batch)."""
        collisions = (claim or self.claim)([(t.image_id, t.dest) for t in tasks])
        if not collisions:
            return tasks, []
        self.found += len(collisions)
        self.examples.extend(collisions[: SHOWN - len(self.examples)])
        if not self.as_duplicates:
            return tasks, []
        later = {c.image_id: c for c in collisions}
        kept = [t for t in tasks if t.image_id not in later]
        rejects: list[Reject] = [
            (
                "duplicate",
                "images[]",
                t.image_id,
                t.key,
                t.dest,
                f"destination is the same file as {later[t.image_id].first_dest} (of {later[t.image_id].first_id}) "
                "where letter case or Unicode form do not count (macOS, Windows); fetched once",
            )
            for t in tasks
            if t.image_id in later
        ]
        return kept, rejects

    def warning(self) -> str | None:
        if not self.found:
            return None
        pairs = "; ".join(f"{shown(c.first_dest)} and {shown(c.dest)}" for c in self.examples)
        more = f" (and {self.found - len(self.examples)} more)" if self.found > len(self.examples) else ""
        if self.as_duplicates:
            action = "each later one is left out as a duplicate and listed in failures.csv"
        else:
            action = (
                "on macOS or Windows each pair is one file and one image overwrites the other: rename them in "
                "the COCO file, download to a case-sensitive file system, or set case_insensitive_names = true "
                "(--case-insensitive-names) to fetch the first of each and list the others in failures.csv"
            )
        return (
            f"{self.found} destination(s) differ from another only in letter case or Unicode form: {pairs}{more}; "
            f"{action}"
        )

    def warn(self, log: logging.Logger) -> None:
        """Once per run, when planning ends."""
        message = self.warning()
        if message is not None and not self.warned:
            self.warned = True
            log.warning("%s", message)
