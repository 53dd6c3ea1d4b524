"""The one JSON helper and the one thread limiter every module uses."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from immunoprofile._json import jsonable
from immunoprofile._threads import one_thread


def test_jsonable_strict_by_default():
    value = {
        1: (np.float32(0.5), np.int64(3), np.bool_(True)),
        "a": np.array([[1.0, np.nan], [np.inf, 2.0]]),
        "p": Path("x/y.csv"),
        "n": float("nan"),
    }
    got = jsonable(value)
    assert got == {"1": [0.5, 3, True], "a": [[1.0, None], [None, 2.0]], "p": "x/y.csv", "n": None}
    assert json.loads(json.dumps(got, allow_nan=False)) == got  # strict JSON


def test_jsonable_can_keep_non_finite_and_stringify_others():
    got = jsonable({"b": (np.float64(-np.inf), 1.0), "o": object}, finite=False, text=True)
    assert math.isinf(got["b"][0]) and got["b"][0] < 0 and got["b"][1] == 1.0
    assert got["o"] == str(object)
    assert jsonable({"o": object})["o"] is object  # left as it is without text=True


def test_one_thread_limits_blas_inside_and_restores_after():
    threadpoolctl = __import__("pytest").importorskip("threadpoolctl")
    before = {p["user_api"]: p["num_threads"] for p in threadpoolctl.threadpool_info()}
    with one_thread("blas"):
        inside = [p for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
        assert all(p["num_threads"] == 1 for p in inside)
    after = {p["user_api"]: p["num_threads"] for p in threadpoolctl.threadpool_info()}
    assert after == before
