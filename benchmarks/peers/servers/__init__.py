"""One server per peer, each wrapping ``benchmarks.peers.common`` (started by ``run.py``)."""
