"""Self-contained HTML 3D view of a predicted Cα trace superposed on the native.

The page holds the coordinates and a small <canvas> renderer in inline JavaScript: a browser opens it
from disk with no server and no internet (no CDN). Drag to rotate, wheel to zoom, double-click to reset.

    from proteinmtp.viewer import write_viewer_html
    write_viewer_html("view.html", pred_xyz, native_xyz, sequence, title="1ABC:A", confidence=conf)
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from proteinmtp.fileio import atomic_write
from proteinmtp.geometry import superpose

_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
body { font-family: sans-serif; margin: 12px; background: #fafafa; }
canvas { border: 1px solid #bbb; background: #fff; cursor: grab; }
.legend span { display: inline-block; margin-right: 18px; }
.sw { display: inline-block; width: 22px; height: 4px; vertical-align: middle; margin-right: 5px; }
#info { font-size: 13px; color: #333; min-height: 1.2em; }
</style></head><body>
<h3>__TITLE__</h3>
<div class="legend"><span><i class="sw" style="background:#999"></i>native Cα trace</span>
<span><i class="sw" style="background:linear-gradient(90deg,#d7301f,#fdae61,#2c7bb6)"></i>predicted
(colour: __COLORBY__)</span></div>
<p style="font-size:13px">__SUMMARY__</p>
<canvas id="c" width="720" height="560"></canvas>
<div id="info">Drag to rotate, wheel to zoom, double-click to reset; hover a residue for its details.</div>
<script>
"use strict";
const DATA = __DATA__;
const cv = document.getElementById("c"), ctx = cv.getContext("2d"), info = document.getElementById("info");
let R = [[1,0,0],[0,1,0],[0,0,1]], zoom = 1.0;
const all = DATA.pred.concat(DATA.native.filter(p => p !== null));
const cen = [0,1,2].map(k => all.reduce((s, p) => s + p[k], 0) / all.length);
const rad = Math.max(...all.map(p => Math.hypot(p[0]-cen[0], p[1]-cen[1], p[2]-cen[2]))) || 1;
function mul(A, B) { return A.map(r => [0,1,2].map(j => r[0]*B[0][j] + r[1]*B[1][j] + r[2]*B[2][j])); }
function rot(ax, a) { const c = Math.cos(a), s = Math.sin(a);
  return ax === 0 ? [[1,0,0],[0,c,-s],[0,s,c]] : [[c,0,s],[0,1,0],[-s,0,c]]; }
function proj(p) { const q = [0,1,2].map(k => p[k] - cen[k]);
  const v = R.map(r => r[0]*q[0] + r[1]*q[1] + r[2]*q[2]); const sc = zoom * 0.45 * Math.min(cv.width, cv.height) / rad;
  return [cv.width/2 + sc*v[0], cv.height/2 - sc*v[1], v[2]]; }
function colour(t) { // t in [0,1]: red (low) -> orange -> blue (high)
  const stops = [[215,48,31],[253,174,97],[44,123,182]]; const x = Math.min(1, Math.max(0, t)) * 2;
  const i = Math.min(1, Math.floor(x)), f = x - i, a = stops[i], b = stops[i+1];
  return "rgb(" + [0,1,2].map(k => Math.round(a[k] + f*(b[k]-a[k]))).join(",") + ")"; }
function segments(xyz, kind) { const segs = [];
  for (let i = 0; i + 1 < xyz.length; i++) { if (xyz[i] === null || xyz[i+1] === null) continue;
    if (DATA.breaks.includes(i) && kind === "native") continue;
    const a = proj(xyz[i]), b = proj(xyz[i+1]); segs.push({a, b, z: (a[2]+b[2])/2, i, kind}); }
  return segs; }
function draw() { ctx.clearRect(0, 0, cv.width, cv.height);
  const segs = segments(DATA.native, "native").concat(segments(DATA.pred, "pred"));
  segs.sort((s, t) => s.z - t.z); const n = DATA.pred.length;
  for (const s of segs) { ctx.beginPath(); ctx.moveTo(s.a[0], s.a[1]); ctx.lineTo(s.b[0], s.b[1]);
    if (s.kind === "native") { ctx.strokeStyle = "rgba(120,120,120,0.8)"; ctx.lineWidth = 3; }
    else { const t = DATA.conf ? DATA.conf[s.i] / 100 : s.i / Math.max(1, n-1); ctx.strokeStyle = colour(t); ctx.lineWidth = 2.5; }
    ctx.stroke(); } }
let drag = null;
cv.addEventListener("mousedown", e => { drag = [e.clientX, e.clientY]; cv.style.cursor = "grabbing"; });
window.addEventListener("mouseup", () => { drag = null; cv.style.cursor = "grab"; });
window.addEventListener("mousemove", e => { if (!drag) return hover(e);
  const dx = e.clientX - drag[0], dy = e.clientY - drag[1]; drag = [e.clientX, e.clientY];
  R = mul(rot(1, dx * 0.01), mul(rot(0, dy * 0.01), R)); draw(); });
cv.addEventListener("wheel", e => { e.preventDefault(); zoom *= Math.exp(-e.deltaY * 0.001); draw(); }, {passive: false});
cv.addEventListener("dblclick", () => { R = [[1,0,0],[0,1,0],[0,0,1]]; zoom = 1.0; draw(); });
function hover(e) { const r = cv.getBoundingClientRect(), x = e.clientX - r.left, y = e.clientY - r.top;
  if (x < 0 || y < 0 || x > cv.width || y > cv.height) return; let best = -1, bd = 100;
  DATA.pred.forEach((p, i) => { const q = proj(p), d = (q[0]-x)**2 + (q[1]-y)**2; if (d < bd) { bd = d; best = i; } });
  if (best >= 0) info.textContent = "residue " + (best+1) + " " + DATA.seq[best] +
    (DATA.conf ? ", confidence " + DATA.conf[best].toFixed(1) : "") +
    (DATA.native[best] === null ? ", no native Cα" : ", deviation " + DATA.dev[best].toFixed(2) + " Å"); }
draw();
</script></body></html>
"""


