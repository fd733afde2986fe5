"""fileio.py: a failed write names the file and the cause (errno text), leaves no temporary file and the old
destination intact; another file's error inside the block passes through unchanged."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from proteinmtp.fileio import atomic_write, copy_atomic

REPO = Path(__file__).resolve().parents[1]

# RLIMIT_FSIZE: a write past 4 kB fails with EFBIG (Python ignores SIGXFSZ). np.save to a real file goes
# through ndarray.tofile, whose short write says only "N requested and M written".
_LIMITED = """
import resource, sys
import numpy as np
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
from proteinmtp.fileio import atomic_open, atomic_write
try:
    if sys.argv[2] == "npy":
        with atomic_open(sys.argv[1], "wb") as fh:
            np.save(fh, np.zeros(100_000))
    else:
        atomic_write(sys.argv[1], "x" * 100_000)
except OSError as e:
    print(type(e).__name__, e.errno, e, sep="|")
"""


@pytest.mark.parametrize("kind", ["npy", "text"])
def test_file_size_limit_names_file_and_cause(tmp_path: Path, kind: str) -> None:
    dest = tmp_path / f"out.{kind}"
    dest.write_text("old")
    r = subprocess.run([sys.executable, "-c", _LIMITED, str(dest), kind], capture_output=True, text=True,
                       cwd=REPO, timeout=60)
    name, errno, msg = r.stdout.strip().split("|", 2)
    assert name == "WriteError" and errno == "27", r.stdout + r.stderr            # EFBIG
    assert msg.startswith(f"{dest}: cannot write (File too large"), msg
    assert dest.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == [dest.name]


def test_unusable_directory_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("a file, not a directory")
    with pytest.raises(OSError, match=r"f/x\.json: cannot write \((File exists|Not a directory)\)"):
        atomic_write(tmp_path / "f" / "x.json", "{}")


def test_another_files_error_passes_through(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as e:
        copy_atomic(tmp_path / "missing", tmp_path / "dst")
    assert type(e.value).__name__ != "WriteError" and e.value.filename == str(tmp_path / "missing")
    assert list(tmp_path.iterdir()) == []
