"""The contrib tests share ``tests/softmax_problem.py`` with the top-level reference tests."""

import pathlib
import sys

TESTS = str(pathlib.Path(__file__).resolve().parents[1])
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)
