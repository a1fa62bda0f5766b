"""ITF images: which one is production, and the rules for promoting a candidate.

An image becomes production only through a promotion, and a promotion needs a
staging check of that image that passed against the production image of the
moment (for an instrument's first image: a check that validated its outputs).
Production DAGs run only the current production image.
"""

from __future__ import annotations

from typing import Any

from emm_sdc.core.catalog import Catalog


class ImageNotPromoted(RuntimeError):
    """A production run asked for an image that is not the promoted production image."""


class PromotionRefused(RuntimeError):
    """A promotion broke a rule (no passing staging check, stale check, already production)."""


def production_image(cat: Catalog, instrument: str) -> str | None:
    row = cat.production_image_row(instrument)
    return row["image"] if row else None


def require_promoted(cat: Catalog, instrument: str, image: str, config_file: str) -> None:
    """Raise :class:`ImageNotPromoted` unless ``image`` is the instrument's production image."""
    current = production_image(cat, instrument)
    if current == image:
        return
    if current is None:
        raise ImageNotPromoted(
            f"{config_file}: processing.runner.image {image!r} has not been promoted, and {instrument} has no "
            f"production image yet. Run emm_{instrument}_staging_check with candidate {image!r}, then "
            f"emm_image_promote (or ./sdc promote --instrument {instrument} --image {image})."
        )
    raise ImageNotPromoted(
        f"{config_file}: processing.runner.image {image!r} is not the production image of {instrument} "
        f"({current!r}). Set processing.runner.image to {current!r}, or check and promote {image!r} first."
    )


def promote(cat: Catalog, instrument: str, image: str, *, promoted_by: str, reason: str | None) -> dict[str, Any]:
    """Make ``image`` production after checking the rules; return the promotion record."""
    current = production_image(cat, instrument)
    if current == image:
        raise PromotionRefused(f"{image!r} is already the production image of {instrument}")
    check = cat.latest_passed_check(instrument, image)
    if check is None:
        raise PromotionRefused(
            f"{image!r} has no passing staging check for {instrument}; run emm_{instrument}_staging_check first")
    if check["production_image"] != current:
        raise PromotionRefused(
            f"staging check {check['id']} compared {image!r} with {check['production_image']!r}, but production "
            f"is now {current!r}; run the staging check again"
        )
    promotion_id = cat.record_promotion(instrument=instrument, image=image, previous_image=current,
                                        staging_check_id=check["id"], promoted_by=promoted_by, reason=reason)
    return {"id": promotion_id, "instrument": instrument, "image": image, "previous_image": current,
            "staging_check_id": check["id"], "report_uri": check["report_uri"]}
