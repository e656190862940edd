"""The benchmark: ``python -m harness.bench`` holds the harness against a raw PyTorch loop and its own
targets (``__main__``: the command; ``common``: timing helpers and the raw loop; ``loop``: the loop
rows; ``sweeps``: whole sweeps and processes). Nothing at run time imports it (pyproject.toml: contracts)."""
