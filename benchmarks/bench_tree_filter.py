"""Time the FedICRA weak-supervision losses (forward + backward).

    .venv/bin/python benchmarks/bench_tree_filter.py [--threads 1] [--repeats 5]

CPU: 128 px, batch 8 (one-channel image, 2 classes, aux heads at 1/4, 1/2 and 1/1 resolution).
CUDA (when available): 256 px, batch 12. Prints one row per (device, part): median wall seconds
and median CPU seconds of this process (with one thread, the CPU time is what the wall time would
be on an idle machine).
"""
from __future__ import annotations

import argparse
import statistics
import time


def _timed(fn, repeats, sync):
    """Median wall seconds and median process CPU seconds (robust to a busy machine)."""
    fn()  # warm-up: Numba cache load / Triton compile
    wall, cpu = [], []
    for _ in range(repeats):
        sync()
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        sync()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def _case(torch, device, size, batch, classes=2):
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(batch, 1, size, size, generator=gen).to(device)
    logits = torch.randn(batch, classes, size, size, generator=gen).to(device).requires_grad_()
    aux = [
        torch.randn(batch, classes, size // f, size // f, generator=gen).to(device).requires_grad_()
        for f in (4, 2, 1)
    ]
    labels = torch.randint(0, classes + 1, (batch, size, size), generator=gen)
    labels[torch.rand(batch, size, size, generator=gen) < 0.9] = classes  # ~90% unlabelled
    return image, logits, aux, labels.to(device)


def bench(device: str, size: int, batch: int, repeats: int):
    import torch

    from fedicra.losses import build_spanning_forest, gated_crf_loss, tree_energy_loss

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    image, logits, aux, labels = _case(torch, device, size, batch)
    guide = image.repeat(1, 3, 1, 1)

    def mtel(mode):
        def run():
            loss = tree_energy_loss(logits, image, aux, labels, ignore_index=2, mode=mode)
            loss.backward()

        return run

    def crf():
        gated_crf_loss(torch.softmax(logits, 1), image).backward()

    def both():
        probs = torch.softmax(logits, 1)
        loss = tree_energy_loss(logits, image, aux, labels, ignore_index=2) + 0.1 * gated_crf_loss(probs, image)
        loss.backward()

    rows = [
        ("tree build (1 tree x batch)", lambda: build_spanning_forest(guide)),
        ("tree build, torch Boruvka", lambda: build_spanning_forest(guide, builder="boruvka")),
        ("MTEL recursive, 4 trees", mtel("recursive")),
        ("MTEL add, 4 trees", mtel("add")),
        ("gated CRF r=5", crf),
        ("MTEL recursive + gated CRF", both),
    ]
    return [(device, size, batch, name, *_timed(fn, repeats, sync)) for name, fn in rows]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (torch and Numba)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cpu-size", type=int, default=128)
    parser.add_argument("--cpu-batch", type=int, default=8)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)  # the Numba kernels follow torch's thread count
    results = bench("cpu", args.cpu_size, args.cpu_batch, args.repeats)
    if torch.cuda.is_available():
        results += bench("cuda", 256, 12, args.repeats)
    print(f"threads={args.threads}  (seconds per forward+backward, median of {args.repeats})")
    print(f"{'device':<6} {'size':>4} {'batch':>5}  {'part':<28} {'wall s':>8} {'cpu s':>8}")
    for device, size, batch, name, wall, cpu in results:
        print(f"{device:<6} {size:>4} {batch:>5}  {name:<28} {wall:>8.4f} {cpu:>8.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
