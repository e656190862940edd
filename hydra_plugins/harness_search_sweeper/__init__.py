"""hydra/sweeper=search: random, quasi-random or TPE search through Optuna, seeds as a trial's repeats."""
