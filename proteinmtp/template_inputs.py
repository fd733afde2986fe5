"""The templates a run trains and predicts with: a collator's :class:`~proteinmtp.templates.TemplateProvider`
for the chains of a split (:func:`provider_for`), and a loaded run's database and search
(:class:`RunTemplates`, :func:`run_templates`: the recorded database, ``--template_db``, ``--templates``),
with the templates each prediction used (:func:`describe_hits`). Built on ``proteinmtp.templates``; knows no
model (``model.load_run`` calls it)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from proteinmtp.rundir import RunLoadError
from proteinmtp.templates import (
    DEFAULT_BIN_EDGES,
    TemplateDatabase,
    TemplateError,
    TemplateHit,
    TemplateOptions,
    TemplateProvider,
    search_templates,
    template_features,
)


def provider_for(db: TemplateDatabase, samples: Sequence, k: int, options: TemplateOptions | None = None, *,
                 bin_edges: np.ndarray = DEFAULT_BIN_EDGES, cache_dir: str | Path | None = None,
                 threads: int = 1, stats: dict | None = None) -> TemplateProvider:
    """A :class:`TemplateProvider` for ``samples`` (every chain a collator or predictor will ask about;
    an id given twice must name one sequence): their hits searched in ``db`` (cached under ``cache_dir``),
    selected with ``options``."""
    from types import SimpleNamespace

    unique: dict[str, object] = {}
    for s in samples:      # a chain in both the training and the validation data is searched once; an id that
        seen = unique.setdefault(s.id, s)     # names another sequence there is searched under that sequence's
        if seen.sequence != s.sequence:      # query_id (found again through ``TemplateProvider.by_sequence``)
            q = SimpleNamespace(id=query_id(s.sequence), sequence=s.sequence, cluster=getattr(s, "cluster", None))
            unique.setdefault(q.id, q)
    found = search_templates(list(unique.values()), db, cache_dir=cache_dir, threads=threads, stats=stats)
    by_seq = {rec.query_sequence: rec for key, rec in found.items() if key.startswith("query:")}
    return TemplateProvider(db, found, options or TemplateOptions(), int(k), np.asarray(bin_edges).copy(),
                            by_sequence=by_seq)


def query_id(sequence: str) -> str:
    """The id a sequence without one is searched under (``query:`` + 16 hex digits of its SHA-256)."""
    return "query:" + hashlib.sha256(sequence.encode()).hexdigest()[:16]


def describe_hits(hits: Sequence[TemplateHit]) -> list[dict]:
    """The templates a prediction used, best first: [{"id", "identity", "coverage", "evalue", "bits"}]
    (what a REMARK or a per-protein CSV row names)."""
    return [{"id": h.target_id, "identity": round(float(h.identity), 4), "coverage": round(float(h.coverage), 4),
             "evalue": float(h.evalue), "bits": float(h.bits)} for h in hits]



class RunTemplates:
    """The templates a loaded run predicts with: its database (``templates.TemplateDatabase``), how many
    templates per chain (at most the head's K slots) and the selection options it trained with (the
    evaluation rules: identity ceiling only). ``features`` searches sequences (once each per process) and
    builds their whole-chain features and the hits used."""

    def __init__(self, db, k_slots: int, k_use: int, options):
        self.db, self.k_slots, self.k_use, self.options = db, int(k_slots), int(k_use), options
        self._hits: dict[str, list] = {}

    def hits(self, sequences: list[str]) -> list[list]:
        """The selected hits of every sequence (searched in one MMseqs2 call for the new ones)."""
        new = sorted({s for s in sequences if s not in self._hits})
        if new:
            from types import SimpleNamespace

            found = search_templates([SimpleNamespace(id=query_id(s), sequence=s, cluster=None) for s in new], self.db)
            for s in new:
                self._hits[s] = self.options.select(found[query_id(s)], self.k_use)
        return [self._hits[s] for s in sequences]

    def features(self, sequences: list[str], bin_edges: np.ndarray) -> tuple[list[dict], list[list]]:
        hits = self.hits(sequences)
        return [template_features(s, h, self.db, self.k_slots, bin_edges=bin_edges)
                for s, h in zip(sequences, hits)], hits



def run_templates(cfg: dict, head_cfg, template_db: str | None = None,
                  templates: int | None = None) -> RunTemplates | None:
    """The templates a run predicts with (None: trained without, or ``templates`` 0 turns them off).

    The database is the one the run recorded (training_config.json "templates": absolute path + SHA-256),
    which must be there unchanged, or ``template_db`` (then checked like a training database: training chains
    only, not another build's training split). ``templates`` (default: the head's K) uses fewer.
    RunLoadError (one line: what to pass) otherwise.
    """
    k_slots = int(head_cfg.templates)
    rec = cfg.get("templates") or {}
    if templates is not None and templates < 0:
        raise RunLoadError(f"--templates must be at least 0, got {templates}")
    if k_slots == 0:
        if templates:
            raise RunLoadError(f"this run was trained without templates; --templates {templates} needs a run "
                               "trained with them (pass --templates 0 or leave it out)")
        return None
    if templates == 0:
        return None
    if templates is not None and templates > k_slots:
        raise RunLoadError(f"--templates {templates}: this run's head takes at most {k_slots} templates")
    known = set(TemplateOptions.__dataclass_fields__)
    options = TemplateOptions(**{k: v for k, v in rec.items() if k in known})
    try:
        if template_db is not None:
            db = TemplateDatabase.load(template_db)
            db.check_statistics(cfg.get("global_stats") or {})
        else:
            if not rec.get("path") or not rec.get("fingerprint"):
                raise RunLoadError("the run's training_config.json records no template database; pass "
                                   "--template_db (a dataset of training chains) or --templates 0")
            db = TemplateDatabase.load(rec["path"], expect_fingerprint=rec["fingerprint"])
    except TemplateError as e:
        raise RunLoadError(str(e)) from None
    return RunTemplates(db, k_slots, k_slots if templates is None else templates, options)


__all__ = ["provider_for", "query_id", "describe_hits", "RunTemplates", "run_templates"]
