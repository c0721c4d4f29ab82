"""Corral's import roots are `corral_libs` and `corral_services`, names no user's project
takes, over the repository's libs/ and services/ folders: inside a code-interpreter sandbox,
where Corral's code is installed beside the user's, `import services` is the user's own."""

from setuptools import find_packages, setup

ROOTS = {"corral_libs": "libs", "corral_services": "services"}

setup(
    package_dir=ROOTS,
    # The Java kernel's evaluator, compiled inside the template (java_kernel.py).
    package_data={"corral_services.interpreter": ["java/*.java"]},
    packages=[
        package.replace(folder, name, 1)
        for name, folder in ROOTS.items()
        for package in find_packages(include=[folder, f"{folder}.*"])
    ],
)
