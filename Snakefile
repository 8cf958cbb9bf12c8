# fedicra benchmark workflow: datasets x annotation assignments x methods x seeds -> report.
#
#   snakemake --cores all                                  # config/default.yaml, CPU
#   snakemake --cores all --configfile config/smoke.yaml   # CI-sized
#   snakemake --profile workflow/profiles/slurm --configfile config/paper.yaml
#   snakemake --report reports/default/report.html         # HTML report after a run
#
# See docs/workflow.md for the config keys, GPUs and clusters.
import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

min_version("9.0")


# The default config only when none is named: Snakemake would otherwise merge the two (default datasets
# would leak into --configfile config/paper.yaml).
if not workflow.overwrite_configfiles:

    configfile: "config/default.yaml"


sys.path.insert(0, workflow.basedir)  # this checkout's fedicra
from fedicra.fl.config import numbers_as_yaml12  # noqa: E402
from fedicra.workflow_config import exit_with_schema_error  # noqa: E402

# Snakemake reads YAML 1.1, where `lr: 1e-3` is a string; read numbers as YAML 1.2 (and `fedicra run`) do.
config.update(numbers_as_yaml12(config))
try:
    validate(config, "workflow/schemas/config.schema.yaml")
except WorkflowError as err:
    exit_with_schema_error(err)


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
