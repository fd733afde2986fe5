"""FASTA input: streamed parsing (plain or gzip, UTF-8/UTF-16/Latin-1), sequence checks, length checks and
file-name stems of record ids.

* Sequences are upper-cased and stripped of whitespace; one trailing ``*`` (FASTA stop) is dropped. Any
  other letter outside the 20 amino acids plus X/B/Z/U/O is an :class:`InputError` naming the record and
  the 1-based position.
"""

from __future__ import annotations

import gzip
import io
import re
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO

from proteinmtp.constants import ALLOWED_AA

_ALLOWED = frozenset(ALLOWED_AA)
_STEM_RE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_STEM_LEN = 100


class InputError(ValueError):
    """Bad user input (sequence, FASTA, option); the message names the record and position."""


def clean_sequence(sequence: str, record: str = "sequence") -> str:
    """Upper-case ``sequence``, drop whitespace and one trailing ``*``; check every letter.

    Raises :class:`InputError` for an empty record or a letter outside ALLOWED_AA (20 amino acids + XBZUO),
    naming ``record`` and the 1-based position of the first bad letter.
    """
    seq = "".join(str(sequence).split()).upper()
    if seq.endswith("*"):
        seq = seq[:-1]
    if not seq:
        raise InputError(f"record {record!r} has an empty sequence; give at least one residue")
    for i, c in enumerate(seq):
        if c not in _ALLOWED:
            raise InputError(f"record {record!r}: invalid residue letter {c!r} at position {i + 1}; "
                             f"allowed are the 20 amino acids and X, B, Z, U, O")
    return seq


def _fasta_records(lines: Iterable[tuple[int, str]], source: str) -> Iterator[tuple[str, str]]:
    """(record id, raw sequence) from numbered text lines, one record held at a time (see parse_fasta)."""
    rid: str | None = None
    parts: list[str] = []
    n = 0
    for lineno, line in lines:
        line = line.strip()
        if not line or line.startswith(";"):
            continue
        if line.startswith(">"):
            if rid is not None:
                yield rid, "".join(parts)
            n += 1
            header = line[1:].strip()
            rid, parts = (header.split()[0] if header else f"record_{n}"), []
        elif rid is None:
            raise InputError(f"{source}: line {lineno} has sequence text before the first '>' header; "
                             "is this a FASTA file?")
        else:
            parts.append(line)
    if rid is None:
        raise InputError(f"{source}: no FASTA record found (records start with '>')")
    yield rid, "".join(parts)


def parse_fasta(text: str, source: str = "FASTA") -> list[tuple[str, str]]:
    """(record id, raw sequence) pairs of FASTA text; the id is the header up to the first whitespace.

    Raises :class:`InputError` when there is no record or sequence text comes before the first ``>``.
    Sequences are NOT checked here (see :func:`clean_sequence`).
    """
    return list(_fasta_records(enumerate(text.removeprefix("\ufeff").splitlines(), 1), source))


def _decoded_lines(stream: IO[bytes], source: str, notes: list[str] | None) -> Iterator[tuple[int, str]]:
    """Numbered text lines of a binary stream. UTF-8 (a leading byte-order mark is dropped); UTF-16 when the
    stream starts with a UTF-16 byte-order mark; a line that is not UTF-8 is read as Latin-1 (every byte is
    one character, so a stray byte in a header is kept and one in a sequence gives the usual bad-letter
    error with its position). The first such line is reported in ``notes``."""

    if stream.read(2) in (b"\xff\xfe", b"\xfe\xff"):
        stream.seek(0)
        text = io.TextIOWrapper(stream, encoding="utf-16", newline=None)
        try:
            yield from enumerate(text, 1)
        except UnicodeDecodeError as e:
            raise InputError(f"{source}: starts with a UTF-16 byte-order mark but is not valid UTF-16 ({e})") from None
        finally:
            text.detach()
        return
    stream.seek(0)
    warned = False
    for lineno, raw in enumerate(stream, 1):
        if lineno == 1:
            raw = raw.removeprefix(b"\xef\xbb\xbf")
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            line = raw.decode("latin-1")
            if not warned and notes is not None:
                notes.append(f"{source}: line {lineno} has a byte that is not UTF-8 (0x{raw[e.start]:02x}); "
                             "lines that are not UTF-8 are read as Latin-1")
            warned = True
        yield lineno, line


