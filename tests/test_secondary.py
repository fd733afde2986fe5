"""Secondary structure: DSSP states, alphabets, Q3/Q8, the SS head's loss and labels, HELIX/SHEET output,
the hand from predicted helices, and backward compatibility of datasets and runs without it."""

from __future__ import annotations

import gemmi
import numpy as np
import pytest
import torch

from proteinmtp import geometry as G
from proteinmtp import secondary as S
from proteinmtp.structure import read_structure
from proteinmtp.structure_writer import trace_string


@pytest.fixture(scope="module")
def chain_1a8o(test_data_dir):
    return read_structure(test_data_dir / "1A8O.pdb.gz")[0]


def _records(path, kind: str) -> list[tuple[int, int]]:
    """(first, last) author residue numbers of the HELIX (kind "helix") or SHEET records of chain A."""
    st = gemmi.read_structure(str(path))
    if kind == "helix":
        return [(h.start.res_id.seqid.num, h.end.res_id.seqid.num) for h in st.helices if h.start.chain_name == "A"]
    return [(s.start.res_id.seqid.num, s.end.res_id.seqid.num) for sh in st.sheets for s in sh.strands
            if s.start.chain_name == "A"]


# ---------------------------------------------------------------------------------------------- DSSP

def test_dssp_helices_match_deposited_helix_records(test_data_dir, chain_1a8o):
    """1A8O (HIV capsid C-terminal domain, all-α): every deposited HELIX range is mostly H/G/I in our
    assignment, and nothing outside them is called a helix or a strand of more than a few residues."""
    c = chain_1a8o
    ss = S.chain_ss8(c)
    assert len(ss) == len(c) and set(ss) <= set(S.SS8 + S.NO_STATE)
    num = np.array([int(r) for r in c.residue_ids])
    inside = np.zeros(len(c), bool)
    for a, b in _records(test_data_dir / "1A8O.pdb.gz", "helix"):
        sel = (num >= a) & (num <= b)
        inside |= sel
        frac = np.mean([ss[k] in "HGI" for k in np.flatnonzero(sel)])
        assert frac >= 0.7, (a, b, frac)
    assert sum(ss[k] in "HGI" for k in np.flatnonzero(~inside)) <= 3
    assert "E" not in ss
    # residues 163-172 lie inside helix 1 (161-175): α by any DSSP
    assert all(ss[k] == "H" for k in np.flatnonzero((num >= 163) & (num <= 172)))


def test_dssp_strands_match_deposited_sheet_records(test_data_dir):
    """19HC (α/β): residues in the deposited SHEET strands are mostly E/B, helices mostly H/G/I."""
    c = [x for x in read_structure(test_data_dir / "19hc.pdb.gz") if x.chain_id == "A"][0]
    ss = S.chain_ss8(c)
    pos = {r: k for k, r in enumerate(c.residue_ids)}
    for kind, letters, need in (("sheet", "EB", 0.6), ("helix", "HGI", 0.7)):
        idx = [pos[str(n)] for a, b in _records(test_data_dir / "19hc.pdb.gz", kind) for n in range(a, b + 1)
               if str(n) in pos]
        assert idx
        assert np.mean([ss[k] in letters for k in idx]) >= need, kind


def test_dssp_agrees_with_pydssp_three_states(chain_1a8o, test_data_dir):
    """pydssp (an independent simplified DSSP) on complete backbones: the H/E/loop reduction agrees."""
    import pydssp

    for c in (chain_1a8o, read_structure(test_data_dir / "2XHE.pdb.gz")[1]):
        assert np.isfinite(c.backbone).all()
        ref = "".join("-HE"[k] for k in pydssp.pydssp_numpy.assign(c.backbone).argmax(-1))
        ours = S.ss8_to_ss3(S.chain_ss8(c)).replace("C", "-")
        assert np.mean([a == b for a, b in zip(ours, ref)]) >= 0.95


def test_hbond_energy_matches_pydssp(chain_1a8o):
    """Our Kabsch–Sander energies equal pydssp's for the same atoms (our amide H passed as its 5th atom)."""
    import pydssp

    bb = chain_1a8o.backbone[:40]
    seq = chain_1a8o.sequence[:40]
    ok = S._peptide_ok(bb, np.isfinite(bb).all(axis=(1, 2)))
    h = S.amide_hydrogens(bb, seq, ok)
    donors = np.flatnonzero(np.isfinite(h).all(axis=1))
    coords = np.concatenate([bb, np.nan_to_num(h)[:, None]], axis=1)
    ref = pydssp.pydssp_numpy.get_hbond_map(coords, return_e=True)[0]     # [donor, acceptor]
    d, a = np.meshgrid(donors, np.arange(len(bb)), indexing="ij")
    d, a = d.ravel(), a.ravel()
    keep = (np.abs(d - a) >= 2) & (a < len(bb) - 1)      # pydssp pads (never computes) the last acceptor
    e = S.hbond_energy(bb, h, a[keep], d[keep])
    np.testing.assert_allclose(np.maximum(e, -9.9), np.maximum(ref[d[keep], a[keep]], -9.9), atol=1e-6)


