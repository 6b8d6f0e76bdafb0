"""Benchmarks: sm_magic against raw boto3 and its peers, ratios from one run (``python -m bench``)."""
