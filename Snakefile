# Snakemake entry point. It does not restate the pipeline: the rules are generated from the
# resolved DVC pipeline (dvc.yaml), so both tools run the same commands on the same files.
#   snakemake --cores 2                  # the whole DAG, jobs in parallel
#   snakemake --cores 2 results/infer/diffpose/seed0/metrics.json   # up to one output
#   snakemake --touch --cores 1          # after `dvc checkout`: mark the restored outputs up to date
from diffpose.config import validate_params

configfile: "params.yaml"

validate_params(config, source="params.yaml")

# Outputs DVC keeps across runs (persist: true) stand as marker files in the Snakemake DAG; after a
# `dvc repro` or `dvc checkout` the markers of up-to-date stages are written here, so Snakemake
# (and `snakemake --touch`) does not redo what DVC already did.
if not (workflow.remote_exec or workflow.subprocess_exec):
    from diffpose.workflow import mark_persisted

    mark_persisted(workflow.basedir)

include: "workflow/rules/dvc_stages.smk"


rule all:
    default_target: True
    input:
        [str(out) for spec in DVC_RULES for out in spec.outputs],
