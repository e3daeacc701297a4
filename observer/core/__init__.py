"""The pure core, no I/O: sizes, limits, the accounting model and its rules, names."""
