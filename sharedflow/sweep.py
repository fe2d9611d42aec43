"""``sharedflow train -m``: sweeps through hydra's own multirun machinery.

Hydra expands the sweep (``key=a,b``, ranges, ``glob``) and hands each job to the configured
launcher, so the standard launcher plugins work unchanged once installed:
``hydra/launcher=joblib`` runs jobs in parallel on one machine, ``hydra/launcher=submitit_slurm``
on a cluster. Each job trains through :func:`sharedflow.train.run.fit`, which checks every
``_target_`` against the allowlist before building anything, exactly as a single run does.

Job ``n`` runs in ``<sweep dir>/<n>``; the sweep dir is the ``run_dir`` given, else
``multirun/<name>``, so running the same sweep again resumes each job.
"""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from sharedflow.recipes import RECIPES_DIR, check_recipe, searchpath_override

__all__ = ["multirun"]


def _job(cfg: DictConfig) -> None:
    """One job of a sweep: ``cfg`` is the composed recipe, without hydra's own node."""
    from sharedflow.train.run import fit

    print(f"run directory: {fit(cfg)}")


def multirun(recipe: str, overrides: list[str]) -> None:
    """Run one training job per combination of the sweep ``overrides``."""
    import hydra

    check_recipe(recipe)
    given = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") == "run_dir"]
    others = [o for o in overrides if o not in given]
    sweep_dir = given[-1].split("=", 1)[1] if given else "multirun/${name}"
    argv = [
        "sharedflow train",
        "--multirun",
        f"experiment={recipe}",
        *searchpath_override(),
        *others,
        f"hydra.sweep.dir={sweep_dir}",
        "hydra.sweep.subdir=${hydra.job.num}",
        "run_dir=${hydra:runtime.output_dir}",
    ]
    app = hydra.main(config_path=str(RECIPES_DIR), config_name="train", version_base="1.3")(_job)
    saved, sys.argv = sys.argv, argv
    try:
        app()
    finally:
        sys.argv = saved
