# fedicra benchmark workflow: datasets x annotation assignments x methods x seeds -> report.
#
#   snakemake --cores all                                  # config/default.yaml, CPU
#   snakemake --cores all --configfile config/smoke.yaml   # CI-sized
#   snakemake --profile workflow/profiles/slurm --configfile config/paper.yaml
#   snakemake --report reports/default/report.html         # HTML report after a run
#
# See docs/workflow.md for the config keys, GPUs and clusters.
from snakemake.utils import min_version, validate

min_version("9.0")


# The default config only when none is named: Snakemake would otherwise merge the two (default datasets
# would leak into --configfile config/paper.yaml).
if not workflow.overwrite_configfiles:

    configfile: "config/default.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/report.smk"


localrules:
    all,
    run_config,


rule all:
    input:
        report_md=f"{REPORT}/report.md",
