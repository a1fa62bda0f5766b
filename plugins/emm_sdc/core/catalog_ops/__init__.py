"""The catalog's typed operations, one mixin class per area; :class:`emm_sdc.core.catalog.Catalog` combines them.

Pipeline code calls these methods (``cat.science_l0_between(...)``), never a query by name: the SQL stays
in ``include/sql/queries/*.sql`` and is run by name only here.

* :mod:`.base` -- the named-query loader, transactions and the base class every mixin builds on
* :mod:`.files` -- science files, deliveries and lineage
* :mod:`.runs` -- processing runs, job hashes and archive-key reservations
* :mod:`.kernels` -- SPICE kernels, coverage and meta-kernels
* :mod:`.images` -- staging checks and image promotions
* :mod:`.campaigns` -- reprocessing campaigns and impact
* :mod:`.calibration` -- calibration files and sets
* :mod:`.releases` -- public releases and withdrawals
* :mod:`.reconciliation` -- integrity reconciliation runs and findings
* :mod:`.reports` -- summaries for the command line
* :mod:`.api` -- the science-files API's queries (mixed into its own connection pool)
"""
