"""`fedicra report check|collect|tables|figures|render|all`: validate and aggregate run directories.

    fedicra report check   results/default/runs                        # names the first problem, exit 2

    fedicra report collect results/default/runs --out reports/default
    fedicra report tables  --results reports/default --out reports/default/tables
    fedicra report figures --results reports/default --out reports/default/figures
    fedicra report render  --results reports/default --out reports/default/report.md
    fedicra report all results/default/runs --out reports/default     # the four steps at once
"""
from __future__ import annotations

import argparse
from pathlib import Path


def _protocol_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", default="report", help="report name shown in the title")
    parser.add_argument("--model", default="personalized", help="personalized | global")
    parser.add_argument("--selection", default="best_val", help="last | best_val | best_test")
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level")
    parser.add_argument("--methods", default="", help="comma-separated display order of methods")
    parser.add_argument("--primary-assignment", default=None,
                        help="assignment used for the ranking and qualitative panels (default: upstream or first)")


def _options(args):
    from fedicra.report.build import ReportOptions

    return ReportOptions(name=args.name, model=args.model, selection=args.selection, alpha=args.alpha,
                         methods=[m for m in args.methods.split(",") if m], primary_assignment=args.primary_assignment)


def _run_dirs(paths: list[str]) -> list[Path]:
    """Run directories given directly (a `seed<k>` folder) or found below a folder."""
    from fedicra.errors import UserError
    from fedicra.report.collect import find_runs, is_run_dir

    found = []
    for p in map(Path, paths):
        found += [p] if is_run_dir(p) else find_runs(p)
    if not found:
        raise UserError(f"{', '.join(paths)}: no run directories found")
    return found


def cmd_check(args) -> int:
    """Validate run directories against the run record; the first problem is one line (exit 2)."""
    from fedicra.record import check

    for run_dir in _run_dirs(args.runs):
        summary = check(run_dir)
        print(f"ok {run_dir} ({summary['num_cases']} case rows, {summary['rounds']} rounds)")
    return 0


def cmd_collect(args) -> int:
    from fedicra.report.collect import collect, save

    collected = collect(_run_dirs(args.runs))
    for path in save(collected, Path(args.out)).values():
        print(path)
    return 0


def cmd_tables(args) -> int:
    from fedicra.report.build import write_tables
    from fedicra.report.collect import load

    for path in write_tables(load(Path(args.results)), _options(args), Path(args.out)):
        print(path)
    return 0


def cmd_figures(args) -> int:
    from fedicra.errors import UserError
    from fedicra.report import build
    from fedicra.report.collect import load

    collected, opts, out = load(Path(args.results)), _options(args), Path(args.out)
    if args.kind in ("combo", "qualitative") and not args.dataset:
        raise UserError(f"report figures --kind {args.kind}: needs --dataset")
    if args.kind == "combo" and not args.assignment:
        raise UserError("report figures --kind combo: needs --assignment")
    if args.kind == "combo":
        paths = build.combo_figures(collected, opts, args.dataset, args.assignment, out)
    elif args.kind == "qualitative":
        paths = build.qualitative_figure(collected, opts, args.dataset, out)
    elif args.kind == "summary":
        paths = build.summary_figures(collected, opts, out)
    else:
        paths = build.write_figures(collected, opts, out)
    for path in paths:
        print(path)
    return 0


def cmd_render(args) -> int:
    from fedicra.report.collect import load
    from fedicra.report.render import render_report

    results = Path(args.results)
    out = render_report(load(results), _options(args), Path(args.out),
                        Path(args.tables or results / "tables"), Path(args.figures or results / "figures"),
                        title=args.title)
    print(out)
    return 0


def cmd_all(args) -> int:
    from fedicra.report.build import write_figures, write_tables
    from fedicra.report.collect import collect, save
    from fedicra.report.render import render_report

    out, opts = Path(args.out), _options(args)   # options checked before anything is written
    collected = collect(_run_dirs(args.runs))
    save(collected, out)
    write_tables(collected, opts, out / "tables")
    write_figures(collected, opts, out / "figures")
    print(render_report(collected, opts, out / "report.md", out / "tables", out / "figures"))
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("report", help="aggregate runs into tables, figures and report.md")
    sub = parser.add_subparsers(dest="report_command", metavar="STEP", required=True)

    p = sub.add_parser("check", help="validate run directories against the run record (fedicra.record)")
    p.add_argument("runs", nargs="+", help="run directories or folders searched for them")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("collect", help="read run directories into cases.csv, runs.csv, rounds.csv")
    p.add_argument("runs", nargs="+", help="run directories or folders searched for them")
    p.add_argument("--out", required=True, help="folder for the tidy tables")
    p.set_defaults(func=cmd_collect)

    for name, func, help_ in (("tables", cmd_tables, "results tables (.md, .tex) with significance marks"),
                              ("figures", cmd_figures, "figures (.png, .pdf)")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--results", required=True, help="folder written by `report collect`")
        p.add_argument("--out", required=True, help="output folder")
        _protocol_options(p)
        p.set_defaults(func=func)
        if name == "figures":
            p.add_argument("--kind", choices=("all", "combo", "qualitative", "summary"), default="all",
                           help="combo: per-site Dice and validation curves of --dataset/--assignment; "
                                "qualitative: panel of --dataset; summary: annotation types and CD diagram")
            p.add_argument("--dataset", default=None)
            p.add_argument("--assignment", default=None)

    p = sub.add_parser("render", help="write report.md from collected results, tables and figures")
    p.add_argument("--results", required=True, help="folder written by `report collect`")
    p.add_argument("--out", required=True, help="report.md path")
    p.add_argument("--tables", default=None, help="tables folder (default RESULTS/tables)")
    p.add_argument("--figures", default=None, help="figures folder (default RESULTS/figures)")
    p.add_argument("--title", default=None, help="report title")
    _protocol_options(p)
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("all", help="collect, tables, figures and render in one step")
    p.add_argument("runs", nargs="+", help="run directories or folders searched for them")
    p.add_argument("--out", required=True, help="report folder")
    _protocol_options(p)
    p.set_defaults(func=cmd_all)
