"""The columns of ``results/autoattack/parity.csv`` (shared by the run and its README)."""

ATTACKS = ("apgd-ce", "apgd-t", "fab-t", "square")
LOGIT_TOLERANCE = 1e-4
FIELDS = (["model", "norm", "eps", "images", "seed", "mode", "logit_max_gap", "clean_ours", "clean_ref"]
          + [f"{a}_{side}" for a in ATTACKS for side in ("ours", "ref")]
          + ["final_ours", "final_ref", "seconds_ours", "seconds_ref"]
          + [f"seconds_{a}_{side}" for a in ATTACKS for side in ("ours", "ref")]
          + ["robust_both", "robust_ours_only", "robust_ref_only", "fooled_both",
             "ours_adv_fool_twin", "ref_adv_fool_keras", "threads", "ref_commit", "git_commit",
             "date"])
REF_COMMIT = "a39220048b3c9f2cca9a4d3a54604793c68eca7e"
