"""One FedICRA training step against one partial-CE-only step: same model (unet_lc_multihead), same
batch, same optimizer, measured side by side in one process (interleaved repeats, median).

    python benchmarks/bench_fedicra_step.py                 # CPU, 128 px, batch 8
    python benchmarks/bench_fedicra_step.py --device cuda --size 256 --batch-size 12

FedICRA step = pCE + recursive multiscale tree energy (4 trees) + 0.1 gated CRF + site contrast.
Goal on CPU at 128 px batch 8: ratio at most 3.
"""
from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    import torch

    from fedicra.losses import gated_crf_loss, partial_cross_entropy, tree_energy_loss
    from fedicra.fl.personalization import site_contrast
    from fedicra.models import build_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model("unet_lc_multihead", 1, 2, num_sites=5, site=1).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    image = torch.rand(args.batch_size, 1, args.size, args.size, device=device)
    label = torch.full((args.batch_size, args.size, args.size), 2, device=device, dtype=torch.long)
    label[:, 40:48, 40:48] = 1
    label[:, :4] = 0

    def pce_step():
        output = model(image)
        return partial_cross_entropy(output["logits"], label, ignore_index=2)

    def fedicra_step():
        output = model(image)
        logits = output["logits"]
        loss = partial_cross_entropy(logits, label, ignore_index=2)
        loss = loss + tree_energy_loss(logits, image, output["aux"], label, 2, weight=0.1, mode="recursive")
        loss = loss + 0.1 * gated_crf_loss(torch.softmax(logits, 1), image)
        return loss + site_contrast(model, image, output, faithful=False)

    def timed(step) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        began = time.perf_counter()
        loss = step()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - began

    timed(pce_step), timed(fedicra_step)  # warm-up (numba compile, allocator)
    pce, ficra = [], []
    for _ in range(args.repeats):
        pce.append(timed(pce_step))
        ficra.append(timed(fedicra_step))
    p, f = statistics.median(pce), statistics.median(ficra)
    print(f"{device} {args.size}px batch {args.batch_size}, {args.threads} threads, {args.repeats} repeats (median)")
    print(f"pCE-only step : {p:.3f} s")
    print(f"FedICRA step  : {f:.3f} s")
    print(f"ratio         : {f / p:.2f}")


if __name__ == "__main__":
    main()
