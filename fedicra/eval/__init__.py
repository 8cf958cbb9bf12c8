"""Evaluation: per-case metrics (``metrics.score_case``) and model scoring (``evaluate.evaluate``, ``predict``).

The functions are imported here eagerly (this pulls in torch, pandas and medpy): the submodule
``evaluate`` shares its name with the function, and binding the function now keeps
``from fedicra.eval import evaluate`` the function whatever was imported before.
"""
from fedicra.eval.evaluate import evaluate, predict
from fedicra.eval.metrics import POLICIES, score_case

__all__ = ["POLICIES", "evaluate", "predict", "score_case"]