def iter_fasta(path: str | Path, notes: list[str] | None = None) -> Iterator[tuple[str, str]]:
    """Records of a FASTA file (plain or gzipped), streamed: memory holds one record, never the file.

    Same records as :func:`parse_fasta` of the decoded text (encodings: :func:`_decoded_lines`). InputError
    if the file cannot be opened, or (when reached) a corrupt gzip stream or a FASTA format error; notes on
    how it was decoded are appended to ``notes``.
    """

    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below; a generator holds it while records are read
    except FileNotFoundError:
        raise InputError(f"FASTA file {path} does not exist") from None
    except OSError as e:
        raise InputError(f"cannot read FASTA file {path}: {e}") from None
    with fh:
        try:
            magic = fh.read(2)
            fh.seek(0)
            stream: IO[bytes] = gzip.GzipFile(fileobj=fh, mode="rb") if magic == b"\x1f\x8b" else fh
            yield from _fasta_records(_decoded_lines(stream, str(path), notes), str(path))
        except (EOFError, zlib.error, gzip.BadGzipFile) as e:
            raise InputError(f"cannot read FASTA file {path}: truncated or corrupt gzip stream ({e})") from None
        except OSError as e:
            raise InputError(f"cannot read FASTA file {path}: {e}") from None


def read_fasta(path: str | Path, notes: list[str] | None = None) -> list[tuple[str, str]]:
    """Every record of a FASTA file as a list (small files; stream large ones with :func:`iter_fasta`)."""
    return list(iter_fasta(path, notes))


class RecordNamer:
    """File-name stems for record ids, one call per record in input order (the streaming form of
    :func:`record_stems`): unsafe characters → ``_``, at most 100 characters, unique (a repeated stem gets
    ``_2``, ``_3``, … in input order; compared case-insensitively, so the names are safe on
    case-insensitive file systems). Holds one short entry per stem seen (the names must stay unique over
    the whole FASTA, and every shard of it names all records the same way)."""

    def __init__(self) -> None:
        self.count = 0
        self._seen: dict[str, tuple[int, str]] = {}

    def name(self, rid: str) -> tuple[str, str | None]:
        """(stem, note): the note says when the id was renamed (record number, the record it collides with)."""
        self.count += 1
        n = self.count
        stem = _STEM_RE.sub("_", rid).strip("._")[:MAX_STEM_LEN] or "record"
        cand, k = stem, 1
        while cand.lower() in self._seen:
            k += 1
            cand = f"{stem}_{k}"
        note = None
        if k > 1:
            first, first_id = self._seen[stem.lower()]
            same = "repeats the id of" if first_id == rid else "has the same file name as"
            note = f"record {n} {rid!r} {same} record {first} {first_id!r}; its files are named {cand!r}"
        self._seen[cand.lower()] = (n, rid)
        return cand, note


def record_stems(record_ids: Iterable[str], notes: list[str] | None = None) -> list[str]:
    """File-name stems for record ids (rules: :class:`RecordNamer`). Each renaming is reported in ``notes``."""
    namer, out = RecordNamer(), []
    for rid in record_ids:
        stem, note = namer.name(rid)
        if note is not None and notes is not None:
            notes.append(note)
        out.append(stem)
    return out


MIN_LEN = 2  # a distance matrix needs at least two residues


def check_lengths(records: Sequence[tuple[str, str]], max_len: int | None) -> None:
    """InputError naming the first record shorter than 2 or longer than ``max_len`` residues (None = no limit)."""
    for rid, seq in records:
        if len(seq) < MIN_LEN:
            raise InputError(f"record {rid!r} has {len(seq)} residue; at least {MIN_LEN} are needed")
        if max_len and len(seq) > max_len:
            raise InputError(f"record {rid!r} has {len(seq)} residues; this model supports at most {max_len}")
