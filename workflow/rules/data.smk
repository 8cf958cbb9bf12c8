# Datasets: generated (synthetic phantoms), imported (PNG folders) or existing site-layout folders
# (upstream h5 data). Every dataset is validated by `fedicra data check` before any run uses it.


rule synth_dataset:
    output:
        manifest=f"{RESULTS}/data/{{dataset}}/dataset.json",
    wildcard_constraints:
        dataset=_alternatives(dataset_names("synth")),
    params:
        fedicra=FEDICRA,
        root=lambda wc: dataset_root(wc.dataset),
        args=lambda wc: (
            ["--task", DATASETS[wc.dataset]["task"], "--size", str(DATASETS[wc.dataset]["size"]),
             "--seed", str(DATASETS[wc.dataset]["seed"])]
            + (["--scale", str(DATASETS[wc.dataset]["scale"])] if "scale" in DATASETS[wc.dataset] else [])
        ),
    log:
        f"{RESULTS}/logs/data/{{dataset}}.log",
    conda:
        "../envs/fedicra.yaml"
    shell:
        "{params.fedicra} data synth --out {params.root:q} --name {wildcards.dataset:q} --force {params.args:q} "
        "> {log:q} 2>&1"


rule import_dataset:
    output:
        manifest=f"{RESULTS}/data/{{dataset}}/dataset.json",
    wildcard_constraints:
        dataset=_alternatives(dataset_names("import")),
    params:
        fedicra=FEDICRA,
        root=lambda wc: dataset_root(wc.dataset),
        args=lambda wc: (
            ["--images", str(import_folders(DATASETS[wc.dataset])[0]),
             "--masks", str(import_folders(DATASETS[wc.dataset])[1]),
             "--task", DATASETS[wc.dataset]["task"], "--size", str(DATASETS[wc.dataset]["size"]),
             "--seed", str(DATASETS[wc.dataset]["seed"])]
            + [arg for p in DATASETS[wc.dataset]["site_patterns"] for arg in ("--site-pattern", p)]
        ),
    log:
        f"{RESULTS}/logs/data/{{dataset}}.log",
    conda:
        "../envs/fedicra.yaml"
    shell:
        "{params.fedicra} data import --out {params.root:q} --name {wildcards.dataset:q} --force {params.args:q} "
        "> {log:q} 2>&1"


rule check_dataset:
    input:
        dataset_input,
    output:
        f"{RESULTS}/checks/{{dataset}}.txt",
    params:
        fedicra=FEDICRA,
        root=lambda wc: dataset_root(wc.dataset),
        # a folder without dataset.json (upstream layout) needs its task to infer the manifest
        task=lambda wc: ["--task", DATASETS[wc.dataset]["task"]] if DATASETS[wc.dataset]["source"] == "folder" else [],
    log:
        f"{RESULTS}/logs/check/{{dataset}}.log",
    conda:
        "../envs/fedicra.yaml"
    shell:
        "{params.fedicra} data check {params.root:q} {params.task:q} > {output:q}.tmp 2> {log:q} "
        "&& mv {output:q}.tmp {output:q}"
