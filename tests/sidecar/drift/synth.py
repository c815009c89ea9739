"""Synthetic drift traffic: seeded prompts and feature rows with known shifts."""

from __future__ import annotations

import random

from exporters.clickhouse.drift_store import WindowSample

SUPPORT = {
    "verbs": ["reset", "change", "recover", "update", "delete", "export", "verify", "link"],
    "objects": ["password", "account", "email address", "billing plan", "two-factor login",
                "profile photo", "invoice", "subscription", "username", "API key"],
    "frames": ["How do I {v} my {o}?", "I cannot {v} my {o}, what should I do?",
               "Is it possible to {v} the {o} from the mobile app?",
               "Please help me {v} my {o} before tomorrow.",
               "Why does the site fail when I try to {v} my {o}?"],
}
COOKING = {
    "verbs": ["bake", "roast", "grill", "braise", "season", "marinate", "poach", "fry"],
    "objects": ["chicken thighs", "sourdough bread", "salmon fillet", "pumpkin soup",
                "chocolate cake", "risotto", "lamb shoulder", "vegetable curry"],
    "frames": ["How long should I {v} the {o}?", "What is the best way to {v} {o}?",
               "Can I {v} {o} the day before a dinner party?",
               "Which wine goes with {o} if I {v} it?",
               "My {o} came out dry, how do I {v} it properly?"],
}


def prompts(topic: dict[str, list[str]], n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(topic["frames"]).format(v=rng.choice(topic["verbs"]),
                                              o=rng.choice(topic["objects"]))
            for _ in range(n)]


def feature_window(n: int, seed: int, *, output_scale: float = 1.0,
                   refusal: float = 0.02) -> WindowSample:
    """Feature rows as the worker stores them, drawn from one fixed distribution."""
    rng = random.Random(seed)
    sample = WindowSample()
    for i in range(n):
        prompt_tokens = max(1, int(rng.lognormvariate(3.5, 0.6)))
        completion = max(1, int(rng.lognormvariate(4.5, 0.5) * output_scale))
        sample.ts.append(float(i))
        sample.num.append({
            "prompt_tokens": float(prompt_tokens),
            "completion_tokens": float(completion),
            "turns": float(rng.choice([1, 1, 1, 2, 3])),
            "latency_ms": rng.gammavariate(4.0, 50.0),
            "score.input.pii": rng.betavariate(0.5, 8.0),
        })
        sample.cat.append({
            "language": rng.choices(["en", "es", "de"], [0.8, 0.15, 0.05])[0],
            "finish_reason": rng.choices(["stop", "length"], [0.95, 0.05])[0],
            "refusal": "yes" if rng.random() < refusal else "no",
            "tools": rng.choice(["yes", "no"]),
        })
    return sample
