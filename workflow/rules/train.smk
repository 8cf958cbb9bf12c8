# One training run per job. The GPU slot allocator picks the device (CPU when no GPU is configured);
# `fedicra run` resumes from its own checkpoints, so --rerun-incomplete / --keep-going just work.
# The YAML a run was started with is kept under started/: when the job reruns with a different YAML
# (the config changed), the stale run folder is removed and the run starts afresh; with the same
# YAML (an interrupted run) it resumes.


rule run_config:
    input:
        check=f"{RESULTS}/checks/{{dataset}}.txt",
    output:
        f"{RESULTS}/configs/{{dataset}}/{{assignment}}/{{method}}/seed{{seed}}.yaml",
    params:
        run=run_config,
    log:
        f"{RESULTS}/logs/configs/{{dataset}}/{{assignment}}/{{method}}/seed{{seed}}.log",
    conda:
        "../envs/fedicra.yaml"
    script:
        "../scripts/write_run_config.py"


rule train:
    input:
        config=f"{RESULTS}/configs/{{dataset}}/{{assignment}}/{{method}}/seed{{seed}}.yaml",
    output:
        summary=f"{RESULTS}/runs/{{dataset}}/{{assignment}}/{{method}}/seed{{seed}}/summary.json",
    params:
        run_dir=lambda wc, output: os.path.dirname(output.summary),
        started=lambda wc, input: input.config.replace(f"{RESULTS}/configs/", f"{RESULTS}/started/", 1),
        slots=SLOT_ARGS,
        pyenv=PYENV,
        python=PYTHON,
    log:
        f"{RESULTS}/logs/train/{{dataset}}/{{assignment}}/{{method}}/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{dataset}}/{{assignment}}/{{method}}/seed{{seed}}.tsv"
    threads: config["threads_per_run"]
    resources:
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime"],
        **GPU_RESOURCES,
    conda:
        "../envs/fedicra.yaml"
    shell:
        "if [ -e {params.run_dir:q} ] && ! cmp -s {input.config:q} {params.started:q}; then rm -rf {params.run_dir:q}; fi; "
        "mkdir -p \"$(dirname {params.started:q})\" && cp {input.config:q} {params.started:q}; "
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} "
        "{params.pyenv} {params.python} -m fedicra.gpu_slots {params.slots:q} -- "
        "{params.python} -m fedicra run --config {input.config:q} --out {params.run_dir:q} > {log:q} 2>&1"


# Leave-one-site-out runs (config leave_one_site_out): the same two rules, with the held-out site in
# the path; `run_config` adds `holdout_site` from the wildcard.
use rule run_config as run_config_holdout with:
    output:
        f"{RESULTS}/configs/{{dataset}}/{{assignment}}/{{method}}/holdout{{holdout}}/seed{{seed}}.yaml",
    log:
        f"{RESULTS}/logs/configs/{{dataset}}/{{assignment}}/{{method}}/holdout{{holdout}}/seed{{seed}}.log",


use rule train as train_holdout with:
    input:
        config=f"{RESULTS}/configs/{{dataset}}/{{assignment}}/{{method}}/holdout{{holdout}}/seed{{seed}}.yaml",
    output:
        summary=f"{RESULTS}/runs/{{dataset}}/{{assignment}}/{{method}}/holdout{{holdout}}/seed{{seed}}/summary.json",
    log:
        f"{RESULTS}/logs/train/{{dataset}}/{{assignment}}/{{method}}/holdout{{holdout}}/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{dataset}}/{{assignment}}/{{method}}/holdout{{holdout}}/seed{{seed}}.tsv"
