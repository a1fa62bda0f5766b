"""The science data web page ("Science data search"): a static page over the science-files API."""
