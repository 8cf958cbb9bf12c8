"""One FedICRA training step against one partial-CE-only step: same model (unet_lc_multihead), same
batch, same optimizer, measured side by side in one process (interleaved repeats; min and median).

    python benchmarks/bench_fedicra_step.py                 # CPU, 128 px, batch 8
    python benchmarks/bench_fedicra_step.py --device cuda --size 256 --batch-size 12 --precision bf16

FedICRA step = pCE + recursive multiscale tree energy (4 trees) + 0.1 gated CRF + site contrast.
`--precision bf16` runs the forward as the engine does (autocast + channels_last; losses in fp32).
Goal at 256 px batch 12 on a GPU: ratio at most 2.5; on CPU at 128 px batch 8: at most 3.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time


def measure(device: str = "cpu", size: int = 128, batch_size: int = 8, precision: str = "fp32",
            repeats: int = 5) -> dict:
    """Seconds per pCE step and per FedICRA step (min, median), the ratio and the peak GPU memory."""
    import torch

    from fedicra.fl.client import to_fp32
    from fedicra.fl.personalization import site_contrast
    from fedicra.losses import gated_crf_loss, partial_cross_entropy, tree_energy_loss
    from fedicra.models import build_model

    device = torch.device(device)
    torch.manual_seed(0)
    model = build_model("unet_lc_multihead", 1, 2, num_sites=5, site=1).to(device)
    bf16 = precision == "bf16"
    if bf16:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    image = torch.rand(batch_size, 1, size, size, device=device)
    label = torch.full((batch_size, size, size), 2, device=device, dtype=torch.long)
    label[:, size // 3: size // 3 + 8, size // 3: size // 3 + 8] = 1
    label[:, :4] = 0

    def forward():
        if not bf16:
            return model(image)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            return to_fp32(model(image.contiguous(memory_format=torch.channels_last)))

    def pce_step():
        return partial_cross_entropy(forward()["logits"], label, ignore_index=2)

    def fedicra_step():
        output = forward()
        logits = output["logits"]
        loss = partial_cross_entropy(logits, label, ignore_index=2)
        loss = loss + tree_energy_loss(logits, image, output["aux"], label, 2, weight=0.1, mode="recursive")
        loss = loss + 0.1 * gated_crf_loss(torch.softmax(logits, 1), image)
        return loss + site_contrast(model, image, output, faithful=False)

    cuda = device.type == "cuda"

    def timed(step) -> float:
        if cuda:
            torch.cuda.synchronize()
        began = time.perf_counter()
        loss = step()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - began

    timed(pce_step), timed(fedicra_step)  # warm-up (Numba cache, Triton compile, allocator)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    pce, ficra = [], []
    for repeat in range(repeats):
        for name in (("pce", "fedicra") if repeat % 2 == 0 else ("fedicra", "pce")):
            (pce if name == "pce" else ficra).append(timed(pce_step if name == "pce" else fedicra_step))
    result = {"device": str(device), "size": size, "batch_size": batch_size, "precision": precision,
              "repeats": repeats, "pce_s_min": min(pce), "pce_s_median": statistics.median(pce),
              "fedicra_s_min": min(ficra), "fedicra_s_median": statistics.median(ficra)}
    result["ratio_min"] = result["fedicra_s_min"] / result["pce_s_min"]
    result["ratio_median"] = result["fedicra_s_median"] / result["pce_s_median"]
    result["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None
    return result


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    r = measure(args.device, args.size, args.batch_size, args.precision, args.repeats)
    print(f"{r['device']} {args.size}px batch {args.batch_size}, {args.precision}, {args.threads} threads, "
          f"{args.repeats} interleaved repeats")
    print(f"{'':14}{'min':>9}{'median':>9}")
    print(f"{'pCE-only step':14}{r['pce_s_min']:9.3f}{r['pce_s_median']:9.3f}")
    print(f"{'FedICRA step':14}{r['fedicra_s_min']:9.3f}{r['fedicra_s_median']:9.3f}")
    print(f"{'ratio':14}{r['ratio_min']:9.2f}{r['ratio_median']:9.2f}")
    if r["peak_gpu_mb"] is not None:
        print(f"peak GPU memory: {r['peak_gpu_mb']:.0f} MiB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=2)


if __name__ == "__main__":
    main()
