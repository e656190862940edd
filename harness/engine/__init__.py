"""The engine: a job's life from a composed config to its ended MLflow run.

- ``run``: the life of one run (check, build, open the run, train, end it), Hydra's task function;
- ``build``: a job's parts from its config (task and data, model, loss, optimizer, schedule);
- ``train``: the plain training loop, one model (it knows nothing of MLflow);
- ``bundles``: the stacked launcher's side: jobs grouped into bundles, their members' records;
- ``stacked``: the stacked loop, many models trained as one.
"""
