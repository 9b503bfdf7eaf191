"""Names shared by every module: MURA's seven body parts and the meaning of the label."""

from __future__ import annotations

BODY_PARTS: tuple[str, ...] = ("ELBOW", "FINGER", "FOREARM", "HAND", "HUMERUS", "SHOULDER", "WRIST")
BODY_PART_TO_INDEX: dict[str, int] = {name: i for i, name in enumerate(BODY_PARTS)}

# MURA's positive class is "abnormal": fractures, but also hardware, degenerative joint disease,
# lesions and other findings. It is not a fracture-only label; the external set's label is.
POSITIVE_LABEL = "abnormal"
NEGATIVE_LABEL = "normal"
