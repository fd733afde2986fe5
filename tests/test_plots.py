"""Figures and the HTML viewer: PNG files of the promised pixel size, viewer data that round-trips."""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from proteinmtp import plots, viewer
from tests.conftest import helix_ca


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) read from the PNG IHDR chunk (independent of matplotlib)."""
    head = Path(path).read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def png_is_not_blank(path: Path) -> bool:
    import matplotlib.image as mpimg

    img = mpimg.imread(path)
    return float(img[..., :3].std()) > 0.01


def _dm(x: np.ndarray) -> np.ndarray:
    return np.linalg.norm(x[:, None] - x[None], axis=-1)


@pytest.fixture(scope="module")
def arrays():
    rng = np.random.default_rng(0)
    true = _dm(helix_ca(40))
    pred = true + rng.normal(scale=1.0, size=true.shape)
    pred = (pred + pred.T) / 2
    np.fill_diagonal(pred, 0)
    true_missing = true.copy()
    true_missing[3, :] = true_missing[:, 3] = np.nan
    return pred, true, true_missing


def test_heatmaps_size(tmp_path, arrays):
    pred, _, true_missing = arrays
    p = plots.distance_heatmaps([("a", pred, true_missing), ("b", pred, true_missing)], tmp_path / "h.png")
    assert png_size(p) == (900, 840)  # figsize (9, 4.2 * 2) at 100 dpi
    assert png_is_not_blank(p)


def test_error_plots_size(tmp_path, arrays):
    pred, true, _ = arrays
    i, j = np.triu_indices(len(true), 1)
    err = pred[i, j] - true[i, j]
    assert png_size(plots.error_histogram({"model": err, "prior": 2 * err}, tmp_path / "e.png")) == (700, 450)
    mae = np.bincount(j - i, weights=np.abs(err)) / np.maximum(np.bincount(j - i), 1)
    assert png_size(plots.error_by_separation({"model": mae, "prior": mae + 1}, tmp_path / "s.png")) == (800, 450)
    assert png_size(plots.scatter_by_range(pred[i, j], true[i, j], j - i, tmp_path / "sc.png")) == (600, 600)
    m = {"mae": {"model": [1.0, 2.0], "prior": [2.0, 3.0]}, "tm_score": {"model": [0.3, 0.4]}}
    p = plots.metrics_vs_length([50, 120], m, tmp_path / "len.png")
    assert png_size(p) == (840, 400)  # 4.2 in per panel
    for f in ("e.png", "s.png", "sc.png", "len.png"):
        assert png_is_not_blank(tmp_path / f)


def test_training_curves_and_torn_log(tmp_path):
    log = tmp_path / "train_log.jsonl"
    rows = [{"step": s, "loss": 1.0 / s, "learning_rate": 1e-3} for s in range(1, 11)]
    rows.append({"step": 10, "eval_mae": 4.2, "eval_loss": 0.5})
    log.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 11, "lo')  # torn last line
    read = plots.read_train_log(log)
    assert read == rows
    p = plots.training_curves(read, tmp_path / "c.png")
    assert png_size(p) == (1400, 400)
    assert png_is_not_blank(p)


def test_separation_ranges():
    names = plots.separation_range_of(np.array([0, 1, 5, 6, 11, 12, 23, 24, 300]))
    assert list(names) == ["", "local", "local", "short", "short", "medium", "medium", "long", "long"]


def _viewer_data(html_text: str) -> dict:
    m = re.search(r"const DATA = (\{.*?\});\n", html_text)
    assert m, "no DATA in the viewer page"
    return json.loads(m.group(1).replace("<\\/", "</"))


def test_viewer_superposes_and_is_self_contained(tmp_path):
    native = helix_ca(30)
    native[7] = np.nan  # a residue without Cα
    theta = 0.7
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    pred = np.nan_to_num(native) @ rot.T + np.array([5.0, -3.0, 2.0])  # a rigid motion of the native
    pred[7] = [0.0, 0.0, 0.0]
    conf = np.linspace(0, 100, 30)
    p = viewer.write_viewer_html(tmp_path / "v.html", pred, native, "A" * 30, title="t<x>", confidence=conf)
    text = p.read_text()
    assert "<canvas" in text and "http://" not in text and "https://" not in text and "src=" not in text
    assert "t&lt;x&gt;" in text  # title escaped
    data = _viewer_data(text)
    assert data["native"][7] is None
    ok = [i for i in range(30) if i != 7]
    aligned = np.array(data["pred"])[ok]
    # a rigid motion superposes back onto the native exactly
    np.testing.assert_allclose(aligned, native[ok], atol=2e-3)
    np.testing.assert_allclose(np.array(data["dev"])[ok], 0.0, atol=5e-3)
    np.testing.assert_allclose(data["conf"], conf, atol=0.01)
    assert "RMSD after superposition: 0.00" in text


def test_viewer_rejects_bad_shapes():
    with pytest.raises(ValueError, match="must agree"):
        viewer.viewer_html(np.zeros((3, 3)), np.zeros((4, 3)), "AAA")


_NODE_HARNESS = r"""
const fs = require("fs");
const html = fs.readFileSync(process.argv[2], "utf8");
const m = html.match(/<script>([\s\S]*?)<\/script>/);
let strokes = 0; const handlers = {};
const ctx = { clearRect() {}, beginPath() {}, moveTo() {}, lineTo() {}, stroke() { strokes++; } };
const canvas = { width: 720, height: 560, style: {}, getContext: () => ctx,
  addEventListener: (n, f) => { handlers[n] = f; }, getBoundingClientRect: () => ({ left: 0, top: 0 }) };
