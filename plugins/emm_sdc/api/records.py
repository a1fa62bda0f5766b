"""The records of the real EMM API: 25 fields, in this order (written by ``api_science_files`` in
include/sql/queries/api.sql, so the API only joins them; the tests hold both to this list).

JSON types: ``id``, ``file_size``, ``orbit_number``, ``version``, ``revision``, ``absolute_version`` int;
``released`` bool; the geometry fields float or null; ``spacecraft_lst`` ``HH:MM:SS``; ``mod_date`` and
``timetag`` as Python's ``str()`` of an aware UTC datetime (``2021-03-15 04:40:30+00:00``); ``descriptor``
and ``mode`` ``""`` when absent; ``file_root`` the name without ``_vVV-RR``
(``emm_emr_l2_20210315t044030_0024_r.fits``). Which version is latest is decided by the catalog's own root,
which also leaves out the kernel letter, so a reprocessed ``r`` product supersedes its ``p``.
"""

FIELDS = (
    "id", "file_name", "directory_path", "file_size", "mod_date", "instrument_id", "data_level", "timetag",
    "descriptor", "mode", "orbit_number", "pred_rec", "version", "revision", "file_root", "absolute_version",
    "md5checksum", "released", "mars_ls", "spacecraft_lst", "subsolar_lat", "subsolar_lon", "spacecraft_lat",
    "spacecraft_lon", "spacecraft_alt",
)
