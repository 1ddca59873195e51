"""The problem templates of the support-triage demo data: per category, each kind of problem with its
summary label, the products it can happen to and its phrasings. The tables are in ``support_triage_orders.py``
(billing, shipping, refund) and ``support_triage_product.py`` (technical, account, feedback); the labels and
the rest of an email's wording are in ``support_triage_vocab.py``."""

from __future__ import annotations

from tunesmith.examples.support_triage_orders import ORDER_PROBLEMS
from tunesmith.examples.support_triage_product import PRODUCT_PROBLEMS
from tunesmith.examples.support_triage_vocab import CATEGORIES, Problem

__all__ = ["PROBLEMS", "Problem"]

# In the categories' own order (vocab.CATEGORIES), as the one table had them.
PROBLEMS: dict[str, tuple[Problem, ...]] = {c: {**ORDER_PROBLEMS, **PRODUCT_PROBLEMS}[c] for c in CATEGORIES}
