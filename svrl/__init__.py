"""The `svrl` command. It sits above the packages: the one module allowed to know all of them."""
