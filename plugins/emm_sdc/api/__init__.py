"""The EMM science-files API: a drop-in for the real EMM SDC API, served by the Airflow deployment."""
