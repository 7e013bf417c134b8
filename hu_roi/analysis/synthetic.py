"""Write a deterministic synthetic 60-patient trial (30 IMRT, 30 3DCRT) as two CSVs.

    python scripts/make_synthetic_trial.py --out DIR [--seed N]
    (or: from hu_roi.analysis.synthetic import make_trial, write_trial)

writes ``DIR/measurements.csv`` (measurement CSV of docs/csv_schemas.md: per patient and measured
timepoint T0/T2/T3 one irradiated target vertebra and one unirradiated vertebra) and
``DIR/clinical.csv`` (clinical CSV, docs/analysis.md).  The data are invented; the counts
are those printed in the trial paper (NCT02832830):

- deaths by 3 months 10 IMRT / 11 3DCRT, between 3 and 6 months another 2 / 7;
- lesion types 17 mixed / 6 osteolytic / 7 osteoblastic (IMRT), 10 / 14 / 6 (3DCRT), and
  the numbers measured per lesion type at 3 and 6 months of Table 3;
- Table 1 categorical counts (gender, primary site, localisation, number of metastases,
  distant metastases, therapies, baseline status and medication) exactly; age, KPS, weight
  and height with the printed mean and SD (rounded to whole numbers / 10 for KPS);
- pathologic fractures of Table 4 (one IMRT fracture at 3 months only as a > 20 % loss of
  vertebral height, to exercise the VCF rule);
- Chow categories of Table 5 (one IMRT patient alive at 6 months without pain assessment,
  which is how the paper's 6-month IMRT n = 17 of 18 alive is reproduced);
- HU at baseline and the relative change at 3 and 6 months per arm and lesion type with
  the medians and SDs of Table 3 (exact before clipping to plausible values).

Everything else (names of levels, dates, OMED doses) is invented and only plausible.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ARMS = ("IMRT", "3DCRT")
DEFAULT_SEED = 20161114

# lesion -> (dead by T2, dead between T2 and T3, alive at T3)   (Tables 2-3, CONSORT)
FATES = {
    "IMRT": {"mixed": (6, 2, 9), "osteolytic": (2, 0, 4), "osteoblastic": (2, 0, 5)},
    "3DCRT": {"mixed": (5, 1, 4), "osteolytic": (6, 5, 3), "osteoblastic": (0, 1, 5)},
}
# Table 3: (T0 median, T0 SD, %T2 median, %T2 SD, %T3 median, %T3 SD)
HU_TARGETS = {
    ("IMRT", "mixed"): (242.0, 100.1, 38.8, 41.2, 55.0, 61.1),
    ("IMRT", "osteolytic"): (178.5, 74.3, 20.3, 83.1, -0.8, 55.4),
    ("IMRT", "osteoblastic"): (419.0, 247.6, 15.4, 35.8, 15.4, 47.2),
    ("3DCRT", "mixed"): (230.5, 77.3, 60.8, 48.5, 145.9, 42.2),
    ("3DCRT", "osteolytic"): (156.5, 60.9, 9.3, 21.2, 27.7, 55.0),
    ("3DCRT", "osteoblastic"): (426.0, 159.8, 3.1, 27.5, 13.6, 27.3),
}
# Table 1: mean, SD
CONTINUOUS = {
    "age": {"IMRT": (66.1, 10.5), "3DCRT": (62.5, 11.8)},
    "kps": {"IMRT": (64.9, 9.32), "3DCRT": (61.3, 9.7)},
    "weight_kg": {"IMRT": (75.8, 14.9), "3DCRT": (76.2, 19.4)},
    "height_cm": {"IMRT": (171.6, 8.8), "3DCRT": (172.2, 8.6)},
}
PRIMARY = {"IMRT": {"lung": 11, "breast": 7, "prostate": 6, "other": 6},
           "3DCRT": {"lung": 16, "breast": 6, "prostate": 1, "other": 7}}  # fmt: skip
MALES = {"IMRT": 17, "3DCRT": 16}
LOCALISATION = {"IMRT": {"cervical": 4, "thoracic": 15, "lumbar": 11, "sacrum": 0},
                "3DCRT": {"cervical": 5, "thoracic": 15, "lumbar": 7, "sacrum": 3}}  # fmt: skip
N_METS = {"IMRT": {1: 17, 2: 4, 3: 9}, "3DCRT": {1: 10, 2: 9, 3: 11}}
FLAGS = {  # yes counts IMRT, 3DCRT
    "mets_visceral": (14, 10),
    "mets_lung": (7, 6),
    "mets_brain": (4, 5),
    "mets_soft_tissue": (5, 5),
    "therapy_hormone": (12, 6),
    "therapy_immuno": (4, 5),
    "therapy_chemo": (14, 20),
    "surgery": (18, 13),
    "neuro_deficit": (4, 3),
    "bisphosphonates": (13, 7),
    "corset": (9, 10),
    "med_sleeping": (5, 2),
    "med_psychiatric": (9, 6),
    "med_opiate": (20, 17),
    "med_nsaid": (23, 19),
}
# Table 5: CR, PR, PP, IP at T2 and T3
CHOW = {
    ("IMRT", "T2"): (10, 4, 1, 5),
    ("3DCRT", "T2"): (5, 4, 3, 7),
    ("IMRT", "T3"): (7, 5, 2, 3),
    ("3DCRT", "T3"): (3, 4, 3, 2),
}
LEVELS_BY_REGION = {
    "cervical": ["C3", "C4", "C5", "C6", "C7"],
    "thoracic": [f"T{i}" for i in range(2, 13)],
    "lumbar": ["L1", "L2", "L3", "L4", "L5"],
    "sacrum": ["S1"],
}
T_DAYS = {"T0": -7, "T2": 91, "T3": 182}


def _exact(
    rng: np.random.Generator, n: int, center: float, sd: float, *, median: bool
) -> np.ndarray:
    """n values with exactly the given median (or mean) and sample SD."""
    if n == 1:
        return np.array([center])
    z = rng.standard_normal(n)
    z = (z - z.mean()) / z.std(ddof=1)
    z = z - (np.median(z) if median else 0.0)
    return center + sd * z


def _counts_list(rng: np.random.Generator, counts: dict, n: int) -> list:
    items = [k for k, c in counts.items() for _ in range(c)]
    if len(items) != n:
        raise ValueError(f"counts {counts} do not sum to {n}")
    return list(rng.permutation(np.array(items, dtype=object)))


def _flag_list(rng: np.random.Generator, yes: int, n: int) -> list[bool]:
    return [bool(v) for v in rng.permutation([True] * yes + [False] * (n - yes))]


def _uid(*parts: object) -> str:
    h = hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()
    return "2.25." + str(int(h[:30], 16))


def _pain(rng: np.random.Generator, cat: str, vas0: int, omed0: float) -> tuple[int, float]:
    """A (VAS, OMED) follow-up pair whose Chow category is ``cat``."""
    if cat == "CR":
        return 0, (omed0 * 0.5 if omed0 > 0 and rng.random() < 0.4 else omed0)
    if cat == "PR":
        if omed0 > 0 and rng.random() < 0.3:
            return vas0, omed0 * 0.5
        return max(1, vas0 - 2 - int(rng.integers(0, 3))), omed0
    if cat == "PP":
        if rng.random() < 0.4:
            return min(10, vas0 + int(rng.integers(0, 2))), (omed0 * 1.5 if omed0 > 0 else 30.0)
        return min(10, vas0 + 2 + int(rng.integers(0, 2))), omed0
    # IP: stable pain with stable analgesics, or less pain bought with a small dose increase
    if omed0 > 0 and rng.random() < 0.3:
        return max(1, vas0 - 3), omed0 * 1.1
    return vas0 + int(rng.choice([-1, 0, 1])), omed0


def make_trial(seed: int = DEFAULT_SEED) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Build the synthetic trial.

    Returns
    -------
    measurements, clinical : pandas.DataFrame
        The measurement CSV rows and the clinical CSV rows (columns as documented).
    """
    rng = np.random.default_rng(seed)
    # block randomisation, block size 6
    arms: list[str] = []
    for _ in range(10):
        arms += list(rng.permutation(["IMRT"] * 3 + ["3DCRT"] * 3))
    pids = [f"P{i + 1:03d}" for i in range(60)]
    rt0 = pd.Timestamp("2016-11-07")
    clinical_rows: list[dict] = []
    meas_rows: list[dict] = []
    cutoff = pd.Timestamp("2018-09-28")

    for arm in ARMS:
        idx = [i for i, a in enumerate(arms) if a == arm]
        n = len(idx)
        # lesion and fate
        lf = [
            (les, fate)
            for les, c in FATES[arm].items()
            for fate, k in zip(("d2", "d3", "a3"), c, strict=True)
            for _ in range(k)
        ]
        lf = [lf[i] for i in rng.permutation(n)]
        primary = _counts_list(rng, PRIMARY[arm], n)
        # sex consistent with primary site
        n_m_rest = MALES[arm] - PRIMARY[arm]["prostate"]
        rest = [j for j in range(n) if primary[j] in ("lung", "other")]
        male_rest = set(rng.choice(rest, size=n_m_rest, replace=False).tolist())
        sex = ["male" if primary[j] == "prostate" or j in male_rest else "female" for j in range(n)]
        loc = _counts_list(rng, LOCALISATION[arm], n)
        nmets = _counts_list(rng, N_METS[arm], n)
        flags = {k: _flag_list(rng, v[ARMS.index(arm)], n) for k, v in FLAGS.items()}
        cont = {}
        for k, spec in CONTINUOUS.items():
            mean, sd = spec[arm]
            v = _exact(rng, n, mean, sd, median=False)
            cont[k] = (
                np.clip(np.round(v / 10) * 10, 40, 100)
                if k == "kps"
                else np.round(v, 0 if k == "age" else 1)
            )
        fates = [f for _, f in lf]
        alive2 = [j for j in range(n) if fates[j] != "d2"]
        alive3 = [j for j in range(n) if fates[j] == "a3"]
        # fractures (Table 4)
        frac0 = set()
        frac_flag = set()  # flagged at T2/T3 (new)
        vcf = set()
        survivors = list(rng.permutation(alive3))
        if arm == "IMRT":
            frac0 = {survivors[0]}
            frac_flag = {survivors[1]}
            vcf = {survivors[2]}
        else:
            early = list(rng.permutation([j for j in range(n) if fates[j] == "d2"]))
            frac0 = {survivors[0], survivors[1], early[0], early[1]}
        # pain categories (Table 5)
        cat2 = dict(
            zip(
                rng.permutation(alive2),
                _counts_list(
                    rng,
                    dict(zip("CR PR PP IP".split(), CHOW[(arm, "T2")], strict=True)),
                    len(alive2),
                ),
                strict=True,
            )
        )
        eval3 = list(rng.permutation(alive3))
        no_pain_t3 = eval3[0] if len(eval3) > sum(CHOW[(arm, "T3")]) else None
        eval3 = [j for j in eval3 if j != no_pain_t3]
        cat3 = dict(
            zip(
                eval3,
                _counts_list(
                    rng,
                    dict(zip("CR PR PP IP".split(), CHOW[(arm, "T3")], strict=True)),
                    len(eval3),
                ),
                strict=True,
            )
        )
        # HU per lesion group
        hu0 = np.zeros(n)
        pct2 = np.full(n, np.nan)
        pct3 = np.full(n, np.nan)
        for les in ("mixed", "osteolytic", "osteoblastic"):
            grp = [j for j in range(n) if lf[j][0] == les]
            t = HU_TARGETS[(arm, les)]
            hu0[grp] = np.clip(_exact(rng, len(grp), t[0], t[1], median=True), 60, 1200)
            g2 = [j for j in grp if j in alive2]
            g3 = [j for j in grp if j in alive3]
            if g2:
                pct2[g2] = np.clip(_exact(rng, len(g2), t[2], t[3], median=True), -60, 400)
            if g3:
                pct3[g3] = np.clip(_exact(rng, len(g3), t[4], t[5], median=True), -60, 400)

        for j, i in enumerate(idx):
            pid = pids[i]
            date_rt = rt0 + pd.Timedelta(days=int(i * 3.4))
            date_dx = date_rt - pd.Timedelta(days=int(rng.integers(20, 1500)))
            fate = fates[j]
            if fate == "d2":
                death = date_rt + pd.Timedelta(days=int(rng.integers(20, 85)))
            elif fate == "d3":
                death = date_rt + pd.Timedelta(days=int(rng.integers(110, 178)))
            elif rng.random() < 0.5:
                death = date_rt + pd.Timedelta(days=int(rng.integers(200, 600)))
            else:
                death = None
            last = death if death is not None else cutoff
            alive_tp = {"T0": True, "T1": True, "T2": fate != "d2", "T3": fate == "a3"}
            vas0 = int(rng.integers(3, 9))
            omed0 = float(rng.choice([20, 30, 40, 60, 90])) if flags["med_opiate"][j] else 0.0
            vas = {"T0": vas0, "T1": int(np.clip(vas0 + rng.integers(-3, 2), 0, 10))}
            omed = {"T0": omed0, "T1": omed0}
            for tp, cats in (("T2", cat2), ("T3", cat3)):
                if j in cats:
                    vas[tp], omed[tp] = _pain(rng, cats[j], vas0, omed0)
            region = loc[j]
            level = str(rng.choice(LEVELS_BY_REGION[region]))
            unirr = "L3" if region in ("cervical", "thoracic") else "T8"
            h_base = {
                "ant": 24.0 + rng.normal(0, 1.5),
                "mid": 22.5 + rng.normal(0, 1.5),
                "post": 26.0 + rng.normal(0, 1.5),
            }
            row: dict = {
                "patient_id": pid,
                "arm": arm,
                "age": cont["age"][j],
                "sex": sex[j],
                "kps": cont["kps"][j],
                "weight_kg": cont["weight_kg"][j],
                "height_cm": cont["height_cm"][j],
                "primary_site": primary[j],
                "localisation": region,
                "n_metastases": int(nmets[j]) if nmets[j] < 3 else int(rng.integers(3, 6)),
            }
            for k in FLAGS:
                row[k] = "true" if flags[k][j] else "false"
            for tp in ("T0", "T1", "T2", "T3"):
                row[f"vas_{tp}"] = vas.get(tp, "")
            for tp in ("T0", "T1", "T2", "T3"):
                row[f"omed_{tp}"] = round(omed[tp], 1) if tp in omed else ""
            for tp in ("T0", "T2", "T3"):
                if not alive_tp[tp]:
                    row[f"fracture_{tp}"] = ""
                    continue
                yes = j in frac0 or (tp != "T0" and j in frac_flag)
                row[f"fracture_{tp}"] = "true" if yes else "false"
            for tp in ("T0", "T2", "T3"):
                for site in ("ant", "mid", "post"):
                    if not alive_tp[tp]:
                        row[f"height_{site}_{tp}_mm"] = ""
                        continue
                    h = h_base[site] + (rng.normal(0, 0.3) if tp != "T0" else 0.0)
                    if tp != "T0" and j in vcf and site == "ant":
                        h = h_base[site] * 0.72
                    row[f"height_{site}_{tp}_mm"] = round(h, 1)
            row["date_diagnosis"] = date_dx.strftime("%Y-%m-%d")
            row["date_rt"] = date_rt.strftime("%Y-%m-%d")
            row["date_death"] = death.strftime("%Y-%m-%d") if death is not None else ""
            row["date_last_contact"] = last.strftime("%Y-%m-%d")
            clinical_rows.append(row)

            # measurement rows
            lesion = lf[j][0]
            hu_un0 = float(np.clip(rng.normal(175, 45), 80, 350))
            hu_tp = {
                "T0": hu0[j],
                "T2": hu0[j] * (1 + pct2[j] / 100),
                "T3": hu0[j] * (1 + pct3[j] / 100),
            }
            for tp in ("T0", "T2", "T3"):
                if not alive_tp[tp]:
                    continue
                study = date_rt + pd.Timedelta(days=T_DAYS[tp] + int(rng.integers(-5, 6)))
                suid = _uid(seed, pid, tp)
                for lv, irr, les, hu in (
                    (level, True, lesion, hu_tp[tp]),
                    (
                        unirr,
                        False,
                        "none",
                        hu_un0 * (1 + rng.normal(0.5, 4.0) / 100 if tp != "T0" else 1),
                    ),
                ):
                    nvox = int(rng.integers(250, 600))
                    sd = float(rng.uniform(35, 90))
                    meas_rows.append(
                        {
                            "roi_id": f"{pid}-{tp}-{lv}",
                            "patient_id": pid,
                            "timepoint": tp,
                            "study_date": study.strftime("%Y-%m-%d"),
                            "series_instance_uid": suid,
                            "level": lv,
                            "irradiated": "true" if irr else "false",
                            "lesion_type": les,
                            "kind": "target",
                            "shape": "ellipse",
                            "slice_index": int(rng.integers(20, 120)),
                            "n_voxels": nvox,
                            "area_mm2": round(nvox * 0.7 * 0.7, 2),
                            "volume_mm3": round(nvox * 0.7 * 0.7 * 3.0, 2),
                            "mean_hu": round(float(hu), 1),
                            "sd_hu": round(sd, 1),
                            "median_hu": round(float(hu + rng.normal(0, 3)), 1),
                            "min_hu": round(float(hu - 3 * sd), 1),
                            "max_hu": round(float(hu + 3 * sd), 1),
                            "kvp": 120,
                            "kernel": "B30s",
                            "slice_thickness_mm": 3.0,
                            "manufacturer": "SIEMENS",
                            "model": "Sensation Open",
                            "qc_status": "pass",
                            "qc_flags": "",
                            "reader": "R1",
                        }
                    )
    clinical = pd.DataFrame(clinical_rows).sort_values("patient_id").reset_index(drop=True)
    meas = pd.DataFrame(meas_rows)
    meas["_o"] = meas["timepoint"].map({"T0": 0, "T2": 2, "T3": 3})
    meas = meas.sort_values(["patient_id", "_o", "irradiated"], ascending=[True, True, False]).drop(
        columns="_o"
    )
    return meas.reset_index(drop=True), clinical


def write_trial(out: Path, seed: int = DEFAULT_SEED) -> tuple[Path, Path]:
    """Write ``out/measurements.csv`` and ``out/clinical.csv``; returns both paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meas, clin = make_trial(seed)
    paths = (out / "measurements.csv", out / "clinical.csv")
    meas.to_csv(paths[0], index=False)
    clin.to_csv(paths[1], index=False)
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path, help="output folder")
    ap.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help="random seed (default %(default)s)"
    )
    args = ap.parse_args(argv)
    meas_path, clin_path = write_trial(args.out, args.seed)
    print(f"wrote {meas_path} and {clin_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
