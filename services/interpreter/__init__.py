"""The code interpreter: E2B's stateful `run_code` service (port 49999) over Jupyter kernels."""
