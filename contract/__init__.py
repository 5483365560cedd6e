"""Rules training and serving must agree on, written once, torch-free (numpy and pydantic only).

``card`` (typed model cards), ``store`` (the append-only model store), ``forecast`` (last
window, positive shift, interval multipliers and bounds), ``text`` (padding of token ids) and
``anomaly`` (the anomaly scoring core). ``app/`` and ``training/`` both import these; this
package imports neither.
"""
