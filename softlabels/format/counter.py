"""A counter-based random stream: uniform numbers that are a pure function of (seed, key, draw).

SplitMix64's output function mixes the seed, a 64-bit key (a store row, or a sample and view) and
the draw number, so any process can draw any number of the stream without state and without
caring how the work was cut: the sampled format's draws and the views' augmentation parameters
come from here.
"""

from __future__ import annotations

import numpy as np

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
MIX1 = np.uint64(0xBF58476D1CE4E5B9)
MIX2 = np.uint64(0x94D049BB133111EB)


def mix64(state: np.ndarray) -> np.ndarray:
    """The SplitMix64 output function (a bijective 64-bit mixer)."""
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps on purpose
        state = (state ^ (state >> np.uint64(30))) * MIX1
        state = (state ^ (state >> np.uint64(27))) * MIX2
    mixed: np.ndarray = state ^ (state >> np.uint64(31))
    return mixed


def counter_uniforms(seed: int, keys: np.ndarray, count: int) -> np.ndarray:
    """Uniform numbers in ``[0, 1)``, float64 ``[len(keys), count]``: draw ``j`` of key ``k`` under ``seed``."""
    with np.errstate(over="ignore"):
        seed_key = mix64(np.array([seed], dtype=np.uint64) + GOLDEN)
        key_states = mix64(np.asarray(keys, dtype=np.uint64) ^ seed_key)[:, None]
        draws = np.arange(1, count + 1, dtype=np.uint64)[None, :]
        bits = mix64(key_states + draws * GOLDEN)
    return (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53
