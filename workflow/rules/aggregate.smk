# Aggregation: every run of the grid -> tidy tables -> results tables (.md, .tex).

REPORT_OPTS = " ".join(
    [f"--name {NAME}", f"--model {config['report']['model']}", f"--selection {config['report']['selection']}",
     f"--alpha {config['report']['alpha']}", f"--methods {','.join(METHODS)}"]
    + ([f"--primary-assignment {config['report']['primary_assignment']}"]
       if config["report"]["primary_assignment"] else [])
)
TABLE_STEMS = [f"{d}__{a}" for d in DATASETS for a in dataset_assignments(d)]


rule collect:
    input:
        summaries=[f"{run_dir(*run)}/summary.json" for run in RUNS],
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
                           labels={"table": name}) for name in ("fairness", "label_efficiency", "convergence")],
        summary_tex=[f"{REPORT}/tables/{name}.tex" for name in ("fairness", "label_efficiency", "convergence")],
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
        "{params.report_cli} tables --results {params.results} --out {params.results}/tables {params.opts} > {log} 2>&1"
