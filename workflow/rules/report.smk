# Figures (PNG for the HTML report, PDF for papers) and the Markdown report.


rule figures_dataset:
    input:
        rules.collect.output,
    output:
        per_site=report_figure(f"{REPORT}/figures/{{dataset}}__{{assignment}}_per_site_dice.png", "per_site_dice",
                         "Results", dataset="{dataset}", assignment="{assignment}", figure="per-site Dice"),
        per_site_pdf=f"{REPORT}/figures/{{dataset}}__{{assignment}}_per_site_dice.pdf",
        curve=report_figure(f"{REPORT}/figures/{{dataset}}__{{assignment}}_val_curve.png", "val_curve",
                      "Training", dataset="{dataset}", assignment="{assignment}", figure="validation Dice"),
        curve_pdf=f"{REPORT}/figures/{{dataset}}__{{assignment}}_val_curve.pdf",
        fairness=report_figure(f"{REPORT}/figures/{{dataset}}__{{assignment}}_fairness.png", "fairness",
                         "Fairness", dataset="{dataset}", assignment="{assignment}", figure="sites per method"),
        fairness_pdf=f"{REPORT}/figures/{{dataset}}__{{assignment}}_fairness.pdf",
    params:
        report_cli=REPORT_CLI,
        results=lambda wildcards, input: os.path.dirname(input[0]),
        opts=REPORT_OPTS,
    log:
        f"{REPORT}/logs/figures/{{dataset}}__{{assignment}}.log",
    conda:
        "../envs/fedicra.yaml"
    shell:
        "{params.report_cli} figures --kind combo --dataset {wildcards.dataset:q} --assignment {wildcards.assignment:q} "
        "--results {params.results:q} --out {params.results:q}/figures {params.opts:q} > {log:q} 2>&1"


rule figures_qualitative:
    input:
        rules.collect.output,
    output:
        png=report_figure(f"{REPORT}/figures/{{dataset}}_qualitative.png", "qualitative", "Qualitative",
                    dataset="{dataset}"),
        pdf=f"{REPORT}/figures/{{dataset}}_qualitative.pdf",
    params:
        report_cli=REPORT_CLI,
        results=lambda wildcards, input: os.path.dirname(input[0]),
        opts=REPORT_OPTS,
    log:
        f"{REPORT}/logs/figures/{{dataset}}_qualitative.log",
    conda:
        "../envs/fedicra.yaml"
    shell:
        "{params.report_cli} figures --kind qualitative --dataset {wildcards.dataset:q} "
        "--results {params.results:q} --out {params.results:q}/figures {params.opts:q} > {log:q} 2>&1"


rule figures_summary:
    input:
        rules.collect.output,
    output:
        annotation=report_figure(f"{REPORT}/figures/dice_by_annotation.png", "dice_by_annotation", "Annotation types",
                           figure="Dice by annotation type"),
        annotation_pdf=f"{REPORT}/figures/dice_by_annotation.pdf",
        efficiency=report_figure(f"{REPORT}/figures/label_efficiency.png", "label_efficiency", "Annotation types",
                           figure="label efficiency"),
        efficiency_pdf=f"{REPORT}/figures/label_efficiency.pdf",
        cd=report_figure(f"{REPORT}/figures/cd_diagram.png", "cd_diagram", "Ranking", figure="critical difference"),
        cd_pdf=f"{REPORT}/figures/cd_diagram.pdf",
    params:
        report_cli=REPORT_CLI,
        results=lambda wildcards, input: os.path.dirname(input[0]),
        opts=REPORT_OPTS,
    log:
        f"{REPORT}/logs/figures/summary.log",
    conda:
        "../envs/fedicra.yaml"
    shell:
        "{params.report_cli} figures --kind summary "
        "--results {params.results:q} --out {params.results:q}/figures {params.opts:q} > {log:q} 2>&1"


rule report_markdown:
    input:
        collected=rules.collect.output,
        tables=rules.tables.output,
        combos=[f"{REPORT}/figures/{stem}_{kind}.png" for stem in TABLE_STEMS
                for kind in ("per_site_dice", "val_curve", "fairness")],
        qualitative=expand(f"{REPORT}/figures/{{dataset}}_qualitative.png", dataset=list(DATASETS)),
        summary=rules.figures_summary.output,
    output:
        report(f"{REPORT}/report.md", caption="../report/report_md.rst", category="Report"),
    params:
        report_cli=REPORT_CLI,
        results=lambda wildcards, input: os.path.dirname(input[0]),
        opts=REPORT_OPTS,
        title=config["report"]["title"],
    log:
        f"{REPORT}/logs/report.log",
    conda:
        "../envs/fedicra.yaml"
    shell:
        "{params.report_cli} render --results {params.results:q} --out {output:q} --title {params.title:q} "
        "{params.opts:q} > {log:q} 2>&1"
