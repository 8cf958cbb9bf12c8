"""`fedicra data ...`: synth, check, import, figure-labels.

Only argparse happens at import time; each command imports what it needs when it runs.
Problems raise DataError, which the CLI prints as one line (exit 2).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="create, import, check and inspect datasets in the site layout")
    sub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)

    p = sub.add_parser("synth", help="write a synthetic 5-site dataset (FAZ-like OCTA or ODOC-like fundus)")
    p.add_argument("--task", required=True, choices=("faz", "odoc"))
    p.add_argument("--out", required=True, type=Path, help="output dataset folder")
    p.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    p.add_argument("--seed", type=int, default=0)
    count = p.add_mutually_exclusive_group()
    count.add_argument("--scale", type=float, default=1.0,
                       help="multiply the default case counts (train 24/16/20/40/8, test about a third)")
    count.add_argument("--cases", type=int, default=None, help="this many training cases at every site instead")
    p.add_argument("--name", default=None, help="dataset name in dataset.json (default synth-<task>)")
    p.add_argument("--preview", action="store_true", help="also save preview.png (one row per site)")
    p.add_argument("--force", action="store_true", help="replace an existing non-empty output folder")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("check", help="validate a dataset folder and print a per-site summary")
    p.add_argument("root", type=Path)
    p.add_argument("--task", choices=("faz", "odoc"), default=None,
                   help="needed for upstream folders without dataset.json")
    p.add_argument("--no-checksums", action="store_true", help="skip the checksums.sha256 comparison")
    p.add_argument("--csv", type=Path, default=None, help="also write the summary to this CSV file")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("import", help="convert folders of PNG images and masks into the site layout",
                       description="Either two flat folders (--images, --masks; sites by --site-pattern) or a "
                                   "tree with one folder per site (--tree; split kept from train/ and test/).")
    p.add_argument("--images", type=Path, help="flat folder of images (with --masks)")
    p.add_argument("--masks", type=Path, help="masks with the same file names as the images")
    p.add_argument("--tree", type=Path, default=None,
                   help="one folder per site: SITE/{train,test}/IMAGE_DIR or SITE/IMAGE_DIR (see docs/data.md)")
    p.add_argument("--image-dir", default="image", help="with --tree: image folder inside a site or split (default image)")
    p.add_argument("--mask-dir", default="mask", help="with --tree: mask folder inside a site or split (default mask)")
    p.add_argument("--site-glob", default="*", help="with --tree: which site folders to take (default all)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--task", required=True, choices=("faz", "odoc"))
    p.add_argument("--site-pattern", action="append", metavar="GLOB=SITE",
                   help="file-name glob and the site it belongs to (repeat; first match wins; default: one site)")
    p.add_argument("--site-label", action="append", metavar="SITE=KIND",
                   help="default sparse label kind of a site (default: the task's upstream map, in site order)")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--test-fraction", type=float, default=0.25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mask-colors", nargs="+", metavar="R,G,B=CLASS",
                   help="map mask colours (or grey values V=CLASS) to classes; see docs/data.md")
    p.add_argument("--name", default=None, help="dataset name (default: the output folder name)")
    p.add_argument("--force", action="store_true", help="replace an existing non-empty output folder")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("figure-labels", help="PNG of one case: image, full mask and the five sparse labels")
    p.add_argument("--out", required=True, type=Path, help="PNG file to write")
    p.add_argument("--root", type=Path, default=None, help="dataset to take the case from (default: synthesise one)")
    p.add_argument("--task", choices=("faz", "odoc"), default=None,
                   help="task of the synthetic case (default faz), or of an upstream folder")
    p.add_argument("--site", default="0", help="site index or folder name (default 0)")
    p.add_argument("--case", default=None, help="case name in the site's training split (default: the first)")
    p.add_argument("--size", type=int, default=128, help="image side of the synthetic case")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_figure_labels)


MAX_SIZE = 4096  # image side; larger datasets do not fit in memory the way sites are loaded


def check_size(size: int) -> None:
    from fedicra.data.errors import DataError

    if not 16 <= size <= MAX_SIZE:
        raise DataError(f"--size {size}: expected an image side of 16 to {MAX_SIZE} pixels")


def cmd_synth(args: argparse.Namespace) -> int:
    from fedicra.data.synth import synthesize

    check_size(args.size)
    start = time.perf_counter()
    manifest = synthesize(args.task, args.out, size=args.size, seed=args.seed, scale=args.scale, cases=args.cases,
                          force=args.force, name=args.name, preview=args.preview)
    print(f"wrote {args.out}: {manifest.name}, {len(manifest.sites)} sites, {args.size}x{args.size} "
          f"({time.perf_counter() - start:.1f} s)")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    import pandas as pd

    from fedicra.data.layout import check_dataset
    from fedicra.data.manifest import Manifest

    manifest = Manifest.load(args.root, task=args.task)
    summary = check_dataset(args.root, manifest, verify=not args.no_checksums)
    with pd.option_context("display.width", 200, "display.max_columns", 50):
        print(summary.to_string(index=False))
    if args.csv is not None:
        from fedicra.atomic import atomic_write

        atomic_write(args.csv, summary.to_csv(index=False))
    print(f"ok: {args.root} ({manifest.task}, {len(manifest.sites)} sites, "
          f"{int(summary['train'].sum())} train / {int(summary['test'].sum())} test cases)")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from fedicra.data.errors import DataError
    from fedicra.data.importer import import_pngs, import_tree

    check_size(args.size)
    common = dict(size=args.size, test_fraction=args.test_fraction, seed=args.seed, mask_colors=args.mask_colors,
                  site_labels=args.site_label, name=args.name, force=args.force)
    if args.tree is not None:
        if args.images or args.masks or args.site_pattern:
            raise DataError("--tree: give either --tree or --images/--masks/--site-pattern, not both")
        manifest = import_tree(args.tree, args.out, args.task, image_dir=args.image_dir, mask_dir=args.mask_dir,
                               site_glob=args.site_glob, **common)
    else:
        if args.images is None or args.masks is None:
            raise DataError("--images and --masks are both needed (or --tree for one folder per site)")
        manifest = import_pngs(args.images, args.masks, args.out, args.task, site_patterns=args.site_pattern,
                               **common)
    sites = ", ".join(f"{s.name} ({s.label})" for s in manifest.sites)
    print(f"wrote {args.out}: {manifest.name}, sites {sites}")
    return 0


def cmd_figure_labels(args: argparse.Namespace) -> int:
    from fedicra.data.errors import DataError
    from fedicra.data.figures import label_figure
    from fedicra.data.layout import list_cases, read_case
    from fedicra.data.manifest import Manifest

    if args.root is None:
        from fedicra.data.synth import make_case

        task = args.task or "faz"
        manifest = Manifest.for_task(task, f"synth-{task}", [f"Domain{k + 1}" for k in range(5)], img_size=args.size)
        site = manifest.site_index(args.site)
        arrays = make_case(task, args.size, site, "train", 0, args.seed)
        title = f"synthetic {task}, {manifest.sites[site].name}, seed {args.seed}"
    else:
        manifest = Manifest.load(args.root, task=args.task)
        site = manifest.site_index(args.site)
        cases = list_cases(args.root, manifest, site, "train")
        if args.case is not None:
            cases = [c for c in cases if c.stem == args.case]
            if not cases:
                raise DataError(f"--case {args.case!r}: no such training case in {manifest.sites[site].name}")
        if not cases:
            raise DataError(f"{args.root / manifest.sites[site].name / 'train'}: no training cases")
        arrays = read_case(cases[0], manifest)
        title = f"{manifest.name}, {manifest.sites[site].name}, {cases[0].stem}"
    if not args.out.parent.is_dir():
        raise DataError(f"--out {args.out}: folder {args.out.parent} does not exist")
    label_figure(arrays, manifest, args.out, title=title)
    print(f"wrote {args.out}")
    return 0
