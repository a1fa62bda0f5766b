"""Development and test tooling of the EMM SDC, kept out of the production package and image.

``./sdc`` commands (cli), the embedded services (moto's S3/SQS/Cognito server, PostgreSQL), a real
Airflow harness for tests and benchmarks (airflow_local), the MOC stand-in (moc) and the synthetic
mission data (synthetic L0/HK, SPICE kernels written with spiceypy). Nothing under ``plugins/`` imports
this package; the production image (``Dockerfile``) copies ``plugins/`` only.
"""