const info = { textContent: "" };
global.document = { getElementById: (id) => (id === "c" ? canvas : info) };
global.window = { addEventListener: (n, f) => { handlers["w" + n] = f; } };
eval(m[1]);
const first = strokes;
handlers.mousedown({ clientX: 10, clientY: 10 });
handlers.wmousemove({ clientX: 40, clientY: 30 });   // drag: rotate and redraw
handlers.wmouseup();
for (let x = 0; x < 720 && !info.textContent; x += 8)   // hover: residue details somewhere on the trace
  for (let y = 0; y < 560 && !info.textContent; y += 8) handlers.wmousemove({ clientX: x, clientY: y });
console.log(JSON.stringify({ first, strokes, info: info.textContent }));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node.js not installed")
def test_viewer_script_runs(tmp_path):
    """The inline JavaScript runs (node.js with a stub canvas): one stroke per bonded segment, redraw on drag."""
    native = helix_ca(30)
    native[7] = np.nan                     # segments 6-7 and 7-8 of the native are not drawn
    p = viewer.write_viewer_html(tmp_path / "v.html", helix_ca(30), native, "A" * 30)
    js = tmp_path / "harness.js"
    js.write_text(_NODE_HARNESS)
    r = subprocess.run(["node", str(js), str(p)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["first"] == 29 + 27 and out["strokes"] == 2 * (29 + 27)
    assert out["info"].startswith("residue ")


@pytest.fixture
def drawn(monkeypatch):
    """The matplotlib figures the plot functions save (inspected before they are closed)."""
    figs = []
    real = plots._save

    def keep(fig, path):
        figs.append(fig)
        return real(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    return figs


def test_figures_draw_the_data_given(tmp_path, arrays, drawn):
    """Not only a PNG of the right size: the heatmaps show the matrices (NaN masked), the separation curve
    is the MAE passed in, the histogram's legend holds the mean |error| and pair count computed here, and
    the scatter draws every finite pair."""
    pred, true, true_missing = arrays
    plots.distance_heatmaps([("a", pred, true_missing)], tmp_path / "h.png")
    left, right = (ax.images[0].get_array() for ax in drawn[-1].axes[:2])
    np.testing.assert_array_equal(np.asarray(left), pred)
    assert right.mask[3].all() and right.mask[:, 3].all() and not right.mask[4, 5]
    np.testing.assert_array_equal(right.filled(-1)[4:, 4:], true_missing[4:, 4:])

    i, j = np.triu_indices(len(true), 1)
    err = pred[i, j] - true[i, j]
    mae = np.bincount(j - i, weights=np.abs(err)) / np.maximum(np.bincount(j - i), 1)
    plots.error_by_separation({"model": mae}, tmp_path / "s.png")
    (line,) = drawn[-1].axes[0].get_lines()[:1]
    np.testing.assert_allclose(line.get_xdata(), np.arange(1, len(mae)))
    np.testing.assert_allclose(line.get_ydata(), mae[1:])

    plots.error_histogram({"model": err}, tmp_path / "e.png")
    legend = [t.get_text() for t in drawn[-1].axes[0].get_legend().get_texts()]
    assert legend == [f"model: mean |err| {np.mean(np.abs(err)):.2f} Å over {err.size} pairs"]

    plots.scatter_by_range(pred[i, j], true[i, j], j - i, tmp_path / "sc.png")
    drawn_xy = np.concatenate([c.get_offsets() for c in drawn[-1].axes[0].collections])
    expected = np.stack([true[i, j], pred[i, j]], axis=1)          # x: true, y: predicted
    np.testing.assert_allclose(np.sort(drawn_xy, axis=0), np.sort(expected, axis=0))
