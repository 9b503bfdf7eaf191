"""A notebook opened alone, with its defaults, runs on the embedded sample: when ``data_root`` is the
default sample path and the sample is missing, it is written as ``make sample`` writes it."""

from __future__ import annotations

from pathlib import Path

from mura_utils.synthetic.mura import DEFAULT_PATIENTS_PER_PART

# The sample's folder as the notebooks (run from notebooks/) and the CLI (run from the repository) name it
DEFAULT_SAMPLE_PATHS = ("../data/sample", "data/sample")
# Train patients per body part: the sample's own default, as `make sample` writes it
DEFAULT_SAMPLE_PATIENTS = DEFAULT_PATIENTS_PER_PART


def ensure_default_sample(data_root: str | Path) -> Path:
    """``data_root`` as a Path; when it is a default sample path (``DEFAULT_SAMPLE_PATHS``, as written, not
    resolved) and holds no sample yet, first write the synthetic MURA-v1.1 sample there (``mura sample
    data/sample``) and say so in one line. Any other path is left alone."""
    from mura_utils.synthetic.mura import MURA_DIRNAME, make_sample

    path = Path(data_root)
    written_as = Path(data_root).as_posix().rstrip("/")
    if written_as in DEFAULT_SAMPLE_PATHS and not (path / MURA_DIRNAME / "train_image_paths.csv").is_file():
        make_sample(path, patients_per_part=DEFAULT_SAMPLE_PATIENTS)
        print(f"{data_root}: no sample yet, wrote the synthetic MURA-v1.1 sample there (as `make sample` does)")
    return path
