# One rule per resolved DVC stage (see diffpose/workflow.py for the mapping rules).
# The command travels through `params`: a `shell:` string built from the loop variable would be
# bound late and every rule would run the last stage's command.
from diffpose.workflow import rules_from_dvc

DVC_RULES = rules_from_dvc(workflow.basedir)


for spec in DVC_RULES:

    rule:
        name:
            spec.name
        input:
            spec.inputs,
        output:
            [directory(o) if o in spec.directories else o for o in spec.outputs],
        params:
            cmd=spec.cmd,
            dvc_params=spec.params,
        threads: spec.cores or workflow.cores
        resources:
            **dict(spec.resources),
        log:
            f"logs/snakemake/{spec.name}.log",
        shell:
            "({params.cmd}) 2> >(tee {log} >&2)"
