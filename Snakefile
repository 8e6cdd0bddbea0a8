# Snakemake entry point. It does not restate the pipeline: the rules are generated from the
# resolved DVC pipeline (dvc.yaml), so both tools run the same commands on the same files.
#   snakemake --cores 2                  # the whole DAG, jobs in parallel
#   snakemake --cores 2 results/metrics/diffpose.json   # up to one output
from diffpose.config import validate_params

configfile: "params.yaml"

validate_params(config, source="params.yaml")

include: "workflow/rules/dvc_stages.smk"


rule all:
    default_target: True
    input:
        [out for spec in DVC_RULES for out in spec.outputs],
