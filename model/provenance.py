"""Which I3D network made a run's features: the cache records say, the user says, or nobody knows.

The two Kinetics-400 I3D networks (``vadpipe.extract.backbones``) give different features; a
model trained on one and run on the other sees inputs from another network and degrades
silently. So every run folder records its features' backbone (config section ``backbone``), and
detect extracts only with that network and refuses to guess when it is unknown, and evaluate
refuses a vadpipe cache made with the other network.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from vadpipe.errors import ConfigError
from vadpipe.extract.backbones import BACKBONES, DEFAULT_BACKBONE, IMAGENET

__all__ = ["SECTION", "features_backbone", "training_backbone", "run_backbone"]

SECTION = "backbone"


def features_backbone(extraction: object) -> str | None:
    """The backbone in a run's or cache's extraction settings (records written before backbones
    existed name none: they were all made with kinetics400-scratch, the only network then)."""
    if isinstance(extraction, Mapping) and isinstance(extraction.get("settings"), Mapping):
        return str(extraction["settings"].get("backbone", DEFAULT_BACKBONE))
    return None


def training_backbone(extraction: Mapping | None, *, stated: str | None, features: Path | str) -> dict:
    """The run-config section for features with these extraction records (None: no records).

    ``stated``: the user's ``--backbone``; for a vadpipe cache it must agree with the
    records, for bare feature files it is the only source.
    """
    if stated is not None and stated not in BACKBONES:
        raise ConfigError(f"--backbone must be one of {', '.join(BACKBONES)}, got {stated!r}")
    recorded = features_backbone(extraction)
    if recorded is not None:
        if stated is not None and stated != recorded:
            raise ConfigError(
                f"--backbone {stated}: the cache records of {features} say its features were extracted with {recorded}"
            )
        return {"id": recorded, "source": "records"}
    if stated is not None:
        return {
            "id": stated,
            "source": "stated",
            "note": f"the features in {features} carry no vadpipe records; they are {stated} features on the "
            f"user's word (--backbone)",
        }
    return {
        "id": None,
        "source": "unknown",
        "note": f"the features in {features} carry no vadpipe records, so the I3D network that made them is "
        f"unknown and detect will not extract for this run until told (detect --backbone); for the "
        f"released XD-Violence or UCF-Crime I3D features pass --backbone {IMAGENET.id}",
    }


def run_backbone(config: Mapping) -> str | None:
    """The backbone of a run's training features, or None when the run does not know it."""
    recorded = features_backbone(config.get("extraction"))
    if recorded is not None:
        return recorded
    section = config.get(SECTION)
    if isinstance(section, Mapping) and section.get("id") in BACKBONES:
        return str(section["id"])
    return None
