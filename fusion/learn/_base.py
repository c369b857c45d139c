"""What our feature selectors share: a fitted ``support_`` mask and a required target."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.feature_selection import SelectorMixin
from sklearn.utils.validation import check_is_fitted


class SupportSelector(SelectorMixin, BaseEstimator):
    """Base for selectors whose ``fit`` sets a boolean ``support_`` over the features."""

    def _get_support_mask(self) -> np.ndarray:
        check_is_fitted(self)
        return self.support_

    def __sklearn_tags__(self):  # noqa: ANN204
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        return tags
