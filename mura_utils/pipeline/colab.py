"""Every notebook opens in Google Colab with one click: a badge (its first cell) and an install cell (its
first code cell) that, only inside Colab, installs this package from its repository and offers to mount
Google Drive; elsewhere (papermill, tests, local Jupyter) that cell does nothing. The repository's address
lives here, once; ``python -m mura_utils.pipeline.colab`` rewrites both cells of every notebook from it."""

from __future__ import annotations

import sys
from pathlib import Path

# The project's public repository (no address was published with the seed: a placeholder to replace once).
REPOSITORY_URL = "https://github.com/mura-utils/mura_utils"
BRANCH = "main"
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"

COLAB_SETUP = f"""\
# Google Colab only (elsewhere this cell does nothing): install mura_utils from its repository, and offer to
# mount Google Drive, where real data and trained runs can live (data_root = "/content/drive/MyDrive/MURA-v1.1")
import sys

if "google.colab" in sys.modules:
    import subprocess

    package = "git+{REPOSITORY_URL}.git@{BRANCH}"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", package], check=True)
    if input("Mount Google Drive at /content/drive? [y/N] ").strip().lower().startswith("y"):
        from google.colab import drive

        drive.mount("/content/drive")"""


def colab_url(notebook: str) -> str:
    """Where Colab opens ``notebook`` (a file name under notebooks/) straight from the repository."""
    repository = REPOSITORY_URL.removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{repository}/blob/{BRANCH}/notebooks/{notebook}"


def colab_badge(notebook: str) -> str:
    """The "Open in Colab" badge of ``notebook`` (markdown)."""
    return f"[![Open In Colab]({BADGE_IMAGE})]({colab_url(notebook)})"


def write_colab_cells(path: str | Path) -> None:
    """Give the notebook at ``path`` the badge as its first cell and ``COLAB_SETUP`` as its first code cell,
    replacing the ones an earlier call wrote."""
    import nbformat

    path = Path(path)
    notebook = nbformat.read(path, as_version=4)
    cells = [
        cell
        for cell in notebook.cells
        if not (cell.cell_type == "markdown" and cell.source.startswith("[![Open In Colab]"))
        and not (cell.cell_type == "code" and cell.source.startswith("# Google Colab only"))
    ]
    badge = nbformat.v4.new_markdown_cell(
        colab_badge(path.name), id="colab-badge"
    )  # fixed ids: a rerun changes nothing
    setup = nbformat.v4.new_code_cell(COLAB_SETUP, id="colab-setup")
    first_code = next(index for index, cell in enumerate(cells) if cell.cell_type == "code")
    notebook.cells = [badge, *cells[:first_code], setup, *cells[first_code:]]
    nbformat.write(notebook, path)


if __name__ == "__main__":
    from mura_utils.pipeline.profiles import NOTEBOOK_DIR

    for notebook_path in sorted(Path(sys.argv[1] if len(sys.argv) > 1 else NOTEBOOK_DIR).glob("*.ipynb")):
        write_colab_cells(notebook_path)
        print(f"{notebook_path}: Colab badge and install cell written")
