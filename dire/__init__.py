"""dire: DiRe (diversity-promoting regularization) for dataset condensation.

Data flow, one module per stage::

    data ─► teacher (squeeze, cached) ─► bank (real embeddings per class, cached)
         ─► synthesis (method + DiRe) ─► evaluate (soft-label student) ─► metrics
"""

__version__ = "0.1.0"
