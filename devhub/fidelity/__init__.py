"""devhub's fidelity harness: huggingface_hub's own test suite, pointed at devhub.

`python -m devhub.fidelity` (or `make fidelity`) brings in the `tests/` of the installed
huggingface_hub release at run time (the PyPI sdist, see `devhub.fidelity.source`), points them at
a fresh devhub, runs the selection devhub claims (`devhub.fidelity.selection`) in both transfer
modes (plain LFS and Xet) and prints passed/failed per file. Nothing of the suite is kept in this
repository.
"""
