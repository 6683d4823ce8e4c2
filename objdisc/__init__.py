from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("objdisc")
except PackageNotFoundError:  # run from a checkout that was never installed (a benchmark on a bare GPU machine)
    __version__ = "0+unknown"