def test_missing_backbone_atom_gets_no_state(chain_1a8o):
    bb = chain_1a8o.backbone.copy()
    bb[20, 3] = np.nan                         # residue 20 loses its O
    ss = S.dssp_ss8(bb, chain_1a8o.sequence)
    assert ss[20] == "?" and ss.count("?") == 1
    assert S.dssp_ss8(np.zeros((0, 4, 3)), "") == ""
    with pytest.raises(ValueError, match="N, CA, C, O"):
        S.dssp_ss8(np.zeros((5, 3)), "AAAAA")


def test_reader_passes_backbone(chain_1a8o):
    c = chain_1a8o
    assert c.backbone.shape == (len(c), 4, 3)
    np.testing.assert_array_equal(c.backbone[:, 1], c.ca)
    # N–CA and CA–C bond lengths of a real backbone
    assert np.allclose(np.linalg.norm(c.backbone[:, 0] - c.backbone[:, 1], axis=1), 1.46, atol=0.1)


# ---------------------------------------------------------------------------------------------- alphabets, scores

def test_three_state_mapping():
    assert S.ss8_to_ss3("HGIEBTS-?") == "HHHEECCC?"
    with pytest.raises(ValueError, match="DSSP"):
        S.ss8_to_ss3("HX")
    np.testing.assert_array_equal(S.ss8_labels("H-?E"), [0, 7, S.IGNORE_INDEX, 3])
    with pytest.raises(ValueError, match="3 states for 4"):
        S.check_ss8("HHH", 4)


def test_q_scores_by_hand():
    true = ["HHEE-?", "TTGG"]
    pred = ["HHE--H", "TSHG"]
    # Q8: chain 1 positions 0-4 (the ? skipped): H H E - - vs H H E E - -> 4 of 5; chain 2: T G -> 2 of 4
    assert S.q_score(true, pred) == pytest.approx(6 / 9)
    block = S.ss_block(list(zip(true, pred)))
    # Q3: HHEEC vs HHECC -> 4/5; CCHH vs CCHH -> 4/4 -> 8/9
    assert block["q3"] == pytest.approx(8 / 9)
    assert block["q8"] == pytest.approx(6 / 9)
    # 3-state classes: H: 4, E: 2, C: 3 -> majority H, 4/9
    assert block["q3_majority_state"] == "H" and block["q3_majority"] == pytest.approx(4 / 9)
    assert block["n_residues"] == 9
    assert S.ss_block([("???", "HHH")]) is None


# ---------------------------------------------------------------------------------------------- head, labels

def test_ss_loss_masks_unlabelled_residues():
    from proteinmtp.heads import HeadConfig
    from proteinmtp.heads.losses import LossTargets
    from proteinmtp.heads.losses import ss_loss as ss_term

    def ss_loss(logits, labels):
        return ss_term({"ss_logits": logits}, LossTargets(None, None, None, ss_labels=labels), HeadConfig())

    torch.manual_seed(0)
    logits = torch.randn(2, 5, 8)
    labels = torch.tensor([[0, 3, S.IGNORE_INDEX, 7, 1], [S.IGNORE_INDEX] * 5])
    keep = labels != S.IGNORE_INDEX
    manual = -torch.log_softmax(logits, -1)[keep].gather(1, labels[keep][:, None]).mean()
    assert ss_loss(logits, labels).item() == pytest.approx(manual.item(), rel=1e-6)
    changed = logits.clone()
    changed[0, 2] += 100.0
    changed[1] -= 50.0
    assert ss_loss(changed, labels).item() == pytest.approx(manual.item(), rel=1e-6)
    assert ss_loss(logits, torch.full((2, 5), S.IGNORE_INDEX)).item() == 0.0


def test_head_outputs_ss_probs_only_with_ss_weight():
    from proteinmtp.heads import HeadConfig, build_head

    feats, mask = torch.randn(1, 12, 16), torch.ones(1, 12, dtype=torch.bool)
    torch.set_grad_enabled(False)
    try:
        _check_heads(build_head, HeadConfig, feats, mask)
    finally:
        torch.set_grad_enabled(True)


