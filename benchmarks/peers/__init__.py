"""The peers benchmark: seqserve beside other servers wrapping the same model (``run.py``)."""
