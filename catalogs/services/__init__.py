"""Writes of the catalog, one module per job: ``imports`` (start, run, purge: the entry points), ``items``
(product rows), ``documents`` (FAQ, policies, pages), ``progress`` (counts, report, live progress)."""