def _check_heads(build_head, HeadConfig, feats, mask):
    for head_type in ("distance", "coords"):
        head = build_head(16, HeadConfig(head_type=head_type, ss_weight=0.5, pair_dim=8, single_dim=16, prior_input=False))
        out = head(feats, mask)
        assert out["ss_logits"].shape == (1, 12, 8)
        p = head.predict_numpy(out, 0, 10, (3.0, 0.5))["ss_probs"]
        assert p.shape == (10, 8) and np.allclose(p.sum(1), 1.0, atol=1e-5)
        plain = build_head(16, HeadConfig(head_type=head_type, ss_weight=0.0, pair_dim=8, single_dim=16, prior_input=False))
        assert "ss_logits" not in plain(feats, mask)
        assert not any(k.startswith("ss.") for k in plain.state_dict())


def test_collator_slices_labels_with_crops():
    from proteinmtp.dataset import Sample
    from proteinmtp.training import CropDataset, DistanceCollator

    L = 30
    ss8 = ("HHHH----EEEE??TTSS" * 2)[:L]
    s = Sample(id="x:A", sequence="ACDEFGHIKLMNPQRSTVWY" + "ACDEFGHIKL", ca=G.distance_matrix(np.eye(3))[:1].repeat(L, 0)
               + np.arange(L)[:, None] * 3.8, residue_ids=[str(i) for i in range(L)], source="", split="train",
               ss8=ss8)
    plain = Sample(id="y:A", sequence="ACDEFGHIKL", ca=np.arange(30.0).reshape(10, 3) * 1.3,
                   residue_ids=[str(i) for i in range(10)], source="", split="train")
    torch.manual_seed(1)
    ds = CropDataset([s, plain], max_len=8, random_crop=True)

    class Enc:
        def collate(self, seqs):
            n = max(map(len, seqs))
            return {"residue_mask": torch.tensor([[k < len(q) for k in range(n)] for q in seqs])}

    for _ in range(5):
        a, b = ds[0], ds[1]
        assert a["ss8"] == ss8[a["start"]:a["start"] + 8] and "ss8" not in b
        batch = DistanceCollator(Enc())([a, b])
        np.testing.assert_array_equal(batch["ss_labels"][0].numpy(), S.ss8_labels(a["ss8"]))
        assert (batch["ss_labels"][1] == S.IGNORE_INDEX).all()
    assert "ss_labels" not in DistanceCollator(Enc())([ds[1]])


# ---------------------------------------------------------------------------------------------- output, hand

@pytest.mark.parametrize("fmt", ["pdb", "cif"])
def test_helix_sheet_records_parse_back(chain_1a8o, fmt):
    c = chain_1a8o
    ss = "-" * 10 + "H" * 12 + "--" + "EEEE" + "-" + "GGG" + "-" * (len(c) - 32)
    text = trace_string(c.ca, c.sequence, fmt=fmt, ss8=ss, residue_numbers=c.residue_ids)
    if fmt == "pdb":
        assert sum(line.startswith("HELIX") for line in text.splitlines()) == 2
        st = gemmi.read_pdb_string(text)
    else:
        st = gemmi.make_structure_from_block(gemmi.cif.read_string(text).sole_block())
    num = [int(r) for r in c.residue_ids]
    helices = [(h.start.res_id.seqid.num, h.end.res_id.seqid.num, h.pdb_helix_class) for h in st.helices]
    assert helices == [(num[10], num[21], gemmi.Helix.HelixClass.RAlpha),
                       (num[29], num[31], gemmi.Helix.HelixClass.R310)]
    strands = [(s.start.res_id.seqid.num, s.end.res_id.seqid.num) for sh in st.sheets for s in sh.strands]
    assert strands == [(num[24], num[27])]
    with pytest.raises(ValueError, match="states for"):
        trace_string(c.ca, c.sequence, fmt=fmt, ss8=ss[:-1])


def test_hand_from_predicted_helices():
    """A right-handed helix (predicted helical) beside a longer left-handed one (predicted coil): the
    all-residue rule follows the majority and mirrors; the predicted-helix rule keeps the true hand."""
    from conftest import helix_ca

    right = helix_ca(14)
    left = G.mirror(helix_ca(30)) + np.array([40.0, 0, 0])
    xyz = np.concatenate([right, left])
    helix = np.zeros(len(xyz), bool)
    helix[:14] = True
    _, old = G.choose_hand(xyz)
    _, new = G.choose_hand(xyz, helix=helix)
    assert old["mirrored"] and old["rule"] == "all_residues"
    assert not new["mirrored"] and new["rule"] == "predicted_helices" and new["n_helix_quadruples"] == 11
    few = np.zeros(len(xyz), bool)
    few[:8] = True                                           # 5 quadruples < MIN_HELIX_QUADRUPLES: old rule
    _, fallback = G.choose_hand(xyz, helix=few)
    assert fallback["mirrored"] and fallback["rule"] == "all_residues"


