"""Adding a dataset is one file plus one line: a toy layout declared in its own module and named in
``data.registry.DATASET_MODULES`` is detected, validated, trained on, evaluated and predicted on through
the same CLI as MURA and FracAtlas, with nothing else changed."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
from PIL import Image

from mura_utils import cli
from mura_utils.config import TrainConfig
from mura_utils.data import registry

# The one new file: a folder with labels.csv (file,finding,region,split) and PNGs under img/.
TOY_MODULE = textwrap.dedent(
    """
    from pathlib import Path

    import pandas as pd

    from mura_utils.data.base import INDEX_COLUMNS, DatasetInfo, DatasetType

    INFO = DatasetInfo(
        name="toy", title="Toy radiographs", body_parts=("ARM", "LEG"), positive_label="fractured",
        negative_label="intact", has_patients=False, test_split="test",
    )


    def read(root, splits=None):
        root = Path(root).expanduser().resolve()
        rows = pd.read_csv(root / "labels.csv")
        stem = rows["file"].str.rsplit(".", n=1).str[0]
        table = pd.DataFrame({
            "path": [str(root / "img" / name) for name in rows["file"]], "split": rows["split"],
            "body_part": rows["region"], "patient": stem, "study": stem, "label": rows["finding"].astype(int),
        })[INDEX_COLUMNS]
        if splits is not None:
            table = table[table["split"].isin(splits)].reset_index(drop=True)
        return table, INFO


    DATASET = DatasetType(
        name="toy", looks_like=lambda path: (path / "labels.csv").is_file() and (path / "img").is_dir(),
        layout="a toy set (labels.csv and img/)", read=read, info=lambda root: INFO,
    )
    """
)


def write_toy_tree(root, n_train: int = 48, n_test: int = 16):
    """Noise images; a 'fractured' one carries a bright bar the model can learn."""
    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True)
    lines = ["file,finding,region,split"]
    for number in range(n_train + n_test):
        finding = number % 2
        pixels = rng.integers(20, 90, size=(48, 40)).astype(np.uint8)
        if finding:
            pixels[20:26, 5:35] = 250
        name = f"t{number:03d}.png"
        Image.fromarray(pixels).save(root / "img" / name)
        region = "ARM" if number % 4 < 2 else "LEG"
        lines.append(f"{name},{finding},{region},{'train' if number < n_train else 'test'}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def toy_dataset(tmp_path, monkeypatch):
    package = tmp_path / "toy_datasets"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "toy.py").write_text(TOY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    # the one line: its module's name in the registry
    monkeypatch.setattr(registry, "DATASET_MODULES", {**registry.DATASET_MODULES, "toy": "toy_datasets.toy"})
    monkeypatch.setenv("MURA_CACHE_DIR", str(tmp_path / "cache"))
    return write_toy_tree(tmp_path / "toy_data")


def test_a_dataset_in_one_file_is_detected_validated_and_offered(toy_dataset):
    assert registry.detect_dataset(toy_dataset) == "toy"
    assert "toy" in registry.dataset_names()
    index = registry.load_index(toy_dataset)
    assert index.attrs["dataset"].title == "Toy radiographs" and len(index) == 64
    TrainConfig(dataset="toy", data_root=str(toy_dataset))  # config validation knows it
    parsed = cli.build_parser().parse_args(["evaluate", "--checkpoint", "x", "--data-root", "y", "--out", "z",
                                            "--dataset", "toy"])  # fmt: skip
    assert parsed.dataset == "toy"


def test_without_its_line_the_toy_folder_is_refused_naming_what_was_looked_for(tmp_path):
    root = write_toy_tree(tmp_path / "toy_data")
    with pytest.raises(ValueError, match=r"not a dataset this package reads.*MURA-v1.1.*FracAtlas"):
        registry.detect_dataset(root)


def test_a_dataset_in_one_file_trains_evaluates_and_predicts(toy_dataset, tmp_path, capsys):
    run = tmp_path / "run"
    common = ["--device", "cpu", "--no-progress"]
    assert cli.main(["train", "--data-root", str(toy_dataset), "--model", "custom_cnn", "--img-size", "32",
                     "--epochs", "2", "--batch-size", "8", "--out", str(run), "--no-verbose", "--seed", "0",
                     *common]) == 0  # fmt: skip
    config = json.loads((run / "config.json").read_text())
    assert config["data_root"] == str(toy_dataset) and (run / "best.pt").is_file()

    evaluation = tmp_path / "evaluation"
    assert cli.main(["evaluate", "--checkpoint", str(run / "best.pt"), "--data-root", str(toy_dataset),
                     "--out", str(evaluation), "--bootstrap", "0", *common]) == 0  # fmt: skip
    metrics = json.loads((evaluation / "metrics.json").read_text())
    assert metrics["dataset_title"] == "Toy radiographs" and metrics["split"] == "test"
    assert 0.0 <= metrics["study"]["auroc"] <= 1.0

    capsys.readouterr()
    image = toy_dataset / "img" / "t049.png"
    assert cli.main(["predict", str(image), "--checkpoint", str(run / "best.pt"), "--format", "json",
                     "--device", "cpu"]) == 0  # fmt: skip
    studies = json.loads(capsys.readouterr().out)
    assert len(studies) == 1 and 0.0 <= studies[0]["images"][0]["probability"] <= 1.0
    assert studies[0]["study_prediction"] in ("fractured", "intact")  # the toy's own label words
