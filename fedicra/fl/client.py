"""One federated client (a site, or the pool of all sites for centralized baselines).

The client owns its data, its model and the method's private state. Everything random it does is
drawn from streams keyed by (seed, client key, step), so a resumed run repeats the same draws.
"""
from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from fedicra.record import UNSEEN_GLOBAL
from fedicra.seeding import Stream, stream


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        from fedicra.errors import UserError

        found = f"{torch.cuda.device_count()} CUDA device(s)" if torch.cuda.is_available() else \
            f"no CUDA device (torch {torch.__version__})"
        raise UserError(f"option device: {name} requested but this machine has {found}; use device=auto or cpu")
    return device


def resolve_precision(precision: str, device: torch.device) -> str:
    """The forward precision a run uses: `auto` is bf16 on CUDA and fp32 elsewhere."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def to_fp32(value):
    """Floating tensors of a model output (dicts, lists, tuples of them) as float32."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, dict):
        return {k: to_fp32(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_fp32(v) for v in value)
    return value


@dataclass
class SiteData:
    """The splits of one site as seen by a client (train with the assigned label kind)."""

    site: int
    name: str
    label: str
    train: Any
    val: Any
    test: Any


@dataclass
class Client:
    key: int                      # client index (site index, or 0 for the pooled client)
    config: dict[str, Any]
    manifest: Any
    method: Any
    data: list[SiteData]          # sites whose training data this client holds (one, or all when pooled)
    model: torch.nn.Module
    device: torch.device
    step: int = 0                 # local iterations done so far (drives the poly learning rate)
    gradient_steps: int = 0       # optimizer steps taken on this client's models (the budget, recorded)
    state: dict[str, Any] = field(default_factory=dict)   # method-private state
    best: dict[int, dict[str, Any]] = field(default_factory=dict)  # site -> best-on-val snapshot
    best_test: dict[int, dict[str, Any]] = field(default_factory=dict)
    rng_state: torch.Tensor | None = None
    precision: str = "fp32"       # resolved forward precision: fp32 or bf16 (autocast + channels_last)
    samples_dir: Any = None       # where this site writes its own qualitative sample (None: nowhere)
    unseen: SiteData | None = None  # pooled client of a leave-one-site-out run: the held-out site (test only)

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(cls, key: int, config: dict, manifest, method, data: list[SiteData]) -> "Client":
        from fedicra.models import build_model

        device = resolve_device(config["device"])
        torch.manual_seed(config["seed"])  # identical initial weights on every client, as upstream
        model = build_model(method.model, manifest.in_channels, manifest.num_classes,
                            num_sites=len(manifest.sites), site=key, faithful=config["faithful"]).to(device)
        precision = resolve_precision(config.get("precision", "auto"), device)
        if precision == "bf16":
            model = model.to(memory_format=torch.channels_last)
        client = cls(key=key, config=config, manifest=manifest, method=method, data=data,
                     model=model, device=device, precision=precision)
        method.bind(model)
        generator = torch.Generator().manual_seed(int(stream(config["seed"], Stream.TORCH, key).integers(2**62)))
        client.rng_state = generator.get_state()
        method.init_client(client)
        return client

    # ------------------------------------------------------------------ data
    @property
    def train_cases(self) -> int:
        return sum(len(d.train) for d in self.data)

    @property
    def batches_per_epoch(self) -> int:
        return max(1, math.ceil(self.train_cases / self.config["batch_size"]))

    def _train_arrays(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        for d in self.data:
            if index < len(d.train):
                return d.train.images[index], d.train.labels[index]
            index -= len(d.train)
        raise IndexError(index)

    def batch(self, step: int, phase: Stream = Stream.TRAINING) -> dict[str, torch.Tensor]:
        """The batch of step `step` of `phase`: a seeded permutation per epoch, no drop_last, as upstream.

        Batches and augmentations depend only on (seed, phase, client, step), never on history, so a run
        resumed from a checkpoint sees exactly the batches it would have seen; a method's extra passes
        (ALA, pre-training) draw from their own stream and leave the training batches unchanged.
        """
        from fedicra.data.augment import augment

        n, size = self.train_cases, self.config["batch_size"]
        epoch, position = divmod(step, self.batches_per_epoch)
        order = stream(self.config["seed"], phase, self.key, epoch).permutation(n)
        images, labels = [], []
        for index in order[position * size:(position + 1) * size]:
            image, label = self._train_arrays(int(index))
            if self.config["augment"]:
                image, label = augment(image, label, stream(self.config["seed"], phase, self.key, epoch, int(index)),
                                       image_fill=self.manifest.preset.image_fill,
                                       label_fill=self.manifest.unlabeled)
            images.append(torch.from_numpy(np.array(image, dtype=np.float32)))
            labels.append(torch.from_numpy(np.array(label, dtype=np.int64)))
        return {"image": torch.stack(images).to(self.device), "label": torch.stack(labels).to(self.device)}

    # ------------------------------------------------------------------ training
    def lr(self) -> float:
        total = self.config["rounds"] * self.config["local_steps"]
        return self.config["lr"] * (1.0 - min(self.step, total - 1) / total) ** self.config["lr_power"]

    @property
    def crf_window(self) -> dict[str, float]:
        """The gated CRF's radius and sigma_xy for this dataset's image side (fedicra.losses.gated_crf)."""
        from fedicra.losses.gated_crf import scaled_window

        return scaled_window(self.manifest.img_size, self.manifest.preset.img_size, self.config["faithful"])

    def objective(self, batch, output) -> tuple[torch.Tensor, dict[str, float]]:
        """The weak-supervision objective of the run (`method.objective_terms`): partial CE, + gated
        CRF, + multiscale tree energy (on the auxiliary heads), weighted by `method.objective_settings`."""
        from fedicra.losses import gated_crf_loss, partial_cross_entropy, tree_energy_loss

        terms, settings = self.method.objective_terms, self.method.objective_settings
        logits, ignore = output["logits"], self.manifest.num_classes
        loss = partial_cross_entropy(logits, batch["label"], ignore_index=ignore)
        parts = {"pce": float(loss.detach())}
        if "mtel" in terms:
            tree = tree_energy_loss(logits, batch["image"], output["aux"], batch["label"], ignore,
                                    weight=settings["mtel"], mode=settings["tree_mode"])
            loss, parts["tree_energy"] = loss + tree, float(tree.detach())
        if "gcrf" in terms:
            crf = gated_crf_loss(torch.softmax(logits, dim=1), batch["image"], **self.crf_window)
            loss, parts["gated_crf"] = loss + settings["gcrf"] * crf, float(crf.detach())
        return loss, parts

    def train_steps(self, model: torch.nn.Module, steps: int, loss_fn=None, optimizer=None) -> dict[str, float]:
        """Run `steps` local iterations on `model` with the method's optimizer, schedule and loss.

        Frozen parameters (outside the method's `trainable` predicate) get `requires_grad=False`;
        in `faithful` mode gradients are zeroed rather than dropped, so AdamW still applies weight
        decay and momentum to frozen tensors as upstream (PyTorch 1.10) did.
        """
        method = self.method
        loss_fn = loss_fn or (lambda batch, output: method.loss(self, batch, output))
        model.train()
        named = list(model.named_parameters())
        if optimizer is None:
            optimizer = method.make_optimizer(self, model)
        totals: dict[str, float] = {}
        with self.random_state():
            for i in range(steps):
                predicate = method.trainable(self, i)
                for name, param in named:
                    param.requires_grad_(predicate is None or predicate(name))
                for group in optimizer.param_groups:
                    group["lr"] = self.lr()
                batch = self.batch(self.step)
                output = self.forward(model, batch["image"])
                loss, parts = loss_fn(batch, output)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"site {self.key}: loss is {float(loss)} at local step {self.step}")
                optimizer.zero_grad(set_to_none=not self.config["faithful"])
                loss.backward()
                optimizer.step()
                self.step += 1
                self.gradient_steps += 1
                parts = {"loss": float(loss.detach()), **parts}
                for k, v in parts.items():
                    totals[k] = totals.get(k, 0.0) + v / steps
        for _, param in named:
            param.requires_grad_(True)
        return totals

    def forward(self, model: torch.nn.Module, image: torch.Tensor):
        """The training forward pass in the run's precision; the output is always float32.

        bf16: autocast with channels_last input (the model is channels_last too); the losses, the
        tree filter and the metrics then see float32 tensors, as in an fp32 run.
        """
        if self.precision != "bf16":
            return model(image)
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16):
            output = model(image.contiguous(memory_format=torch.channels_last))
        return to_fp32(output)

    @contextlib.contextmanager
    def random_state(self):
        """Use this client's own torch random stream (dropout) so clients do not disturb each other."""
        saved = torch.get_rng_state()
        torch.set_rng_state(self.rng_state)
        try:
            yield
        finally:
            self.rng_state = torch.get_rng_state()
            torch.set_rng_state(saved)

    # ------------------------------------------------------------------ evaluation
    def score(self, model: torch.nn.Module, split: str, site: SiteData):
        from fedicra.eval.evaluate import evaluate

        dataset = getattr(site, split)
        frame = evaluate(model, dataset, self.manifest.structures, device=self.device,
                         policy=self.config["metric_policy"], site=site.site,
                         batch_size=self.config["batch_size"])
        frame.insert(0, "site", site.site)
        return frame

    def validate(self, round_: int) -> list[dict[str, Any]]:
        """Score the personalized model on each held site's validation split; remember the best."""
        model = self.method.personalized_model(self)
        rows = []
        for site in self.data:
            row: dict[str, Any] = {"round": round_, "site": site.site}
            if len(site.val):
                frame = self.score(model, "val", site)
                row.update(frame.drop(columns=["site", "case"]).mean(numeric_only=True).to_dict())
                if row["mean_dice"] > self.best.get(site.site, {}).get("mean_dice", -math.inf):
                    self.best[site.site] = {"mean_dice": row["mean_dice"], "round": round_,
                                            "model": copy.deepcopy(model.state_dict())}
            if self.config["select_on_test"]:
                test = self.score(model, "test", site).mean(numeric_only=True)
                if test["mean_dice"] > self.best_test.get(site.site, {}).get("mean_dice", -math.inf):
                    self.best_test[site.site] = {"mean_dice": test["mean_dice"], "round": round_,
                                                 "model": copy.deepcopy(model.state_dict())}
            rows.append(row)
        return rows

    def final_scores(self, global_model: torch.nn.Module | None) -> list[dict[str, Any]]:
        """Per-case test scores of the last, best-on-val (and best-on-test) personalized models; a pooled
        client of a leave-one-site-out run also scores its model on the held-out site (`unseen_global`)."""
        import pandas as pd

        model = self.method.personalized_model(self)
        frames = []
        for site in self.data:
            candidates = [("personalized", "last", model.state_dict())]
            for selection, table in (("best_val", self.best), ("best_test", self.best_test)):
                if site.site in table:
                    candidates.append(("personalized", selection, table[site.site]["model"]))
            if global_model is not None:
                candidates.append(("global", "last", None))
            rounds_of = {"last": self.config["rounds"],
                         "best_val": self.best.get(site.site, {}).get("round"),
                         "best_test": self.best_test.get(site.site, {}).get("round")}
            last_state = copy.deepcopy(model.state_dict())
            for kind, selection, state in candidates:
                scored = global_model if kind == "global" else model
                if kind == "personalized":
                    scored.load_state_dict(state)
                frames.append(self.case_frame(scored, site, kind, selection, rounds_of[selection]))
            model.load_state_dict(last_state)
        if self.unseen is not None:
            frames.append(self.case_frame(model, self.unseen, UNSEEN_GLOBAL, "last", self.config["rounds"]))
        return pd.concat(frames, ignore_index=True).to_dict(orient="records")

    def case_frame(self, model: torch.nn.Module, site: SiteData, kind: str, selection: str, round_):
        """The cases.csv rows of `model` scored on `site`'s test split (fedicra.record.CASE_COLUMNS)."""
        frame = self.score(model, "test", site)
        frame.insert(1, "site_name", site.name)
        frame.insert(2, "label", site.label)
        frame.insert(4, "model", kind)
        frame.insert(5, "selection", selection)
        frame.insert(6, "round", round_)
        return frame

    def sample_prediction(self) -> dict[int, dict[str, np.ndarray]]:
        """Per held site: the first test case (image, full mask, prediction) and the first training case
        (image, sparse label). Written locally by the site (fedicra.record), never sent."""
        from fedicra.eval.evaluate import predict

        model = self.method.personalized_model(self)
        out = {}
        for site in self.data:
            if not len(site.test) or not len(site.train):
                continue
            item, train_item = site.test[0], site.train[0]
            out[site.site] = {
                "image": np.asarray(item["image"], dtype=np.float32),
                "mask": np.asarray(item["label"], dtype=np.uint8),
                "train_image": np.asarray(train_item["image"], dtype=np.float32),
                "train_label": np.asarray(train_item["label"], dtype=np.uint8),
                "prediction": predict(model, torch.as_tensor(item["image"]), site=site.site).astype(np.uint8)}
        return out

    # ------------------------------------------------------------------ persistence
    def snapshot(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "step": self.step, "gradient_steps": self.gradient_steps,
                "state": self.state,
                "best": self.best, "best_test": self.best_test, "rng_state": self.rng_state}

    def restore(self, snap: dict[str, Any]) -> None:
        self.model.load_state_dict(snap["model"])
        self.step, self.state, self.gradient_steps = snap["step"], snap["state"], snap["gradient_steps"]
        self.best, self.best_test, self.rng_state = snap["best"], snap["best_test"], snap["rng_state"]
