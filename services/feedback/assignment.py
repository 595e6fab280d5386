"""Which arm a subject sees: a hash, not a table, so every replica and every restart agrees
without storing anything per visitor."""

from __future__ import annotations

import hashlib

from services.feedback.schemas import Arm, Experiment


def bucket(salt: str, subject: str) -> float:
    """A subject's place in [0, 1), uniform over subjects, fixed for a salt."""
    digest = hashlib.blake2b(f"{salt}\0{subject}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def arm_for(experiment: Experiment | None, subject: str) -> Arm | None:
    """The subject's arm (``user:<id>`` for a logged-in viewer, ``visitor:<cookie id>`` else);
    None when no experiment runs."""
    if experiment is None or experiment.stopped is not None:
        return None
    return "candidate" if bucket(experiment.salt, subject) < experiment.share else "control"