def viewer_html(pred_xyz: np.ndarray, native_xyz: np.ndarray, sequence: str, *, title: str = "ProteinMTP",
                confidence: np.ndarray | None = None, breaks: Sequence[int] = (), summary: str = "") -> str:
    """HTML text of the viewer.

    pred_xyz [L, 3] Å and native_xyz [L, 3] Å (NaN rows = residue without Cα), already superposed in a common
    frame (see :func:`superpose_on_native`); confidence [L] in 0–100 colours the prediction (else rainbow
    by residue index); breaks: indices i where the native chain is broken between i and i + 1.
    """
    pred = np.asarray(pred_xyz, float)
    nat = np.asarray(native_xyz, float)
    if pred.shape != nat.shape or pred.ndim != 2 or pred.shape[1] != 3 or len(sequence) != len(pred):
        raise ValueError(f"viewer: pred {pred.shape}, native {nat.shape} and sequence length {len(sequence)} "
                         "must agree ([L, 3] each)")
    if not np.isfinite(pred).all():
        raise ValueError("viewer: predicted coordinates contain NaN/inf")
    present = np.isfinite(nat).all(axis=1)
    dev = np.where(present, np.linalg.norm(pred - np.where(present[:, None], nat, 0.0), axis=1), 0.0)
    data = {
        "pred": np.round(pred, 3).tolist(),
        "native": [np.round(p, 3).tolist() if ok else None for p, ok in zip(nat, present)],
        "conf": None if confidence is None else np.round(np.asarray(confidence, float), 2).tolist(),
        "dev": np.round(dev, 3).tolist(),
        "seq": sequence,
        "breaks": [int(b) for b in breaks],
    }
    page = _TEMPLATE.replace("__DATA__", json.dumps(data, separators=(",", ":")).replace("</", "<\\/"))
    page = page.replace("__COLORBY__", "per-residue confidence, red low → blue high" if confidence is not None
                        else "residue index, N red → C blue")
    page = page.replace("__SUMMARY__", html.escape(summary))
    return page.replace("__TITLE__", html.escape(title))


def superpose_on_native(pred_xyz: np.ndarray, native_xyz: np.ndarray) -> tuple[np.ndarray, float]:
    """Superpose pred_xyz [L, 3] Å onto native_xyz [L, 3] Å (NaN rows ignored) by Kabsch; returns (aligned, RMSD Å)."""
    mask = np.isfinite(native_xyz).all(axis=1)
    return superpose(np.asarray(pred_xyz, float), np.asarray(native_xyz, float), mask=mask)


def write_viewer_html(path: str | Path, pred_xyz: np.ndarray, native_xyz: np.ndarray, sequence: str, *,
                      title: str = "ProteinMTP", confidence: np.ndarray | None = None,
                      breaks: Sequence[int] = (), summary: str = "", superpose: bool = True) -> Path:
    """Write the viewer page atomically. With ``superpose`` the prediction is first Kabsch-aligned on the native."""
    pred = np.asarray(pred_xyz, float)
    if superpose:
        pred, rmsd = superpose_on_native(pred, native_xyz)
        summary = (summary + " " if summary else "") + f"Cα RMSD after superposition: {rmsd:.2f} Å."
    path = Path(path)
    atomic_write(path, viewer_html(pred, native_xyz, sequence, title=title, confidence=confidence,
                                         breaks=breaks, summary=summary))
    return path
