# Aggregation: every run of the grid -> tidy tables -> results tables (.md, .tex).

# A list: rules pass it as {params.opts:q}, one quoted word per item (no config value is shell text).
REPORT_OPTS = (
    ["--name", NAME, "--model", config["report"]["model"], "--selection", config["report"]["selection"],
     "--alpha", str(config["report"]["alpha"]), "--methods", ",".join(METHODS)]
    + (["--primary-assignment", config["report"]["primary_assignment"]]
       if config["report"]["primary_assignment"] else [])
)
TABLE_STEMS = [f"{d}__{a}" for d in DATASETS for a in dataset_assignments(d)]
# The report's summary tables, from the module that writes them (ranking has rule outputs of its own).
from fedicra.report.build import SUMMARY_TABLES as _REPORT_SUMMARY_TABLES  # noqa: E402

SUMMARY_TABLES = tuple(name for name in _REPORT_SUMMARY_TABLES if name != "ranking")


rule collect:
    input:
        summaries=[f"{run_dir(*run)}/summary.json" for run in RUNS]
        + [f"{holdout_run_dir(*run)}/summary.json" for run in HOLDOUT_RUNS],
    output:
        cases=f"{REPORT}/cases.csv",
        runs=f"{REPORT}/runs.csv",
        rounds=f"{REPORT}/rounds.csv",
    log:
        f"{REPORT}/logs/collect.log",
    conda:
        "../envs/fedicra.yaml"
    script:
        "../scripts/collect_runs.py"


rule tables:
    input:
        rules.collect.output,
    output:
        md=[report(f"{REPORT}/tables/{stem}.md", caption="../report/table.rst", category="Tables",
                   labels={"table": stem}) for stem in TABLE_STEMS],
        tex=[f"{REPORT}/tables/{stem}.tex" for stem in TABLE_STEMS],
        ranking=report(f"{REPORT}/tables/ranking.md", caption="../report/ranking.rst", category="Tables",
                       labels={"table": "ranking"}),
        ranking_tex=f"{REPORT}/tables/ranking.tex",
        summary_md=[report(f"{REPORT}/tables/{name}.md", caption="../report/table.rst", category="Tables",
                           labels={"table": name}) for name in SUMMARY_TABLES],
        summary_tex=[f"{REPORT}/tables/{name}.tex" for name in SUMMARY_TABLES],
        numbers=f"{REPORT}/tables/numbers.csv",
    params:
        report_cli=REPORT_CLI,
        results=lambda wildcards, input: os.path.dirname(input[0]),
        opts=REPORT_OPTS,
    log:
        f"{REPORT}/logs/tables.log",
    conda:
        "../envs/fedicra.yaml"
    shell:
        "{params.report_cli} tables --results {params.results:q} --out {params.results:q}/tables {params.opts:q} "
        "> {log:q} 2>&1"
