"""Shared library of the EMM reference ITF processors.

These processors stand in for the instrument teams' own code, so this package
is independent of the SDC (it never imports ``emm_sdc``): it has its own
CCSDS decoder (:mod:`emmref.ccsds`), file-name formatter (:mod:`emmref.names`),
FITS and quicklook writers, and the ITF side of the processor contract
(:mod:`emmref.contract`, see ``docs/itf_container_contract.md``).

Only :mod:`emmref.contract` and :mod:`emmref.names` are imported eagerly; the
numpy/astropy/ccsdspy/Pillow modules are imported when a job needs them.
"""

__version__ = "1.0.0"
