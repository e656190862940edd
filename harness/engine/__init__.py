"""The engine: a job's life from a composed config to its ended MLflow run.

- ``job``: what a job is (``Spec``: its config, names, hash, run name, place in a sweep);
- ``run``: the life of one solo run (check, build, open the run, train, end it), Hydra's task function;
- ``record``: a run's MLflow record (``RunRecord``) and ``ending``, the same for a solo run and a bundle's member;
- ``build``: a job's ``Parts`` from its config, the same for both loops (``components``: loss, optimizer, schedule);
- ``train``: the plain training loop, one model (it knows nothing of MLflow);
- ``bundles``: which jobs of a sweep stack together; ``launch``: running the bundles and the solo jobs;
- ``stacked``: the stacked loop, many models trained as one (``stacked_model``: the stacked parameters);
- ``device``: devices, threads and the run's environment.
"""
