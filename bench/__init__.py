"""vidd's benchmarks: each case measures a real vidd on loopback against a reference
measured in the same run (bare HandBrakeCLI, cp, nginx) or against an absolute limit.

Run them with `make bench` or `python -m bench [--case NAME]`; see bench/README.md.
"""
