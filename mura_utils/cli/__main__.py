"""``python -m mura_utils.cli`` (what ``torchrun -m`` runs)."""

import sys

from mura_utils.cli.parser import main

sys.exit(main())
