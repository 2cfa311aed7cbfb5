"""The e5 -> MiniLM map benchmark's own parts: its ridge fit and its held-out split."""

from __future__ import annotations

import numpy as np

from benchmarks import languages_map as bench
from django_semantic_images.training import CaptionedImages, split_holdout


def test_fit_map_recovers_a_linear_map_and_ridge_shrinks_it():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 8)).astype(np.float32)
    true_w, true_b = rng.normal(size=(8, 4)).astype(np.float32), rng.normal(size=4).astype(np.float32)
    y = x @ true_w + true_b
    w, b = bench.fit_map(x, y, 1e-6)
    np.testing.assert_allclose(w, true_w, atol=1e-3)
    np.testing.assert_allclose(b, true_b, atol=1e-3)
    shrunk, _ = bench.fit_map(x, y, 10.0)
    assert np.linalg.norm(shrunk) < 0.5 * np.linalg.norm(true_w)
    out = bench.apply_map((w, b), x[:3])
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)  # unit-length queries


def test_plan_holds_out_the_images_split_holdout_holds_out():
    n = 37
    train = bench.TrainSet([f"{i}.jpg" for i in range(n)], [[f"caption {i}"] for i in range(n)], [[] for _ in range(n)])
    plan = bench.plan(train, seed=3)
    data = CaptionedImages(list(range(n)), np.zeros((n, 2), np.float32), [f"c{i}" for i in range(n)], np.arange(n))
    part, held = split_holdout(data, 0.1, seed=3, max_held=1000)
    assert plan.held.tolist() == held.keys
    assert plan.bridge.tolist() == part.keys
    assert plan.train_english == [[f"caption {i}"] for i in part.keys]
