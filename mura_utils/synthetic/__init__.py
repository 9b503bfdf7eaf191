"""Synthetic stand-ins for MURA-v1.1, FracAtlas, a user's CSV manifest and the Kaggle fracture set.

MURA needs a signed data-use agreement, so the repo ships no radiographs. ``make_sample`` writes
a small tree with exactly the release's layout (same folders, same four header-less CSVs, same
quirks: patients under several body parts, several studies per patient, 1-4 views per study,
mixed sizes and PNG modes), so the loader, training and evaluation code run on it unchanged.
``make_external_sample`` writes a tiny set in the layout of the public Kaggle "Bone Fracture
Binary Classification" download, with its planted quirks (duplicates, a truncated file, stray
files), for the external-generalization code. ``make_fracatlas_sample`` writes FracAtlas's official
layout (dataset.csv, images/Fractured|Non_fractured, COCO boxes around every planted break, listed in
the official sizes while most files are reduced), and ``make_manifest_sample`` a collection of PNG and
JPEG files described by one ``manifest.csv`` (path,label,body_part,patient,study,split).

The pictures are cartoons of radiographs drawn with PIL: dark background, soft tissue, bones
with a bright cortex around a darker medulla, in the arrangement typical of each body part, so
body part is learnable. Abnormal studies show one planted finding (metal hardware, a displaced
cortical break, or a degenerative joint) in most of their views; normal ones never do. Everything
is drawn from a numpy Generator seeded from ``seed``, so a seed gives byte-identical files.

One module per concern: ``anatomy`` (primitives and body-part layouts), ``findings`` (planted
abnormalities), ``render`` (pixels and file bytes), ``mura`` (the MURA-v1.1 tree writer), and
``external``, ``fracatlas`` and ``manifest`` (the other layouts). The public names are re-exported here.
"""

from mura_utils.synthetic.default_sample import ensure_default_sample
from mura_utils.synthetic.external import make_external_sample
from mura_utils.synthetic.fracatlas import FRACATLAS_BOXES, make_fracatlas_sample
from mura_utils.synthetic.manifest import MANIFEST_NAME, make_manifest_sample
from mura_utils.synthetic.mura import EXTERNAL_DIRNAME, EXTERNAL_MANIFEST, MURA_DIRNAME, SYNTHETIC_MARKER, make_sample
from mura_utils.synthetic.render import render_radiograph

__all__ = [
    "ensure_default_sample",
    "make_sample",
    "make_external_sample",
    "make_fracatlas_sample",
    "make_manifest_sample",
    "render_radiograph",
    "MURA_DIRNAME",
    "EXTERNAL_DIRNAME",
    "EXTERNAL_MANIFEST",
    "SYNTHETIC_MARKER",
    "FRACATLAS_BOXES",
    "MANIFEST_NAME",
]