# ---------------------------------------------------------------------------------------------- compatibility

def test_old_dataset_without_ss8_loads_and_bad_ss8_is_refused(tmp_path):
    import json

    from proteinmtp.dataio import open_dataset
    from proteinmtp.dataset import DatasetFormatError, Sample, save_dataset

    s = Sample(id="a:A", sequence="ACD", ca=np.arange(9.0).reshape(3, 3) * 2, residue_ids=["1", "2", "3"],
               source="", split="train")
    save_dataset(tmp_path / "old.json", [s], {}, {})
    assert "ss8" not in json.loads((tmp_path / "old.json").read_text())["samples"][0]
    back = open_dataset(tmp_path / "old.json").samples[0]
    assert back.ss8 is None and back.ss3() is None
    s.ss8 = "H-?"
    save_dataset(tmp_path / "new.json", [s], {}, {})
    back = open_dataset(tmp_path / "new.json").samples[0]
    assert back.ss8 == "H-?" and back.ss3() == "HC?"
    d = json.loads((tmp_path / "new.json").read_text())
    d["samples"][0]["ss8"] = "HH"
    (tmp_path / "bad.json").write_text(json.dumps(d))
    with pytest.raises(DatasetFormatError, match=r"bad.json: sample 0 \('a:A'\): ss8: has 2 states for 3"):
        open_dataset(tmp_path / "bad.json")


def test_old_run_head_config_reads_as_no_ss_head():
    """A run stored before ss_weight existed had no SS head: migrate() stores 0 for it, so it loads without
    one and resuming it with today's default is refused as an architecture change, never silent."""
    from dataclasses import asdict

    from proteinmtp.config import cli_flags
    from proteinmtp.heads import HeadConfig
    from proteinmtp.rundir import config_differences, migrate
    from proteinmtp.train_command import comparable_model

    old = {k: v for k, v in asdict(HeadConfig()).items() if k != "ss_weight"}
    migrated = migrate({"model": {"base_model": "x", "head": old}})["model"]
    assert HeadConfig.from_dict(migrated["head"]).ss_weight == 0.0
    assert HeadConfig.from_dict(asdict(HeadConfig())).ss_weight == HeadConfig().ss_weight
    cli_default = {name: kw for name, _, kw in cli_flags(HeadConfig)}["ss_weight"]["default"]
    assert cli_default == HeadConfig().ss_weight > 0
    diff = config_differences({"model": comparable_model(migrated)},
                              {"model": comparable_model({**migrated, "head": {**old, "ss_weight": cli_default}})})
    assert any("ss_weight" in d for d in diff)


def test_builder_stores_ss8(test_data_dir):
    from proteinmtp.builder import read_input

    r = read_input(("structure", str(test_data_dir / "1A8O.pdb.gz")))
    s = r.samples[0]
    assert s.ss8 is not None and len(s.ss8) == len(s.sequence) and "H" in s.ss8


def test_structure_from_distances_uses_predicted_helices():
    from conftest import helix_ca

    from proteinmtp.model import DistancePrediction
    from proteinmtp.predict import predicted_ss8, structure_from_distances

    xyz = helix_ca(20)
    L = len(xyz)
    probs = np.zeros((L, 8))
    probs[:, 0] = 1.0                                        # all H
    dp = DistancePrediction(sequence="A" * L, dist=G.distance_matrix(xyz), contact_prob=np.zeros((L, L)),
                            pair_confidence=np.ones((L, L)), residue_confidence=np.ones(L), ss_probs=probs)
    assert predicted_ss8(dp) == "H" * L
    sp = structure_from_distances(dp, method="classical", hand_rule="predicted_helices")
    assert sp.info["hand_rule"] == "predicted_helices"
    assert G.ca_dihedrals(sp.ca_xyz).mean() > 0              # right-handed kept
    assert structure_from_distances(dp, method="classical").info["hand_rule"] == "all_residues"   # the default
    dp.ss_probs = None
    sp = structure_from_distances(dp, method="classical", hand_rule="predicted_helices")
    assert sp.info["hand_rule"] == "all_residues"            # no SS head: the all-residue rule
    with pytest.raises(ValueError, match="hand_rule"):
        structure_from_distances(dp, hand_rule="coin")
