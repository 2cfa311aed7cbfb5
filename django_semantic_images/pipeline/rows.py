"""The rows the pipeline and the sweep read and write: on the database they are written to."""

from __future__ import annotations

from typing import Any

from django.db import models, router


def primary_rows(model: type[models.Model]) -> models.QuerySet[Any]:
    """``model``'s rows on the database they are written to, every row: through its base
    manager, as Django reaches related rows (a default manager that hides some rows, say the
    unpublished ones, must not leave them without vectors).

    The pipeline and the sweep read what they are about to write there: under a router that
    sends reads to a replica, a lagging replica would hide the rows just saved or just claimed.
    """
    return model._base_manager.using(router.db_for_write(model))


def primary_manager(model: type[models.Model]) -> models.QuerySet[Any]:
    """``model``'s default manager on the database its rows are written to: for the hooks a
    model's manager provides (``add_missing_rows``)."""
    return model._default_manager.using(router.db_for_write(model))
